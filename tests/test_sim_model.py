"""The pure fleet model: determinism, profiles, event mix, faults and control (time driven by hand)."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise

import pytest

from tmcd.contracts import subjects
from tmcd.contracts.codec import decode, encode
from tmcd.contracts.messages import ConnectionEvent, Message, SyncerHeartbeat, SyncEvent
from tmcd.sim.fleet import CORE_RESOURCES, PROVIDERS
from tmcd.sim.model import ERROR_REASONS, RESYNC_BATCH, FleetModel, SimOptionError, SimOptions, cluster_names

T0 = 1_700_000_000.0


@dataclass
class Drive:
    """Everything a model emitted while being polled from ``t0`` to ``t1``."""

    heartbeats: list[SyncerHeartbeat] = field(default_factory=list)
    sync: list[SyncEvent] = field(default_factory=list)
    conn: list[ConnectionEvent] = field(default_factory=list)


def drive(model: FleetModel, t0: float, t1: float, *, step: float = 0.5, per_step: int = 5) -> Drive:
    out = Drive()
    n = round((t1 - t0) / step)
    for i in range(1, n + 1):
        now = t0 + i * step
        out.heartbeats += model.heartbeats_due(now)
        out.sync += model.sync_events(per_step, now)
        out.conn += model.connection_events(now)
    return out


def started(**kw: object) -> FleetModel:
    model = FleetModel(SimOptions(**kw))  # type: ignore[arg-type]
    model.start(T0)
    return model


def test_cluster_names() -> None:
    assert cluster_names(3) == ["sim-001", "sim-002", "sim-003"]
    assert cluster_names(1) == ["sim-001"]
    assert cluster_names(999)[-1] == "sim-999"
    thousand = cluster_names(1000)
    assert thousand[0] == "sim-0001" and thousand[-1] == "sim-1000" and len(set(thousand)) == 1000


def script(seed: int) -> list[bytes]:
    """A fixed sequence of calls, including control requests and faults; returns every message encoded."""
    model = FleetModel(
        SimOptions(
            clusters=8,
            seed=seed,
            heartbeat_interval=5.0,
            stop_heartbeats={"sim-001"},
            error_ratio={"sim-002": 0.5},
            disconnect={"sim-003"},
        )
    )
    model.start(T0)
    out: list[Message] = []
    now = T0
    for i in range(1, 3000):
        now = T0 + i * 2.0
        out += model.heartbeats_due(now)
        out += model.sync_events(i % 7, now)
        out += model.connection_events(now)
        if i == 100:
            out.append(model.control("sim-004", "pause", now))
        if i == 150:
            out.append(model.control("sim-005", "force", now))
        if i == 200:
            out.append(model.control("sim-004", "resume", now))
    return [encode(m) for m in out]


def test_same_seed_same_sequence() -> None:
    first, second = script(7), script(7)
    assert len(first) > 10_000
    assert first == second
    assert script(8) != first


def test_polling_frequency_does_not_change_the_stream() -> None:
    """Polling heartbeats four times as often gives the same heartbeats (sequence, drift) and sync events."""
    a, b = started(clusters=5, seed=3, heartbeat_interval=2.0), started(clusters=5, seed=3, heartbeat_interval=2.0)
    hb_a: list[SyncerHeartbeat] = []
    hb_b: list[SyncerHeartbeat] = []
    sync_a: list[SyncEvent] = []
    sync_b: list[SyncEvent] = []
    for i in range(1, 200):
        now = T0 + i
        for q in (0.75, 0.5, 0.25, 0.0):
            hb_a += a.heartbeats_due(now - q)
        hb_b += b.heartbeats_due(now)
        sync_a += a.sync_events(3, now)
        sync_b += b.sync_events(3, now)
    assert [(h.cluster, h.sequence, h.used, h.queue_depth) for h in hb_a] == [
        (h.cluster, h.sequence, h.used, h.queue_depth) for h in hb_b
    ]
    assert [encode(e) for e in sync_a] == [encode(e) for e in sync_b]


def test_cluster_profiles_are_realistic_and_valid() -> None:
    model = started(clusters=30, heartbeat_interval=10.0)
    hbs = model.heartbeats_due(T0)
    assert sorted(h.cluster for h in hbs) == cluster_names(30)
    for hb in hbs:
        labels = hb.labels
        assert labels["provider"] in PROVIDERS and labels["region"] in PROVIDERS[labels["provider"]]
        assert labels["zone"].startswith(labels["region"])
        assert 0 < hb.allocatable.cpu < hb.capacity.cpu
        assert 0 < hb.allocatable.memory < hb.capacity.memory
        assert 0 < hb.allocatable.pods < hb.capacity.pods
        assert 0 < hb.used.cpu <= hb.allocatable.cpu and 0 < hb.used.memory <= hb.allocatable.memory
        assert set(CORE_RESOURCES) <= set(hb.synced_resources)
        assert hb.syncer_version.startswith("v") and hb.sequence == 1 and hb.interval_seconds == 10.0
        assert hb.connected and not hb.paused
        assert decode(subjects.syncer_heartbeat(hb.cluster), encode(hb)) == hb
    assert len({h.labels["region"] for h in hbs}) >= 4
    assert len({h.labels["provider"] for h in hbs}) == 3


def test_every_cluster_heartbeats_at_start_then_in_its_own_slot() -> None:
    """A syncer heartbeats as soon as it starts (kcp's does), then every interval; the fleet's
    later heartbeats are spread over the interval instead of all arriving at once."""
    model = started(clusters=10, heartbeat_interval=20.0)
    first = model.heartbeats_due(T0)
    assert [h.cluster for h in first] == cluster_names(10)
    assert all(h.timestamp == T0 and h.sequence == 1 for h in first)
    assert model.heartbeats_due(T0) == []  # once
    times: dict[str, list[tuple[float, int]]] = {}
    for i in range(1, 401):
        now = T0 + i * 0.1
        for hb in model.heartbeats_due(now):
            times.setdefault(hb.cluster, []).append((now, hb.sequence))
    assert sorted(times) == cluster_names(10)
    seconds = sorted(v[0][0] for v in times.values())
    assert seconds[0] < T0 + 4 and seconds[-1] > T0 + 16  # spread, not all at once
    for beats in times.values():
        (t2, seq2), (t3, seq3) = beats  # the second within the first interval, the third one interval later
        assert (seq2, seq3) == (2, 3) and T0 < t2 <= T0 + 20.0 and abs(t3 - t2 - 20.0) < 0.15


def test_a_late_first_poll_still_heartbeats_at_once() -> None:
    model = FleetModel(SimOptions(clusters=3, heartbeat_interval=20.0))
    model.start(T0)
    assert len(model.heartbeats_due(T0 + 5.0)) == 3


def test_heartbeats_drift_and_count() -> None:
    model = started(clusters=2, heartbeat_interval=1.0)
    hbs = [h for h in drive(model, T0, T0 + 60.0, step=0.25).heartbeats if h.cluster == "sim-001"]
    assert [h.sequence for h in hbs] == list(range(1, 62))  # at start, then 60 in 60 s
    assert len({h.used.cpu for h in hbs}) > 30
    assert len({h.queue_depth for h in hbs}) > 1
    assert len({h.capacity for h in hbs}) == 1


def test_no_burst_after_a_gap() -> None:
    model = started(clusters=3, heartbeat_interval=1.0)
    drive(model, T0, T0 + 2.0)
    assert len(model.heartbeats_due(T0 + 100.0)) == 3  # one each, not 98 each


def test_sync_event_mix() -> None:
    model = started(clusters=20)
    events = drive(model, T0, T0 + 200.0, step=0.5, per_step=100).sync
    assert len(events) == 40_000
    per_cluster = Counter(e.cluster for e in events)
    assert len(per_cluster) == 20
    busiest, quietest = per_cluster.most_common()[0][1], per_cluster.most_common()[-1][1]
    assert busiest > 3 * quietest  # uneven weights
    assert {e.op for e in events} == {"create", "update", "delete", "status"}
    assert all((e.direction == "up") == (e.op == "status") for e in events)
    kinds = Counter(e.resource for e in events)
    assert kinds.most_common(1)[0][0] == "apps/v1/deployments" and len(kinds) > 8
    failed = [e for e in events if not e.ok]
    assert 0 < len(failed) < 0.05 * len(events)
    assert {e.error_reason for e in failed} <= set(ERROR_REASONS) and all(e.error_reason for e in failed)
    assert all(e.error_reason == "" for e in events if e.ok)
    latencies = [e.latency_seconds for e in events]
    assert 0.03 < statistics.median(latencies) < 0.08
    assert sorted(latencies)[int(len(latencies) * 0.995)] > 0.3  # a tail
    assert all(e.namespace and e.name for e in events)
    for e in events[:200]:
        assert decode(subjects.syncer_sync(e.cluster), encode(e)) == e


def test_error_bursts_happen() -> None:
    model = started(clusters=10)
    events = drive(model, T0, T0 + 4 * 3600.0, step=5.0, per_step=20).sync
    by_minute = Counter(int((e.timestamp - T0) // 60) for e in events if not e.ok)
    clusters_failing = Counter(e.cluster for e in events if not e.ok)
    assert max(by_minute.values()) >= 5  # a burst: many failures within one minute
    assert len(clusters_failing) == 10  # the low base rate still hits every cluster


def test_stop_heartbeats_fault() -> None:
    model = started(clusters=3, heartbeat_interval=1.0, stop_heartbeats={"sim-002"}, fault_after=5.0)
    out = drive(model, T0, T0 + 30.0, step=0.25)
    beats = [h.timestamp for h in out.heartbeats if h.cluster == "sim-002"]
    first = beats[0]
    assert 5 <= len(beats) <= 6 and max(beats) < first + 5.0
    assert len([h for h in out.heartbeats if h.cluster == "sim-001"]) >= 29
    assert any(e.cluster == "sim-002" and e.timestamp > first + 10 for e in out.sync)  # sync continues


def test_error_ratio_fault() -> None:
    model = started(clusters=2, heartbeat_interval=1.0, error_ratio={"sim-001": 1.0, "sim-002": 0.5}, fault_after=3.0)
    out = drive(model, T0, T0 + 200.0, step=0.5, per_step=40)
    first = {h.cluster: h.timestamp for h in reversed(out.heartbeats)}
    before = [e for e in out.sync if e.cluster == "sim-001" and e.timestamp < first["sim-001"] + 3.0]
    after = [e for e in out.sync if e.cluster == "sim-001" and e.timestamp >= first["sim-001"] + 3.0]
    assert before and sum(not e.ok for e in before) <= 0.1 * len(before)
    assert after and all(not e.ok for e in after)
    half = [e for e in out.sync if e.cluster == "sim-002" and e.timestamp >= first["sim-002"] + 3.0]
    assert len(half) > 500 and 0.4 < sum(not e.ok for e in half) / len(half) < 0.6


def test_disconnect_fault() -> None:
    model = started(clusters=3, heartbeat_interval=1.0, disconnect={"sim-003"}, fault_after=2.0)
    out = drive(model, T0, T0 + 60.0, step=0.25, per_step=20)
    first = min(h.timestamp for h in out.heartbeats if h.cluster == "sim-003")
    faults = [c for c in out.conn if c.cluster == "sim-003"]
    assert faults == [
        ConnectionEvent(cluster="sim-003", timestamp=first + 2.0, state="disconnected", reason="SimulatedFault")
    ]
    beats = [h for h in out.heartbeats if h.cluster == "sim-003"]
    assert len(beats) >= 59
    assert all(h.connected == (h.timestamp < first + 2.0) for h in beats)
    syncs = [e for e in out.sync if e.cluster == "sim-003"]
    assert syncs and all(e.timestamp < first + 2.0 for e in syncs)


def test_random_outages() -> None:
    model = started(clusters=10, heartbeat_interval=2.0)
    events: list[ConnectionEvent] = []
    for i in range(1, 4 * 3600):  # four hours, one poll per second
        now = T0 + i
        events += model.connection_events(now)
        down = {c.name for c in model.clusters if c.conn_state != "connected"}
        hbs = model.heartbeats_due(now)
        syncs = model.sync_events(5, now)
        assert not any(e.cluster in down for e in syncs)
        assert all(h.connected == (h.cluster not in down) for h in hbs)
    assert 15 <= sum(e.state == "disconnected" for e in events) <= 80  # ~1 per cluster-hour
    by_cluster: dict[str, list[ConnectionEvent]] = {}
    for e in events:
        by_cluster.setdefault(e.cluster, []).append(e)
    for seq in by_cluster.values():
        states = [e.state for e in seq]
        assert states[0] == "disconnected" and states[-1] == "connected"
        for prev, cur in pairwise(seq):
            assert cur.timestamp >= prev.timestamp
            if cur.state == "reconnecting":
                assert prev.state in ("disconnected", "reconnecting") and cur.attempt >= 1
                assert cur.attempt == (prev.attempt + 1 if prev.state == "reconnecting" else 1)
            if cur.state == "disconnected":
                assert prev.state == "connected"
    for e in events[:20]:
        assert decode(subjects.syncer_conn(e.cluster), encode(e)) == e


def test_pause_resume_force() -> None:
    model = started(clusters=3, heartbeat_interval=1.0)
    drive(model, T0, T0 + 2.0)
    now = T0 + 2.0
    reply = model.control("sim-002", "pause", now)
    assert (reply.ok, reply.code, reply.state, reply.target, reply.timestamp) == (True, 200, "paused", "sim-002", now)
    assert model.control("sim-002", "pause", now).ok  # idempotent
    out = drive(model, now, now + 10.0, per_step=50)
    assert not any(e.cluster == "sim-002" for e in out.sync)
    assert all(h.paused == (h.cluster == "sim-002") for h in out.heartbeats) and out.heartbeats

    refused = model.control("sim-002", "force", now + 10)
    assert (refused.ok, refused.code, refused.state) == (False, 409, "paused")

    reply = model.control("sim-002", "resume", now + 10)
    assert (reply.ok, reply.state) == (True, "running")
    out = drive(model, now + 10, now + 20.0, per_step=50)
    assert any(e.cluster == "sim-002" for e in out.sync)
    assert not any(h.paused for h in out.heartbeats)

    synced = next(h.synced_resources for h in out.heartbeats if h.cluster == "sim-001")
    reply = model.control("sim-001", "force", now + 20)
    assert (reply.ok, reply.code, reply.state) == (True, 200, "resyncing")
    burst = model.sync_events(0, now + 20.1)
    assert [(e.cluster, e.resource, e.op, e.direction) for e in burst] == [
        ("sim-001", r, "update", "down") for r in synced
    ]
    assert model.sync_events(0, now + 20.2) == []  # once


def test_resync_is_batched_and_waits_while_paused() -> None:
    model = started(clusters=RESYNC_BATCH // 4 + 2)
    for c in model.clusters:
        assert model.control(c.name, "force", T0).ok
    total = sum(len(c.resources) for c in model.clusters)
    first = model.sync_events(3, T0 + 0.1)
    assert len(first) == RESYNC_BATCH + 3
    last = model.clusters[-1]
    pending = len(last.resync)
    assert pending > 0
    model.control(last.name, "pause", T0)
    rest = model.sync_events(0, T0 + 0.2) + model.sync_events(0, T0 + 0.3) + model.sync_events(0, T0 + 0.4)
    assert len(first) - 3 + len(rest) == total - pending
    model.control(last.name, "resume", T0)
    assert [e.cluster for e in model.sync_events(0, T0 + 0.5)] == [last.name] * pending


def test_control_errors() -> None:
    model = started(clusters=2)
    missing = model.control("sim-404", "pause", T0)
    assert (missing.ok, missing.code, missing.target) == (False, 404, "sim-404") and "sim-404" in missing.message
    bad = model.control("sim-001", "explode", T0)
    assert (bad.ok, bad.code) == (False, 400)


def test_auto_start() -> None:
    model = FleetModel(SimOptions(clusters=2, heartbeat_interval=1.0))
    assert len(model.sync_events(4, T0)) == 4
    assert len(model.heartbeats_due(T0 + 1.0)) == 2


@pytest.mark.parametrize(
    ("opts", "option", "fragment"),
    [
        (SimOptions(clusters=0), "clusters", "at least 1"),
        (SimOptions(rate=-1), "rate", ">= 0"),
        (SimOptions(heartbeat_interval=0), "heartbeat_interval", "> 0"),
        (SimOptions(fault_after=-1), "fault_after", ">= 0"),
        (SimOptions(clusters=3, stop_heartbeats={"sim-004"}), "stop_heartbeats", "'sim-004'"),
        (SimOptions(clusters=3, disconnect={"x"}), "disconnect", "sim-001..sim-003"),
        (SimOptions(clusters=3, error_ratio={"sim-009": 0.1}), "error_ratio", "unknown cluster"),
        (SimOptions(clusters=3, error_ratio={"sim-001": 1.5}), "error_ratio", "between 0 and 1"),
    ],
)
def test_invalid_options(opts: SimOptions, option: str, fragment: str) -> None:
    with pytest.raises(SimOptionError) as info:
        FleetModel(opts)
    assert info.value.option == option and fragment in info.value.expected
