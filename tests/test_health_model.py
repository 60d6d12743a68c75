"""The pure cluster-health model: statuses, thresholds, hysteresis, conditions, persistence.

No sockets, no sleeps: the clock is just numbers passed in.
"""

from __future__ import annotations

import msgspec
import pytest

from tmcd.config import HealthConfig
from tmcd.contracts.messages import ConnectionEvent, ResourceQuantities, SyncerHeartbeat
from tmcd.health import conditions as cnd
from tmcd.health import model
from tmcd.health.model import ClusterHealth, Transition
from tmcd.health.window import ErrorWindow
from tmcd.resources.meta import rfc3339
from tmcd.resources.synctarget import SyncTarget

T0 = 1_795_687_200.0  # 2026-11-26T10:00:00Z
CFG = HealthConfig()
STARTED = T0 - 3600.0  # tmcd has been up an hour: no startup grace unless a test says so


def heartbeat(ts: float, seq: int = 0, **kw: object) -> SyncerHeartbeat:
    return SyncerHeartbeat(cluster="c1", timestamp=ts, sequence=seq, **kw)  # type: ignore[arg-type]


def conn(ts: float, state: str, reason: str = "", attempt: int = 0) -> ConnectionEvent:
    return ConnectionEvent(cluster="c1", timestamp=ts, state=state, reason=reason, attempt=attempt)  # type: ignore[arg-type]


class Driver:
    """One cluster fed heartbeats every ``every`` seconds and evaluated every ``step`` seconds."""

    def __init__(
        self, *, cfg: HealthConfig = CFG, started_at: float = STARTED, every: float | None = 20.0, skew: float = 0.0
    ) -> None:
        self.cfg, self.started_at, self.every, self.skew = cfg, started_at, every, skew
        self.t = T0
        self.st = model.new_cluster("c1", T0)
        self.next_hb = T0
        self.seq = 0
        self.connected = True
        self.hb_kw: dict[str, object] = {}
        self.transitions: list[Transition] = []

    def heartbeat(self, at: float) -> None:
        self.seq += 1
        hb = heartbeat(at + self.skew, self.seq, connected=self.connected, **self.hb_kw)
        assert model.observe_heartbeat(self.st, hb, at)

    def evaluate(self, at: float) -> Transition | None:
        self.t = at
        tr = model.evaluate(self.st, at, self.cfg, self.started_at)
        if tr is not None:
            self.transitions.append(tr)
        return tr

    def run(self, until: float, step: float = 5.0) -> list[tuple[str, str, str, float]]:
        """Advance to ``until``; the transitions made on the way as (from, to, reason, at - T0)."""
        start = len(self.transitions)
        while self.t + step <= until + 1e-9:
            at = self.t + step
            while self.every is not None and self.next_hb <= at:
                self.heartbeat(self.next_hb)
                self.next_hb += self.every
            self.evaluate(at)
        return [(t.from_status, t.to_status, t.reason, round(t.at - T0, 3)) for t in self.transitions[start:]]


def started(**kw: object) -> Driver:
    """A Driver whose cluster has had its first heartbeat and is Healthy at T0."""
    d = Driver(**kw)  # type: ignore[arg-type]
    d.heartbeat(T0)
    d.next_hb = T0 + (d.every or 0.0)
    tr = d.evaluate(T0)
    assert tr is not None and tr.to_status == "Healthy"
    return d


def cond(st: ClusterHealth, type_: str) -> tuple[str, str, str, str]:
    c = cnd.condition(st.conditions, type_)
    assert c is not None
    return c.status, c.reason, c.message, c.last_transition_time


# ------------------------------------------------------------------------------ basics


def test_new_cluster_is_unknown_until_the_first_heartbeat() -> None:
    st = model.new_cluster("c1", T0)
    assert (st.status, st.status_reason) == ("Unknown", "NoHeartbeat")
    assert [c.type for c in st.conditions] == ["HeartbeatHealthy", "SyncerReady", "Ready"]
    for c in st.conditions:
        assert (c.status, c.reason, c.message) == ("Unknown", "NoHeartbeat", "No heartbeat yet seen")
    for dt in (0.0, 60.0, 3600.0):
        assert model.evaluate(st, T0 + dt, CFG, STARTED) is None
    assert model.raw_status(st, T0 + 3600, CFG, STARTED) == ("Unknown", "NoHeartbeat", ())
    assert st.status == "Unknown"


def test_first_heartbeat_makes_a_cluster_healthy_at_once() -> None:
    st = model.new_cluster("c1", T0)
    hb = heartbeat(T0 + 1, labels={"region": "eu"}, queue_depth=3, syncer_version="v1")
    assert model.observe_heartbeat(st, hb, T0 + 1)
    tr = model.evaluate(st, T0 + 2, CFG, STARTED)
    assert tr == Transition("c1", "Unknown", "Healthy", "AsExpected", tr.message if tr else "", (), T0 + 2)
    assert (st.status, st.status_since, st.labels, st.queue_depth) == ("Healthy", T0 + 2, {"region": "eu"}, 3)
    assert [c.status for c in st.conditions] == ["True", "True", "True"]
    assert model.evaluate(st, T0 + 7, CFG, STARTED) is None


def test_first_heartbeat_that_reports_disconnected_is_unhealthy_at_once() -> None:
    st = model.new_cluster("c1", T0)
    model.observe_heartbeat(st, heartbeat(T0, connected=False), T0)
    tr = model.evaluate(st, T0, CFG, STARTED)
    assert tr is not None and (tr.to_status, tr.reason, tr.failing) == (
        "Unhealthy",
        "SyncerDisconnected",
        ("SyncerReady",),
    )


# --------------------------------------------------------------------------- heartbeats


def test_missing_heartbeats_make_a_cluster_unhealthy_after_the_failure_threshold() -> None:
    # the syncer's clock is 7 s behind: age counts from receipt, the message quotes the payload time
    d = started(skew=-7.0)
    assert d.run(T0 + 40) == []
    d.every = None  # last heartbeat received at T0+40 (payload says 10:00:33)
    # late from T0+75 (age 35 > 1.5 x 20 + 1), missed from T0+105 (age 65 > 60): 30 s worse than Healthy
    assert d.run(T0 + 100) == []
    assert d.st.candidate == "Degraded" and d.st.failing == ("HeartbeatHealthy",)
    assert d.run(T0 + 200) == [("Healthy", "Unhealthy", "HeartbeatMissed", 105.0)]
    assert d.transitions[-1].message == "No heartbeat since 2026-11-26T10:00:33Z"
    assert d.transitions[-1].failing == ("HeartbeatHealthy",)
    assert cond(d.st, "HeartbeatHealthy")[:3] == ("False", "ErrorHeartbeat", "No heartbeat since 2026-11-26T10:00:33Z")
    assert cond(d.st, "SyncerReady")[:2] == ("Unknown", "HeartbeatMissed")
    assert cond(d.st, "Ready")[:2] == ("False", "HeartbeatMissed")


def test_late_heartbeats_degrade_then_missing_ones_make_unhealthy_then_recovery() -> None:
    d = Driver(every=None)
    d.hb_kw = {"interval_seconds": 10.0}  # late after 1.5 x 10 + 1 = 16 s
    d.heartbeat(T0)
    d.evaluate(T0)
    assert d.run(T0 + 200) == [
        ("Healthy", "Degraded", "HeartbeatLate", 50.0),  # late seen at +20, held 30 s (age 50 <= 60)
        ("Degraded", "Unhealthy", "HeartbeatMissed", 95.0),  # missed seen at +65, held 30 s
    ]
    assert cond(d.st, "HeartbeatHealthy")[0] == "False"
    d.every, d.next_hb = 10.0, T0 + 200
    assert d.run(T0 + 230) == []  # better from +205 (first evaluation after the heartbeat)
    assert d.run(T0 + 400) == [("Unhealthy", "Healthy", "AsExpected", 235.0)]


def test_late_heartbeat_keeps_heartbeat_healthy_true() -> None:
    st = model.new_cluster("c1", T0)
    model.observe_heartbeat(st, heartbeat(T0), T0)
    model.evaluate(st, T0, CFG, STARTED)
    ltt = cond(st, "HeartbeatHealthy")[3]
    model.evaluate(st, T0 + 40, CFG, STARTED)
    status, reason, message, ltt2 = cond(st, "HeartbeatHealthy")
    assert (status, reason, ltt2) == ("True", "HeartbeatLate", ltt)
    assert message == "No heartbeat since 2026-11-26T10:00:00Z; expected every 20s"


def test_older_heartbeat_is_ignored() -> None:
    st = model.new_cluster("c1", T0)
    assert model.observe_heartbeat(st, heartbeat(T0 + 20, 2), T0 + 20)
    assert not model.observe_heartbeat(st, heartbeat(T0, 1), T0 + 25)
    assert (st.last_heartbeat, st.last_heartbeat_received, st.sequence) == (T0 + 20, T0 + 20, 2)


def test_heartbeat_updates_the_inventory() -> None:
    st = model.new_cluster("c1", T0)
    q = ResourceQuantities(cpu=8, memory=1 << 30, pods=110)
    hb = heartbeat(
        T0, capacity=q, synced_resources=["apps/v1/deployments"], paused=True, interval_seconds=5.0, labels={"a": "b"}
    )
    model.observe_heartbeat(st, hb, T0)
    assert (st.capacity, st.synced_resources, st.paused, st.heartbeat_interval) == (
        q,
        ["apps/v1/deployments"],
        True,
        5.0,
    )
    model.observe_heartbeat(st, heartbeat(T0 + 20, labels={}), T0 + 20)  # empty labels keep the known ones
    assert st.labels == {"a": "b"}
    model.observe_heartbeat(st, heartbeat(T0 + 40, labels={"a": "c"}), T0 + 40)
    assert st.labels == {"a": "c"}


# --------------------------------------------------------------------------- connection


def test_disconnect_makes_unhealthy_and_reconnect_heals_only_after_success_threshold() -> None:
    d = started()
    assert d.run(T0 + 45) == []
    d.connected = False  # later heartbeats report it too
    assert model.observe_connection(d.st, conn(T0 + 47, "disconnected", "control plane unreachable"), T0 + 47)
    assert d.run(T0 + 75) == []
    assert d.st.candidate == "Unhealthy"
    assert d.run(T0 + 80) == [("Healthy", "Unhealthy", "SyncerDisconnected", 80.0)]
    assert d.transitions[-1].failing == ("SyncerReady",)
    assert "control plane unreachable" in d.transitions[-1].message
    assert cond(d.st, "SyncerReady")[:3] == ("False", "SyncerDisconnected", "control plane unreachable")
    assert cond(d.st, "HeartbeatHealthy")[0] == "True"
    assert d.run(T0 + 200) == []
    d.connected = True
    model.observe_connection(d.st, conn(T0 + 201, "connected"), T0 + 201)
    assert d.run(T0 + 230) == []
    assert d.run(T0 + 235) == [("Unhealthy", "Healthy", "AsExpected", 235.0)]  # better since +205
    assert cond(d.st, "SyncerReady")[:2] == ("True", "SyncerConnected")


def test_reconnecting_counts_as_disconnected() -> None:
    st = model.new_cluster("c1", T0)
    model.observe_heartbeat(st, heartbeat(T0), T0)
    model.observe_connection(st, conn(T0 + 1, "reconnecting", attempt=3), T0 + 1)
    assert (st.connected, st.conn_reason) == (False, "reconnecting (attempt 3)")
    assert model.raw_status(st, T0 + 2, CFG, STARTED) == ("Unhealthy", "SyncerDisconnected", ("SyncerReady",))


def test_connection_report_older_than_the_last_heartbeat_is_ignored() -> None:
    st = model.new_cluster("c1", T0)
    model.observe_heartbeat(st, heartbeat(T0 + 10), T0 + 10)
    assert not model.observe_connection(st, conn(T0 + 5, "disconnected"), T0 + 11)
    assert st.connected is True


def test_missing_and_disconnected_both_fail() -> None:
    st = model.new_cluster("c1", T0)
    model.observe_heartbeat(st, heartbeat(T0, connected=False), T0)
    assert model.raw_status(st, T0 + 61, CFG, STARTED) == (
        "Unhealthy",
        "HeartbeatMissed",
        ("HeartbeatHealthy", "SyncerReady"),
    )


# ------------------------------------------------------------------- error ratio, queue


@pytest.mark.parametrize(
    ("total", "failed", "expected"),
    [
        (100, 5, "Healthy"),  # exactly 5 %: not above the threshold
        (100, 6, "Degraded"),
        (20, 2, "Degraded"),  # the minimum sample
        (19, 19, "Healthy"),  # all failed, but too few to judge
        (2, 1, "Healthy"),
        (0, 0, "Healthy"),
    ],
)
def test_error_ratio(total: int, failed: int, expected: str) -> None:
    d = started()
    d.run(T0 + 10)
    model.observe_sync(d.st, total, failed, T0 + 10, CFG.error_window, CFG.interval)
    assert d.run(T0 + 40) == []  # first seen by the evaluation at +15
    out = d.run(T0 + 100)
    if expected == "Healthy":
        assert out == [] and d.st.failing == ()
    else:
        assert out == [("Healthy", "Degraded", "ErrorRatioHigh", 45.0)]
        assert d.st.failing == ("ErrorRatio",)
        assert d.transitions[-1].message.startswith(f"{failed / total:.1%} of syncs failed in the last 300s")
    assert model.error_ratio(d.st, T0 + 100, CFG.error_window) == (failed / total if total else 0.0)


def test_errors_leave_the_window_and_the_cluster_recovers() -> None:
    d = started()
    d.run(T0 + 10)
    model.observe_sync(d.st, 100, 50, T0 + 10, CFG.error_window, CFG.interval)
    assert d.run(T0 + 305) == [("Healthy", "Degraded", "ErrorRatioHigh", 45.0)]
    # the bucket [T0+10, T0+15) leaves the 300 s window at T0+310; Healthy 30 s later
    assert d.run(T0 + 400) == [("Degraded", "Healthy", "AsExpected", 340.0)]
    assert model.error_ratio(d.st, T0 + 400, CFG.error_window) == 0.0


@pytest.mark.parametrize(
    ("depth", "paused", "raw"),
    [
        (1000, False, ("Healthy", "AsExpected", ())),  # at the limit: fine
        (1001, False, ("Degraded", "QueueBackingUp", ("QueueDepth",))),
        (50_000, True, ("Healthy", "SyncPaused", ())),  # a paused syncer's backlog is expected
    ],
)
def test_queue_depth(depth: int, paused: bool, raw: tuple[str, str, tuple[str, ...]]) -> None:
    st = model.new_cluster("c1", T0)
    model.observe_heartbeat(st, heartbeat(T0, queue_depth=depth, paused=paused), T0)
    assert model.raw_status(st, T0 + 1, CFG, STARTED) == raw


def test_pausing_changes_the_reason_without_a_transition() -> None:
    d = started()
    d.hb_kw = {"paused": True}
    assert d.run(T0 + 60) == []
    assert (d.st.status, d.st.status_reason) == ("Healthy", "SyncPaused")
    assert cond(d.st, "Ready")[:2] == ("True", "SyncPaused")


def test_degraded_cluster_is_still_ready() -> None:
    d = started()
    d.hb_kw = {"queue_depth": 5000}
    assert d.run(T0 + 60) == [("Healthy", "Degraded", "QueueBackingUp", 50.0)]  # heartbeat at +20, held 30 s
    assert cond(d.st, "Ready")[:2] == ("True", "QueueBackingUp")


# ------------------------------------------------------------------------- hysteresis


@pytest.mark.parametrize("step", [1.0, 5.0])
def test_flapping_cluster_never_changes_status(step: float) -> None:
    d = started()
    assert d.run(T0 + 20, step) == []
    for i in range(60):  # bad for 10 s, good for 10 s, for 20 minutes
        d.connected = i % 2 == 1
        t = T0 + 20 + 10 * i
        model.observe_connection(d.st, conn(t, "connected" if d.connected else "disconnected"), t)
        assert d.run(t + 10, step) == []
    assert d.transitions[1:] == []
    assert d.st.status == "Healthy"


def test_flapping_unhealthy_cluster_stays_unhealthy() -> None:
    d = started()
    d.connected = False
    model.observe_connection(d.st, conn(T0 + 1, "disconnected"), T0 + 1)
    assert d.run(T0 + 40) == [("Healthy", "Unhealthy", "SyncerDisconnected", 35.0)]
    for i in range(40):
        d.connected = i % 2 == 0
        t = T0 + 41 + 10 * i
        model.observe_connection(d.st, conn(t, "connected" if d.connected else "disconnected"), t)
        assert d.run(t + 9) == []
    assert d.st.status == "Unhealthy"


def test_worsening_keeps_the_clock_running() -> None:
    """Degraded then Unhealthy: the 30 s hold counts from the first bad evaluation."""
    d = started()
    d.hb_kw = {"queue_depth": 5000}
    d.run(T0 + 25)
    assert (d.st.candidate, d.st.candidate_since) == ("Degraded", T0 + 20)
    d.connected = False
    model.observe_connection(d.st, conn(T0 + 26, "disconnected"), T0 + 26)
    assert d.run(T0 + 60) == [("Healthy", "Unhealthy", "SyncerDisconnected", 50.0)]
    assert d.transitions[-1].failing == ("SyncerReady", "QueueDepth")


# --------------------------------------------------------------------------- boundaries


@pytest.mark.parametrize(
    ("age", "raw"),
    [
        (31.0, ("Healthy", "AsExpected", ())),  # late means age > 1.5 x 20 + 1
        (31.5, ("Degraded", "HeartbeatLate", ("HeartbeatHealthy",))),
        (60.0, ("Degraded", "HeartbeatLate", ("HeartbeatHealthy",))),  # missed means age > threshold (as kcp)
        (60.5, ("Unhealthy", "HeartbeatMissed", ("HeartbeatHealthy",))),
    ],
)
def test_heartbeat_age_boundaries(age: float, raw: tuple[str, str, tuple[str, ...]]) -> None:
    st = model.new_cluster("c1", T0)
    model.observe_heartbeat(st, heartbeat(T0), T0)
    assert model.raw_status(st, T0 + age, CFG, STARTED) == raw


@pytest.mark.parametrize(("held", "changes"), [(29.999, False), (30.0, True)])
def test_hold_boundary(held: float, changes: bool) -> None:
    d = started()
    model.observe_connection(d.st, conn(T0 + 10, "disconnected"), T0 + 10)
    assert d.evaluate(T0 + 10) is None
    assert (d.evaluate(T0 + 10 + held) is not None) is changes


def test_zero_thresholds_change_at_once() -> None:
    cfg = HealthConfig(failure_threshold=0.0, success_threshold=0.0)
    d = started(cfg=cfg)
    model.observe_connection(d.st, conn(T0 + 10, "disconnected"), T0 + 10)
    assert d.evaluate(T0 + 10) is not None
    model.observe_connection(d.st, conn(T0 + 11, "connected"), T0 + 11)
    assert d.evaluate(T0 + 11) is not None


@pytest.mark.parametrize(("silent", "forget"), [(86400.0, False), (86400.5, True)])
def test_forgetting(silent: float, forget: bool) -> None:
    never = model.new_cluster("c1", T0)
    assert model.should_forget(never, T0 + silent, CFG) is forget  # counted from first_seen
    st = model.new_cluster("c2", T0 - 500)
    model.observe_heartbeat(st, heartbeat(T0 - 100), T0)
    assert model.should_forget(st, T0 + silent, CFG) is forget  # counted from receipt


# ------------------------------------------------------------------------ startup grace


def stored(health: str = "Healthy", heartbeat_at: float = T0 - 300) -> SyncTarget:
    st = model.new_cluster("c1", heartbeat_at - 100)
    model.observe_heartbeat(st, heartbeat(heartbeat_at, labels={"region": "eu"}), heartbeat_at)
    model.evaluate(st, heartbeat_at, CFG, STARTED)
    obj = model.to_sync_target(st)
    obj.status.health = health  # type: ignore[assignment]
    return obj


def test_restored_cluster_is_not_judged_during_startup_grace() -> None:
    st = model.from_sync_target(stored(), T0)  # tmcd was down 5 minutes, restarted at T0
    conditions = list(st.conditions)
    for dt in range(0, 60, 5):
        assert model.raw_status(st, T0 + dt, CFG, T0)[1] == "StartupGrace"
        assert model.evaluate(st, T0 + dt, CFG, T0) is None
    assert (st.status, st.conditions) == ("Healthy", conditions)  # left as restored
    assert model.raw_status(st, T0 + 60, CFG, T0)[1] == "HeartbeatMissed"  # grace is now - started < 60
    transitions = [t for dt in range(60, 120, 5) if (t := model.evaluate(st, T0 + dt, CFG, T0)) is not None]
    assert [(t.from_status, t.to_status, t.at - T0) for t in transitions] == [("Healthy", "Unhealthy", 90.0)]


def test_restored_cluster_heard_during_grace_is_judged_at_once() -> None:
    st = model.from_sync_target(stored(), T0)
    for dt in range(10, 300, 5):
        if dt % 20 == 10:
            model.observe_heartbeat(st, heartbeat(T0 + dt), T0 + dt)
        assert model.raw_status(st, T0 + dt, CFG, T0) == ("Healthy", "AsExpected", ())
        assert model.evaluate(st, T0 + dt, CFG, T0) is None
    assert cond(st, "HeartbeatHealthy")[0] == "True"


def test_new_cluster_during_grace_is_judged_at_its_first_heartbeat() -> None:
    st = model.new_cluster("c1", T0 + 1)
    model.observe_heartbeat(st, heartbeat(T0 + 1), T0 + 1)
    tr = model.evaluate(st, T0 + 2, CFG, T0)
    assert tr is not None and tr.to_status == "Healthy"


def test_restored_unknown_without_heartbeat_stays_unknown() -> None:
    obj = SyncTarget(metadata=stored().metadata)
    obj.status.health = "Healthy"  # inconsistent: no heartbeat time
    st = model.from_sync_target(obj, T0)
    assert st.status == "Unknown" and st.last_heartbeat_received is None
    assert model.evaluate(st, T0 + 120, CFG, T0) is None


# --------------------------------------------------------------------------- conditions


def test_condition_transition_times_move_only_with_status() -> None:
    d = started()
    first = {c.type: c.last_transition_time for c in d.st.conditions}
    assert set(first.values()) == {rfc3339(T0)}
    objects = list(d.st.conditions)
    assert d.run(T0 + 300) == []
    assert all(a is b for a, b in zip(objects, d.st.conditions, strict=True))  # steady state: untouched
    d.every = None
    d.run(T0 + 400)  # last heartbeat at T0+300: late at +335, missed at +365, Unhealthy at +365
    hb_status, _, _, hb_ltt = cond(d.st, "HeartbeatHealthy")
    assert (hb_status, hb_ltt) == ("False", rfc3339(T0 + 365))
    assert cond(d.st, "SyncerReady")[3] == rfc3339(T0 + 365)
    assert cond(d.st, "Ready")[::3] == ("False", rfc3339(T0 + 365))
    d.run(T0 + 500)
    assert cond(d.st, "HeartbeatHealthy")[3] == rfc3339(T0 + 365)


def test_set_condition_keeps_transition_time_for_reason_changes() -> None:
    conds = cnd.initial_conditions(T0)
    assert cnd.set_condition(conds, cnd.HB, "True", "", "", T0 + 10)
    assert not cnd.set_condition(conds, cnd.HB, "True", "", "", T0 + 20)
    assert cnd.set_condition(conds, cnd.HB, "True", "HeartbeatLate", "late", T0 + 30)
    assert conds[cnd.HB].last_transition_time == rfc3339(T0 + 10)


# -------------------------------------------------------------------------- persistence


@pytest.mark.parametrize(
    ("cpu", "text"), [(8.0, "8"), (7.5, "7500m"), (0.25, "250m"), (0.0, "0"), (96.0, "96"), (1.0006, "1001m")]
)
def test_cpu_quantity(cpu: float, text: str) -> None:
    assert cnd.format_cpu(cpu) == text


@pytest.mark.parametrize(
    ("text", "value"), [("7500m", 7.5), ("8", 8.0), ("16Gi", 16 * 2**30), ("1k", 1000.0), ("1e3", 1000.0), ("x", 0.0)]
)
def test_parse_quantity(text: str, value: float) -> None:
    assert cnd.parse_quantity(text) == value


def test_sync_target_round_trip() -> None:
    st = model.new_cluster("c1", T0)
    cap = ResourceQuantities(cpu=7.5, memory=64 << 30, pods=110)
    used = ResourceQuantities(cpu=2.25, memory=3 << 30, pods=12)
    hb = heartbeat(
        T0 + 10,
        labels={"region": "eu", "zone": "eu-1"},
        capacity=cap,
        allocatable=cap,
        used=used,
        synced_resources=["apps/v1/deployments", "v1/services"],
        queue_depth=7,
        paused=True,
        syncer_version="v0.11.0",
    )
    model.observe_heartbeat(st, hb, T0 + 10)
    model.observe_sync(st, 100, 3, T0 + 10, CFG.error_window, CFG.interval)
    model.evaluate(st, T0 + 12, CFG, STARTED)
    obj = model.to_sync_target(st)
    wire = msgspec.json.decode(msgspec.json.encode(obj))
    assert wire["metadata"] == {"name": "c1", "labels": {"region": "eu", "zone": "eu-1"}}
    s = wire["status"]
    assert s["capacity"] == {"cpu": "7500m", "memory": str(64 << 30), "pods": "110"}
    assert s["used"] == {"cpu": "2250m", "memory": str(3 << 30), "pods": "12"}
    assert s["lastSyncerHeartbeatTime"] == "2026-11-26T10:00:10Z"
    assert (s["health"], s["healthReason"], s["syncPaused"], s["connected"]) == ("Healthy", "SyncPaused", True, True)
    assert (s["queueDepth"], s["errorRatio"], s["syncerVersion"]) == (7, 0.03, "v0.11.0")
    assert [c["type"] for c in s["conditions"]] == ["HeartbeatHealthy", "SyncerReady", "Ready"]

    back = model.from_sync_target(msgspec.json.decode(msgspec.json.encode(obj), type=SyncTarget), T0 + 100)
    for f in ("labels", "last_heartbeat", "capacity", "allocatable", "used", "synced_resources", "queue_depth"):
        assert getattr(back, f) == getattr(st, f), f
    assert (back.status, back.status_reason, back.paused, back.connected) == ("Healthy", "SyncPaused", True, True)
    assert back.last_heartbeat_received == back.last_heartbeat == T0 + 10
    assert back.conditions == st.conditions
    assert back.errors is None  # the error window starts empty
    assert model.to_sync_target(back).status == msgspec.structs.replace(obj.status, error_ratio=0.0)


def test_sync_target_before_any_heartbeat() -> None:
    obj = model.to_sync_target(model.new_cluster("c1", T0))
    assert (obj.status.capacity, obj.status.last_syncer_heartbeat_time, obj.status.health) == ({}, "", "Unknown")
    back = model.from_sync_target(obj, T0)
    assert back.status == "Unknown" and back.last_heartbeat is None


# -------------------------------------------------------------------------- error window


def test_error_window_drops_old_buckets() -> None:
    w = ErrorWindow(300.0, 5.0)
    assert w.slots == 60 and len(w.counts) == 120
    assert w.add(10, 1, 1000.0) and w.add(10, 2, 1004.9) and w.add(5, 5, 1005.0)
    assert w.buckets() == [(1000.0, 20, 3), (1005.0, 5, 5)]
    assert w.sums(1010.0) == (25, 8)
    assert w.sums(1010.0, window=10.0) == (5, 5)  # the last two buckets: 1005 and 1010
    w.advance(1300.0)  # bucket 1000 is 300 s old: out
    assert (w.total, w.failed, w.buckets()) == (5, 5, [(1005.0, 5, 5)])
    assert not w.add(1, 1, 1000.0)  # too old to count
    w.advance(1305.0)
    assert (w.total, w.failed, w.buckets()) == (0, 0, [])
    assert w.add(3, 0, 1305.0) and w.add(2, 2, 1300.0)  # late but inside the window
    w.advance(5000.0)  # far ahead: everything cleared at once
    assert (w.total, w.failed, w.buckets()) == (0, 0, [])


def test_error_ratio_does_not_change_the_state() -> None:
    st = model.new_cluster("c1", T0)
    model.observe_sync(st, 10, 5, T0, 300.0, 5.0)
    assert model.error_ratio(st, T0 + 299, 300.0) == 0.5
    assert model.error_ratio(st, T0 + 300, 300.0) == 0.0
    assert st.errors is not None and st.errors.total == 10


def test_window_is_rebuilt_when_its_size_changes() -> None:
    st = model.new_cluster("c1", T0)
    model.observe_sync(st, 10, 5, T0, 300.0, 5.0)
    model.observe_sync(st, 4, 0, T0, 60.0, 5.0)
    assert st.errors is not None and (st.errors.slots, st.errors.total) == (12, 4)


def test_every_condition_of_a_healthy_cluster_has_a_reason() -> None:
    conds = cnd.initial_conditions(T0)
    cnd.update_observed(conds, cnd.HB_OK, T0, 20.0, True, "", T0)
    assert [(c.type, c.status, c.reason) for c in conds[:2]] == [
        ("HeartbeatHealthy", "True", "HeartbeatReceived"),
        ("SyncerReady", "True", "SyncerConnected"),
    ]
    assert all(c.message for c in conds[:2])
