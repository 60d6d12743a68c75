"""``kubectl tmc describe cluster|placement``: the Events section.  The rendering (exact rows),
the subjects it reads (the contract's), then against a real tmcd on a real nats-server:
health changes and syncer connection events of a cluster, a placement's decisions (the
engine's, on apply), other objects' events left out, the bounds, HTTP, a real subprocess."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from tests.helpers import kubectl_tmc, new_object
from tests.tmcd_thread import Tmcd, tmcd_in_thread
from tmcd.contracts import subjects
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import CandidateScore, ConnectionEvent, HealthChange, Message, PlacementDecision
from tmcd.kubectl import events
from tmcd.kubectl.client import Client, Endpoint
from tmcd.kubectl.describe import describe_cluster, describe_placement
from tmcd.kubectl.describe_canary import canary_sources
from tmcd.kubectl.events import RecentEvents
from tmcd.kubectl.output import parse_time
from tmcd.kubectl.root import cli
from tmcd.resources.examples import example

KUBECTL_TMC = str(Path(sys.executable).parent / "kubectl-tmc")
T0 = "2025-01-15T10:00:00Z"
NOW = (parse_time(T0) or 0.0) + 600.0
HEADER = ["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]


def _section(lines: list[str], title: str) -> list[str]:
    """The lines of a top-level section (from its title up to the next unindented line)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((j for j in range(start + 1, len(lines)) if not lines[j].startswith(" ")), len(lines))
    return lines[start:end]


def _rows(section: list[str]) -> list[list[str]]:
    """The Events table's rows without the header, as TYPE, REASON, AGE, FROM, MESSAGE."""
    assert section[0] == "Events:" and section[1].split() == HEADER, section
    return [line.split(maxsplit=4) for line in section[2:] if not line.startswith("  (")]


def _no_age(rows: list[list[str]]) -> list[list[str]]:
    return [r[:2] + r[3:] for r in rows]


def _builtins(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(encode(msg))
    return out


# --- rendering ------------------------------------------------------------------------------


def _example(kind: str) -> dict[str, Any]:
    out: dict[str, Any] = copy.deepcopy(msgspec.to_builtins(example(kind)))
    return out


def test_cluster_events_rows() -> None:
    t = parse_time(T0) or 0.0
    found = RecentEvents(
        [
            ("conn", _builtins(ConnectionEvent(cluster="sim-001", timestamp=t + 60, state="connected"))),
            (
                "health",
                _builtins(
                    HealthChange(
                        kind="cluster",
                        name="sim-001",
                        timestamp=t + 300,
                        from_status="Healthy",
                        to_status="Degraded",
                        reason="HeartbeatLate",
                        message="no heartbeat for 45s",
                        failing_checks=["HeartbeatHealthy"],
                    )
                ),
            ),
            (
                "conn",
                _builtins(
                    ConnectionEvent(cluster="sim-001", timestamp=t + 420, state="reconnecting", reason="EOF", attempt=3)
                ),
            ),
            ("conn", _builtins(ConnectionEvent(cluster="sim-001", timestamp=t + 480, state="disconnected"))),
            (
                "health",
                _builtins(
                    HealthChange(
                        kind="cluster", name="sim-001", timestamp=t + 540, from_status="Degraded", to_status="Healthy"
                    )
                ),
            ),
        ],
        older=1,
    )
    lines = describe_cluster(_example("SyncTarget"), found, NOW).splitlines()
    ev = _section(lines, "Events:")
    assert ev == [
        "Events:",
        "  TYPE      REASON          AGE   FROM           MESSAGE",
        "  Normal    Connected       9m    syncer         syncer connected",
        "  Warning   HeartbeatLate   5m    health-agent   Healthy → Degraded: no heartbeat for 45s "
        "(failing: HeartbeatHealthy)",
        "  Warning   Reconnecting    3m    syncer         EOF, attempt 3",
        "  Warning   Disconnected    2m    syncer         syncer disconnected",
        "  Normal    HealthChanged   60s   health-agent   Degraded → Healthy",
        "  (1 older event not shown)",
    ]
    assert lines[-len(ev) :] == ev
    assert _section(lines, "Conditions:")[0] == "Conditions:"  # the events come after the conditions


def test_cluster_and_placement_without_events() -> None:
    cluster = describe_cluster(_example("SyncTarget"), RecentEvents([]), NOW).splitlines()
    assert cluster[-1] == "Events:  <none>" and cluster[-2].split()[:2] == ["Ready", "True"]
    placement = describe_placement(_example("Placement"), RecentEvents([]), NOW).splitlines()
    assert placement[-1] == "Events:  <none>"
    problem = RecentEvents([], problem=events.NEEDS_NATS)
    for text in (
        describe_cluster(_example("SyncTarget"), problem, NOW),
        describe_placement(_example("Placement"), problem, NOW),
    ):
        assert text.splitlines()[-1] == "Events:  <unknown> (events are read over NATS: set --nats-url)"


def test_placement_events_rows() -> None:
    t = parse_time(T0) or 0.0
    cands = [
        CandidateScore(cluster="sim-001", score=0.9, selected=True, reason="Selected"),
        CandidateScore(cluster="sim-002", score=0.8, selected=True, reason="Selected"),
        CandidateScore(cluster="sim-003", score=0.0, reason="LabelMismatch"),
        CandidateScore(cluster="sim-004", score=0.0, reason="Unhealthy"),
        CandidateScore(cluster="sim-005", score=0.0, reason="LabelMismatch"),
    ]
    bound = PlacementDecision(placement="web", timestamp=t + 300, selected=["sim-001", "sim-002"], candidates=cands)
    many = [f"c-{i}" for i in range(5)]
    wide = PlacementDecision(
        placement="web",
        timestamp=t + 360,
        selected=many,
        candidates=[CandidateScore(cluster=c, selected=True) for c in many],
        decided_by="simulation",
    )
    unbound = PlacementDecision(placement="web", timestamp=t + 420, result="unbound", candidates=cands[2:3])
    by_canary = PlacementDecision(placement="web", timestamp=t + 480, selected=["sim-001"], decided_by="canary")
    health = HealthChange(kind="placement", name="web", timestamp=t + 540, to_status="Unhealthy", reason="NoClusters")
    found = RecentEvents(
        [
            ("decision", _builtins(bound)),
            ("decision", _builtins(wide)),
            ("decision", _builtins(unbound)),
            ("decision", _builtins(by_canary)),
            ("health", _builtins(health)),
        ],
        older=7,
        more=True,
    )
    lines = describe_placement(_example("Placement"), found, NOW).splitlines()
    assert _section(lines, "Events:") == [
        "Events:",
        "  TYPE      REASON       AGE   FROM                MESSAGE",
        "  Normal    Bound        5m    placement-engine    selected 2 of 5 candidates: sim-001, sim-002; "
        "not chosen: 2 LabelMismatch, 1 Unhealthy",
        "  Normal    Bound        4m    placement-engine    selected 5 of 5 candidates: c-0, c-1, c-2, +2 more "
        "(simulation)",
        "  Warning   Unbound      3m    placement-engine    selected 0 of 1 candidate; not chosen: 1 LabelMismatch",
        "  Normal    Bound        2m    canary-controller   selected 1 of 0 candidates: sim-001",
        "  Warning   NoClusters   60s   health-agent        Unknown → Unhealthy",
        "  (more than 7 older events not shown)",
    ]


def test_sources_are_the_contract_subjects_and_streams() -> None:
    def check(sources: list[events.Source], channels: list[tuple[subjects.Channel, str]]) -> None:
        assert [(s.stream, s.subject) for s in sources] == [(ch.stream, subject) for ch, subject in channels]
        for s in sources:  # and the stream really stores the subject
            route = subjects.parse_subject(s.subject)
            assert route is not None and route.channel.stream == s.stream
            prefix = ".".join(s.subject.split(".")[:2])
            assert f"{prefix}.>" in subjects.STREAM_SUBJECTS[s.stream]

    check(
        events.cluster_sources("sim-001"),
        [
            (subjects.HEALTH_CHANGE, subjects.health_change("cluster", "sim-001")),
            (subjects.SYNCER_CONN, subjects.syncer_conn("sim-001")),
        ],
    )
    check(
        events.placement_sources("web"),
        [
            (subjects.PLACEMENT_DECISION, subjects.placement_decision("web")),
            (subjects.HEALTH_CHANGE, subjects.health_change("placement", "web")),
        ],
    )
    check(
        canary_sources("shop", "checkout"),
        [
            (subjects.CANARY_EVENT, subjects.canary_event("shop", "checkout")),
            (subjects.ROLLBACK_EVENT, subjects.rollback_event("shop", "checkout")),
        ],
    )
    assert subjects.CTL_SYNC.stream is None  # sync control is request/reply: no stored acknowledgements


# --- against a real tmcd ----------------------------------------------------------------------


def _cluster(name: str) -> dict[str, Any]:
    """A healthy prod cluster in eu-west-1 (the example's labels and status)."""
    obj = new_object("SyncTarget", name=name)
    obj["status"] = msgspec.to_builtins(example("SyncTarget")).get("status")
    return obj


@pytest.fixture(scope="module")
def tmcd(nats_server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tmcd]:
    """A NATS server and a tmcd (metrics and placement agents: cluster statuses stay as stored) in a
    background thread."""
    with tmcd_in_thread(nats_server_bin, tmp_path_factory.mktemp("describe-events")) as t:
        for name in ("ev-1", "ev-2", "quiet"):
            t.create("synctargets", _cluster(name))
        yield t


def describe(t: Tmcd, kind: str, name: str) -> list[str]:
    r = kubectl_tmc(t.nats_url, "describe", kind, name)
    assert r.exit_code == 0, (r.output, r.stderr)
    return r.stdout.splitlines()


def _health(kind: str, name: str, before: str, after: str, **kw: Any) -> HealthChange:
    kw.setdefault("timestamp", time.time())
    return HealthChange(kind=kind, name=name, from_status=before, to_status=after, **kw)


def test_describe_cluster_events(tmcd: Tmcd) -> None:
    now = time.time()
    conn = subjects.syncer_conn
    tmcd.publish(conn("ev-1"), ConnectionEvent(cluster="ev-1", timestamp=now - 300, state="connected"), "TMC_SYNCER")
    tmcd.publish(
        subjects.health_change("cluster", "ev-1"),
        _health("cluster", "ev-1", "Healthy", "Degraded", reason="ErrorRatioHigh", message="5% of syncs failed"),
        "TMC_EVENTS",
    )
    tmcd.publish(
        conn("ev-1"),
        ConnectionEvent(cluster="ev-1", timestamp=time.time(), state="reconnecting", reason="EOF", attempt=2),
        "TMC_SYNCER",
    )
    # other clusters' events, in the same streams, and a sync event of ev-1 (not an event here)
    tmcd.publish(
        subjects.health_change("cluster", "ev-2"), _health("cluster", "ev-2", "Healthy", "Unhealthy"), "TMC_EVENTS"
    )
    tmcd.publish(
        conn("ev-2"), ConnectionEvent(cluster="ev-2", timestamp=time.time(), state="disconnected"), "TMC_SYNCER"
    )
    tmcd.publish(
        subjects.health_change("location", "ev-1"), _health("location", "ev-1", "Healthy", "Degraded"), "TMC_EVENTS"
    )
    tmcd.publish(
        subjects.health_change("placement", "ev-1"),
        _health("placement", "ev-1", "Healthy", "Degraded", reason="NotAboutTheCluster"),
        "TMC_EVENTS",
    )
    lines = describe(tmcd, "cluster", "ev-1")
    assert lines[0] == "Name:               ev-1" and "Capacity:" in lines
    ev = _section(lines, "Events:")
    assert lines[-len(ev) :] == ev
    assert _no_age(_rows(ev)) == [
        ["Normal", "Connected", "syncer", "syncer connected"],
        ["Warning", "ErrorRatioHigh", "health-agent", "Healthy → Degraded: 5% of syncs failed"],
        ["Warning", "Reconnecting", "syncer", "EOF, attempt 2"],
    ]
    assert _rows(ev)[0][2] in ("4m59s", "5m", "5m1s")
    assert "NotAboutTheCluster" not in "\n".join(lines)
    ev2 = _rows(_section(describe(tmcd, "cl", "ev-2"), "Events:"))
    assert _no_age(ev2) == [
        ["Warning", "HealthChanged", "health-agent", "Healthy → Unhealthy"],
        ["Warning", "Disconnected", "syncer", "syncer disconnected"],
    ]
    assert describe(tmcd, "synctarget", "quiet")[-1] == "Events:  <none>"


def test_describe_placement_events_from_the_engine(tmcd: Tmcd) -> None:
    tmcd.create("placements", new_object("Placement", name="web-ev"))
    nowhere = new_object("Placement", name="nowhere")
    nowhere["spec"]["locationSelectors"] = [{"matchLabels": {"region": "mars-1"}}]
    tmcd.create("placements", nowhere)
    tmcd.publish(
        subjects.health_change("placement", "web-ev"),
        _health("placement", "web-ev", "Healthy", "Degraded", reason="ClusterLost", message="1 of 2 unhealthy"),
        "TMC_EVENTS",
    )
    lines = describe(tmcd, "placement", "web-ev")
    rows = _no_age(_rows(_section(lines, "Events:")))
    assert tmcd.get("placements", "web-ev")["status"]["phase"] == "Bound"
    selected = [c["cluster"] for c in tmcd.get("placements", "web-ev")["status"]["selectedClusters"]]
    assert len(selected) == 2
    assert rows[0][:3] == ["Normal", "Bound", "placement-engine"]
    assert rows[0][3].startswith(f"selected 2 of 3 candidates: {', '.join(selected)}")
    assert rows[1:] == [["Warning", "ClusterLost", "health-agent", "Healthy → Degraded: 1 of 2 unhealthy"]]
    rows = _no_age(_rows(_section(describe(tmcd, "pl", "nowhere"), "Events:")))
    assert rows == [
        ["Warning", "Unbound", "placement-engine", "selected 0 of 3 candidates; not chosen: 3 LabelMismatch"]
    ]


def test_describe_placement_events_none_before_creation(tmcd: Tmcd) -> None:
    # an earlier placement of the same name decided 5 s ago (event time; creationTimestamp
    # has whole seconds, so "just before" would be the same second)
    old = PlacementDecision(placement="reborn", timestamp=time.time() - 5, selected=["gone"], decided_by="simulation")
    tmcd.publish(subjects.placement_decision("reborn"), old, "TMC_PLACEMENT")
    tmcd.create("placements", new_object("Placement", name="reborn"))
    rows = _rows(_section(describe(tmcd, "placement", "reborn"), "Events:"))
    assert len(rows) == 1 and rows[0][1] == "Bound" and "gone" not in rows[0][4]


def test_newest_events_are_shown_however_many(tmcd: Tmcd) -> None:
    """50 connection events of one cluster among other clusters' events: the newest shown, the
    others counted; with a small scan budget the newest are found by bisecting."""
    t = time.time()
    for i in range(50):
        tmcd.publish(
            subjects.syncer_conn("busy"),
            ConnectionEvent(cluster="busy", timestamp=t + i, state="reconnecting", attempt=i + 1),
            "TMC_SYNCER",
        )
        if i % 5 == 0:
            tmcd.publish(
                subjects.syncer_conn("noisy"),
                ConnectionEvent(cluster="noisy", timestamp=t + i, state="reconnecting", attempt=99),
                "TMC_SYNCER",
            )
    client = tmcd.client()
    try:
        exact = events.recent_events(client, events.cluster_sources("busy"))
        assert [e["attempt"] for _ch, e in exact.items] == list(range(31, 51))
        assert (exact.older, exact.more, exact.problem) == (30, False, "")
        for budget in (1, 7, 30):
            found = events.recent_events(client, events.cluster_sources("busy"), limit=5, max_scan=budget)
            assert [e["attempt"] for _ch, e in found.items] == [46, 47, 48, 49, 50], budget
            assert found.more and 0 < found.older < 45, (budget, found.older)
        found = events.recent_events(client, events.cluster_sources("busy"), limit=5, max_scan=48)
        assert [e["attempt"] for _ch, e in found.items] == [46, 47, 48, 49, 50]
        assert (found.older, found.more) == (45, False)  # the rest read after the first 48
        assert events.recent_events(client, events.cluster_sources("bad.name")).items == []
    finally:
        client.close()


def test_window_is_the_hour_before_the_newest(tmcd: Tmcd) -> None:
    t = time.time()
    tmcd.publish(
        subjects.syncer_conn("windowed"),
        ConnectionEvent(cluster="windowed", timestamp=t - 30, state="disconnected"),
        "TMC_SYNCER",
    )
    health = _health("cluster", "windowed", "Healthy", "Unknown", timestamp=t)
    tmcd.publish(subjects.health_change("cluster", "windowed"), health, "TMC_EVENTS")
    client = tmcd.client()
    try:
        both = events.recent_events(client, events.cluster_sources("windowed"))
        assert [ch for ch, _e in both.items] == ["conn", "health"]
        newest = events.recent_events(client, events.cluster_sources("windowed"), window=10)
        assert [ch for ch, _e in newest.items] == ["health"] and newest.older == 0
        # the window is in event time: 30 s apart however close together they were stored
        edge = events.recent_events(client, events.cluster_sources("windowed"), window=30)
        assert [ch for ch, _e in edge.items] == ["conn", "health"]
    finally:
        client.close()


def test_describe_cluster_and_placement_over_http(tmcd: Tmcd) -> None:
    for kind, name in (("cluster", "ev-1"), ("placement", "web-ev")):
        r = CliRunner().invoke(cli, ["describe", kind, name, "--server", tmcd.http_url], env={"TMC_NATS_URL": ""})
        assert r.exit_code == 0, (r.output, r.stderr)
        assert r.stdout.splitlines()[-1] == "Events:  <unknown> (events are read over NATS: set --nats-url)"


def test_unreachable_events_say_why(tmcd: Tmcd) -> None:
    client = Client(Endpoint("nats", "nats://127.0.0.1:1", timeout=2.0))
    found = events.recent_events(client, events.placement_sources("web"))
    assert found.items == [] and found.problem.startswith("cannot reach tmcd at nats://127.0.0.1:1")
    lines = events.events_section(found, time.time(), events.placement_row)
    assert lines == [f"Events:  <unknown> ({found.problem})"]


def test_subprocess_describe_cluster_and_placement(tmcd: Tmcd) -> None:
    p = subprocess.run(
        [KUBECTL_TMC, "describe", "cluster", "ev-2", "--nats-url", tmcd.nats_url], capture_output=True, text=True
    )
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert _no_age(_rows(_section(p.stdout.splitlines(), "Events:")))[0] == [
        "Warning",
        "HealthChanged",
        "health-agent",
        "Healthy → Unhealthy",
    ]
    p = subprocess.run(
        [KUBECTL_TMC, "describe", "placement", "nowhere", "--nats-url", tmcd.nats_url],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout.splitlines()[-1].split(maxsplit=4)[:2] == ["Warning", "Unbound"]
