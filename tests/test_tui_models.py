"""The dashboard's pure view models: fleet rows, sorting, filters, sparklines, events, canaries."""

from __future__ import annotations

import pytest

from tmcd.contracts.messages import (
    CanaryEvent,
    ConnectionEvent,
    HealthChange,
    PlacementDecision,
    ResourceQuantities,
    RollbackEvent,
    SyncerHeartbeat,
    SyncEvent,
    SyncEventBatch,
)
from tmcd.resources.canary import CanaryRollout
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.synctarget import SyncTarget, SyncTargetStatus
from tmcd.tui.canaries import canary_row, step_label
from tmcd.tui.eventlog import EventLog, EventRow, event_row, parse_event_filter
from tmcd.tui.models import (
    SORT_COLUMNS,
    FleetModel,
    FleetRow,
    SecondBuckets,
    filter_rows,
    health_counts,
    human_age,
    next_column,
    parse_filter,
    sort_rows,
    sparkline,
)
from tmcd.tui.state import DashboardState

NOW = 1_700_000_000.0


def target(name: str, health: str = "Healthy", region: str = "eu-west-1", **status: object) -> SyncTarget:
    return SyncTarget(
        metadata=ObjectMeta(name=name, labels={"region": region, "tier": "gold" if name.endswith("1") else "silver"}),
        status=SyncTargetStatus(health=health, **status),  # type: ignore[arg-type]
    )


def heartbeat(name: str, at: float, **kw: object) -> SyncerHeartbeat:
    return SyncerHeartbeat(cluster=name, timestamp=at, **kw)  # type: ignore[arg-type]


def batch(name: str, at: float, ok: int, failed: int) -> SyncEventBatch:
    evs = [SyncEvent(cluster=name, timestamp=at, resource="apps/v1/deployments", ok=True) for _ in range(ok)]
    evs += [SyncEvent(cluster=name, timestamp=at, resource="apps/v1/deployments", ok=False) for _ in range(failed)]
    return SyncEventBatch(cluster=name, timestamp=at, events=evs)


def row(name: str, **kw: object) -> FleetRow:
    base: dict[str, object] = {
        "name": name,
        "region": "r",
        "health": "Healthy",
        "reason": "",
        "heartbeat_age": 1.0,
        "error_ratio": 0.0,
        "queue_depth": 0,
        "cpu": 0.5,
        "memory": 0.5,
        "resources": 3,
        "paused": False,
        "labels": {},
    }
    base.update(kw)
    return FleetRow(**base)  # type: ignore[arg-type]


# --- fleet rows -----------------------------------------------------------------------------------------------


def test_a_row_combines_the_synctarget_the_heartbeat_and_the_sync_window() -> None:
    m = FleetModel()
    m.set_target(target("sim-001", "Degraded", health_reason="SyncErrors", error_ratio=0.9, queue_depth=7))
    m.heartbeat(
        heartbeat(
            "sim-001",
            NOW - 12,
            queue_depth=42,
            paused=True,
            synced_resources=["a", "b"],
            used=ResourceQuantities(cpu=2, memory=1 << 30),
            allocatable=ResourceQuantities(cpu=8, memory=4 << 30),
        )
    )
    m.sync_batch(batch("sim-001", NOW - 5, ok=3, failed=1))
    (r,) = m.rows(NOW)
    assert (r.name, r.region, r.health, r.reason) == ("sim-001", "eu-west-1", "Degraded", "SyncErrors")
    assert r.heartbeat_age == pytest.approx(12)
    assert r.error_ratio == pytest.approx(0.25)  # the live window wins over the stored 0.9
    assert (r.queue_depth, r.resources, r.paused) == (42, 2, True)
    assert (r.cpu, r.memory) == (pytest.approx(0.25), pytest.approx(0.25))


def test_without_recent_events_the_error_ratio_is_the_health_agents_and_usage_comes_from_quantities() -> None:
    m = FleetModel(error_window=60)
    m.set_target(
        target(
            "sim-002",
            error_ratio=0.1,
            used={"cpu": "500m", "memory": "1Gi"},
            allocatable={"cpu": "2", "memory": "4Gi"},
            last_syncer_heartbeat_time="2023-11-14T22:13:00Z",
        )
    )
    m.sync_batch(batch("sim-002", NOW - 120, ok=1, failed=1))  # outside the window
    (r,) = m.rows(NOW)
    assert r.error_ratio == pytest.approx(0.1)
    assert (r.cpu, r.memory) == (pytest.approx(0.25), pytest.approx(0.25))
    assert r.heartbeat_age == pytest.approx(NOW - 1_699_999_980.0)


def test_a_cluster_known_only_by_heartbeat_is_unknown_and_a_deleted_target_leaves() -> None:
    m = FleetModel()
    m.heartbeat(heartbeat("sim-003", NOW, labels={"region": "us-east-1"}))
    (r,) = m.rows(NOW)
    assert (r.health, r.reason, r.region) == ("Unknown", "NotRegistered", "us-east-1")
    assert r.cpu is None and r.error_ratio is None
    m.set_target(target("sim-003"))
    assert m.target_names() == {"sim-003"}
    m.remove_target("sim-003")
    assert m.rows(NOW) == []


def test_an_older_heartbeat_does_not_replace_a_newer_one() -> None:
    m = FleetModel()
    m.heartbeat(heartbeat("c", NOW, queue_depth=5))
    m.heartbeat(heartbeat("c", NOW - 30, queue_depth=99))
    assert m.rows(NOW)[0].queue_depth == 5


def test_clusters_are_bounded() -> None:
    m = FleetModel(max_clusters=3)
    for i in range(10):
        m.heartbeat(heartbeat(f"c{i}", NOW))
    assert len(m) == 3


def test_version_moves_with_every_update() -> None:
    s = DashboardState()
    v = s.version
    s.apply(heartbeat("c", NOW))
    assert s.version > v
    v = s.version
    s.apply(HealthChange(kind="cluster", name="c", timestamp=NOW, to_status="Unhealthy"))
    assert s.version > v
    v = s.version
    s.set_connection("connected")
    assert s.version > v


# --- buckets and sparklines -----------------------------------------------------------------------------------


def test_second_buckets_window_late_arrivals_and_bound() -> None:
    b = SecondBuckets(10)
    for t in range(100):
        b.add(NOW + t, 2, 1)
    assert len(b) == 10
    assert b.totals(NOW + 99, 5) == (12, 6)  # seconds 94..99
    b.add(NOW + 97.5, 10, 0)  # late, into its bucket
    assert b.totals(NOW + 99, 2) == (16, 3)
    b.add(NOW + 50, 100, 100)  # older than the window: dropped
    assert b.totals(NOW + 99, 60) == (30, 10)


def test_second_buckets_fill_a_gap_in_order() -> None:
    b = SecondBuckets(60)
    b.add(NOW, 1, 0)
    b.add(NOW + 3, 1, 0)
    b.add(NOW + 1, 5, 5)
    assert b.series(NOW + 3, 4, 1) == [(1, 0), (5, 5), (0, 0), (1, 0)]


def test_fleet_sparklines_show_events_per_second_and_error_ratio() -> None:
    m = FleetModel()
    for t in range(20):
        m.sync_batch(batch("a", NOW - 19 + t, ok=10 if t < 10 else 40, failed=0 if t < 10 else 10))
    rates, ratios = m.rate_series(NOW, points=4, step=5)
    assert rates == [10.0, 10.0, 50.0, 50.0]
    assert ratios == [0.0, 0.0, 0.2, 0.2]
    assert sparkline(rates) == "▂▂██"
    assert sparkline(ratios, top=1.0) == "▁▁▂▂"


@pytest.mark.parametrize(
    ("values", "top", "expected"),
    [([], None, ""), ([0, 0], None, "▁▁"), ([1, 2, 3, 4, 5, 6, 7, 8], 7, "▂▃▄▅▆▇██"), ([5], None, "█")],
)
def test_sparkline(values: list[float], top: float | None, expected: str) -> None:
    assert sparkline(values, top) == expected


@pytest.mark.parametrize(
    ("secs", "text"),
    [(None, "-"), (-3, "0s"), (95, "95s"), (302, "5m2s"), (2820, "47m"), (18180, "5h3m"), (273600, "3d4h")],
)
def test_human_age_follows_kubectl(secs: float | None, text: str) -> None:
    assert human_age(secs) == text


def test_health_counts_have_every_status() -> None:
    rows = [row("a"), row("b", health="Unhealthy"), row("c", health="Unhealthy")]
    assert health_counts(rows) == {"Healthy": 1, "Degraded": 0, "Unhealthy": 2, "Unknown": 0}


# --- sort -----------------------------------------------------------------------------------------------------


def test_sort_by_every_column_with_unknowns_last_both_ways() -> None:
    rows = [
        row("b", health="Healthy", cpu=0.9, queue_depth=1, heartbeat_age=None),
        row("a", health="Unhealthy", cpu=None, queue_depth=5, heartbeat_age=3.0),
        row("c", health="Degraded", cpu=0.1, queue_depth=5, heartbeat_age=1.0),
    ]
    for col in SORT_COLUMNS:
        assert len(sort_rows(rows, col)) == 3
    assert [r.name for r in sort_rows(rows, "name")] == ["a", "b", "c"]
    assert [r.name for r in sort_rows(rows, "health")] == ["a", "c", "b"]  # worst first
    assert [r.name for r in sort_rows(rows, "cpu")] == ["c", "b", "a"]
    assert [r.name for r in sort_rows(rows, "cpu", descending=True)] == ["b", "c", "a"]
    assert [r.name for r in sort_rows(rows, "queue", descending=True)] == ["a", "c", "b"]  # ties by name
    assert [r.name for r in sort_rows(rows, "heartbeat", descending=True)] == ["a", "c", "b"]


def test_next_column_cycles() -> None:
    assert next_column("name") == "region"
    assert next_column(SORT_COLUMNS[-1]) == "name"
    assert next_column("bogus") == "name"


# --- filter ---------------------------------------------------------------------------------------------------

ROWS = [
    row("sim-001", region="eu-west-1", labels={"region": "eu-west-1", "tier": "gold"}),
    row("sim-002", region="us-east-1", health="Unhealthy", reason="HeartbeatMissed", labels={"region": "us-east-1"}),
    row("sim-013", region="eu-west-1", labels={"region": "eu-west-1", "tier": "silver"}),
]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", ["sim-001", "sim-002", "sim-013"]),
        ("sim-0[01]", ["sim-001", "sim-002", "sim-013"]),
        ("00[12]", ["sim-001", "sim-002"]),
        ("heartbeat", ["sim-002"]),  # the reason, case-insensitive
        ("!unhealthy", ["sim-001", "sim-013"]),
        ("! eu-west", ["sim-002"]),
        ("-l region=eu-west-1", ["sim-001", "sim-013"]),
        ("-l tier=gold", ["sim-001"]),
        ("-l region=eu-west-1 !013", ["sim-001"]),
        ("--selector=tier!=gold", ["sim-002", "sim-013"]),
        ("-l region=eu-west-1 -l tier=silver", ["sim-013"]),
        ("!", ["sim-001", "sim-002", "sim-013"]),
    ],
)
def test_filters(text: str, names: list[str]) -> None:
    flt = parse_filter(text)
    assert flt.error == ""
    assert [r.name for r in filter_rows(ROWS, flt)] == names


def test_a_bad_regex_or_selector_says_why_and_still_filters() -> None:
    flt = parse_filter("sim-00(")
    assert flt.error.startswith("regex:")
    assert filter_rows(ROWS, flt) == []
    flt = parse_filter("-l =x")
    assert flt.error.startswith("-l:")
    assert len(filter_rows(ROWS, flt)) == 3


# --- events ---------------------------------------------------------------------------------------------------


def test_event_rows_for_every_kind() -> None:
    h = event_row(
        HealthChange(kind="cluster", name="sim-1", timestamp=NOW, from_status="Healthy", to_status="Unhealthy")
    )
    assert h is not None and (h.kind, h.object, h.warning) == ("health", "cluster/sim-1", True)
    c = event_row(CanaryEvent(namespace="shop", name="web", timestamp=NOW, type="step", phase="Progressing"))
    assert c is not None and (c.kind, c.object, c.reason, c.warning) == ("canary", "shop/web", "step", False)
    r = event_row(
        RollbackEvent(namespace="shop", name="web", timestamp=NOW, stage="Reversing", trigger="abort", to_revision=2)
    )
    assert r is not None and r.kind == "rollback" and "revision 0 -> 2" in r.message
    p = event_row(PlacementDecision(placement="web", timestamp=NOW, selected=[f"c{i}" for i in range(7)]))
    assert p is not None and p.message.endswith("c4 +2")
    d = event_row(ConnectionEvent(cluster="sim-1", timestamp=NOW, state="disconnected", reason="EOF"))
    assert d is not None and (d.kind, d.warning) == ("connection", True)
    assert event_row(heartbeat("x", NOW)) is None


def test_event_log_is_newest_first_bounded_and_keeps_each_event_once() -> None:
    log = EventLog(limit=100)
    for i in range(250):
        log.add(EventRow(NOW + i, "health", f"cluster/c{i}", "r", "m"))
    assert len(log) == 100
    rows = log.rows()
    assert rows[0].timestamp == NOW + 249 and rows[-1].timestamp == NOW + 150
    assert not log.add(EventRow(NOW + 249, "health", "cluster/c249", "r", "m"))  # a replayed duplicate
    assert not log.add(EventRow(NOW, "health", "cluster/old", "r", "m"))  # older than everything kept
    log.add(EventRow(NOW + 200.5, "canary", "shop/web", "step", "late"))  # late: into its place
    rows = log.rows()
    assert [r.timestamp for r in rows] == sorted((r.timestamp for r in rows), reverse=True)
    assert len(log) == 100


def test_event_filters_by_kind_and_text() -> None:
    log = EventLog()
    log.add(EventRow(NOW, "health", "cluster/a", "HeartbeatMissed", "Healthy -> Unhealthy"))
    log.add(EventRow(NOW + 1, "canary", "shop/web", "step", "setWeight 20"))
    log.add(EventRow(NOW + 2, "rollback", "shop/web", "Reversing", "abort"))
    assert [r.kind for r in log.rows()] == ["rollback", "canary", "health"]
    assert [r.kind for r in log.rows(kinds={"health", "rollback"})] == ["rollback", "health"]
    assert [r.kind for r in log.rows(text="shop/")] == ["rollback", "canary"]
    assert [r.kind for r in log.rows(text="weight [0-9]+")] == ["canary"]
    assert [r.kind for r in log.rows(text="(")] == []  # not a regex: a plain substring
    assert parse_event_filter("kind:health,canary shop web") == ({"health", "canary"}, "shop web")
    assert parse_event_filter("web") == (None, "web")


# --- canaries -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "index", "total", "text"),
    [("Pending", 0, 7, "0/7"), ("Progressing", 2, 7, "3/7"), ("Succeeded", 6, 7, "7/7"), ("Paused", 9, 3, "3/3")],
)
def test_step_label_counts_from_one(phase: str, index: int, total: int, text: str) -> None:
    assert step_label(phase, index, total) == text


def test_canary_row() -> None:
    import msgspec

    ro = msgspec.convert(
        {
            "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2023-11-14T22:12:20Z"},
            "spec": {
                "workloadRef": {"name": "web"},
                "stableVersion": "v1",
                "canaryVersion": "v2",
                "trafficRouting": {"route": "web"},
                "steps": [{"setClusters": {"count": 2}}, {"setWeight": 20}, {"pause": {}}],
            },
            "status": {
                "phase": "Paused",
                "currentStepIndex": 2,
                "currentWeight": 20,
                "canaryClusters": ["sim-001", "sim-002"],
            },
        },
        CanaryRollout,
    )
    r = canary_row(ro, NOW)
    assert (r.namespace, r.name, r.phase, r.step, r.weight) == ("shop", "web", "Paused", "3/3", 20)
    assert r.clusters == ("sim-001", "sim-002") and r.applied_weight is None
    assert r.age == pytest.approx(NOW - 1_699_999_940.0)
    s = DashboardState()
    s.set_canary("shop.web", ro)
    assert [c.name for c in s.canary_rows(NOW)] == ["web"]
    s.set_canary("shop.web", None)
    assert s.canary_rows(NOW) == []
