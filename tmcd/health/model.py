"""The health of one cluster, from its syncer's heartbeats, connection events and sync outcomes.

Pure: no I/O, no clock, no logging; time comes in as ``now`` (Unix seconds).  A cluster's
:class:`ClusterHealth` is mutable, slotted state that the functions here update in place
((previous state, inputs, now) -> new state), so a sweep where nothing changed builds no new objects
(no state, conditions or transitions): ~2 us per cluster.

Statuses and checks (boundaries: ``>`` for every limit, ``>=`` for every hold time):

* **Unknown** -- no heartbeat ever (``NoHeartbeat``), or tmcd started less than
  ``startup_grace`` ago and has not heard from the cluster since (``StartupGrace``).
* **Unhealthy** -- heartbeat age > ``heartbeat_threshold`` (``HeartbeatMissed``), or the syncer
  reports it is disconnected or reconnecting (``SyncerDisconnected``).
* **Degraded** -- sync error ratio over ``error_window`` > ``error_ratio_threshold`` with at least
  :data:`MIN_SAMPLE` syncs in the window (``ErrorRatioHigh``: 1 failure out of 2 says nothing);
  ``queue_depth > max_queue_depth`` while not paused (``QueueBackingUp``); heartbeat age >
  ``1.5 x interval + 1 s`` (``HeartbeatLate``).
* **Healthy** -- otherwise (``AsExpected``; ``SyncPaused`` when the syncer reports syncing is
  paused: a paused syncer still heartbeats and is healthy, and its growing queue is expected).

Hysteresis: the published ``status`` moves to a worse (Healthy < Degraded < Unhealthy) status once
the raw status has been continuously worse than it for ``failure_threshold`` seconds, and to a
better one once it has been continuously better for ``success_threshold`` -- measured from the
first evaluation that saw it, and the status published is the raw status at that moment (a
heartbeat loss goes Healthy -> Unhealthy at ~threshold + failure_threshold, not via Degraded).
A raw status equal to the published one (or on its other side) restarts the clock, so a cluster
flapping faster than the thresholds never changes.  Unknown is "no judgement": from Unknown the
first known status applies at once (a new healthy cluster is Healthy at its first heartbeat); a
raw Unknown (startup grace) never replaces a known published status.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tmcd.config import HealthConfig
from tmcd.contracts.messages import ConnectionEvent, HealthStatus, ResourceQuantities, SyncerHeartbeat
from tmcd.health import conditions as cnd
from tmcd.health.window import ErrorWindow
from tmcd.resources.meta import Condition, ObjectMeta, rfc3339
from tmcd.resources.synctarget import SyncTarget, SyncTargetStatus

MIN_SAMPLE = 20
"""Syncs the error window must hold before the error ratio can degrade a cluster."""
LATE_FACTOR = 1.5
LATE_SLACK = 1.0
"""A heartbeat is late when its age exceeds ``LATE_FACTOR x interval + LATE_SLACK`` seconds."""
DEFAULT_INTERVAL = 20.0
"""kcp's syncer heartbeat period, assumed until a heartbeat says otherwise."""

RANK: dict[str, int] = {"Healthy": 0, "Degraded": 1, "Unhealthy": 2}
"""Badness of the known statuses."""
_ZERO = ResourceQuantities()
_NONE, _OK, _LATE, _MISSED = cnd.HB_NONE, cnd.HB_OK, cnd.HB_LATE, cnd.HB_MISSED

Raw = tuple[HealthStatus, str, tuple[str, ...]]
_HEALTHY: Raw = ("Healthy", "AsExpected", ())
_PAUSED: Raw = ("Healthy", "SyncPaused", ())
_NO_HEARTBEAT: Raw = ("Unknown", "NoHeartbeat", ())
_GRACE: Raw = ("Unknown", "StartupGrace", ())


@dataclass(slots=True, kw_only=True, eq=False)
class ClusterHealth:
    """Everything the model knows about one cluster; updated in place by this module's functions."""

    name: str
    first_seen: float
    """When tmcd first knew of the cluster (or restored it)."""
    labels: dict[str, str] = field(default_factory=dict)
    last_heartbeat: float | None = None
    """The last heartbeat's own timestamp (the syncer's clock); None before the first."""
    last_heartbeat_received: float | None = None
    """When tmcd received the last heartbeat (tmcd's clock); all ages are measured from this."""
    heartbeat_interval: float = DEFAULT_INTERVAL
    """The period the syncer says it heartbeats at."""
    sequence: int = 0
    connected: bool | None = None
    """Syncer's connection to the control plane; None = not reported yet."""
    connected_at: float = 0.0
    """Payload timestamp of the message that set ``connected`` (older messages do not override it)."""
    conn_reason: str = ""
    queue_depth: int = 0
    paused: bool = False
    capacity: ResourceQuantities = _ZERO
    allocatable: ResourceQuantities = _ZERO
    used: ResourceQuantities = _ZERO
    synced_resources: list[str] = field(default_factory=list)
    syncer_version: str = ""
    errors: ErrorWindow | None = None
    """Sync totals and failures per bucket; None until the first sync is observed."""
    status: HealthStatus = "Unknown"
    """The published status."""
    status_reason: str = "NoHeartbeat"
    status_since: float = 0.0
    candidate: HealthStatus = "Unknown"
    """The raw status at the last evaluation."""
    candidate_since: float = 0.0
    """Since when the raw status has been continuously on the candidate's side of ``status``."""
    candidate_reason: str = "NoHeartbeat"
    conditions: list[Condition] = field(default_factory=list)
    """HeartbeatHealthy, SyncerReady and Ready, in that order."""
    failing: tuple[str, ...] = ()
    """Checks failing at the last evaluation (raw, before hysteresis)."""
    cond_key: int = -1
    """Inputs the HeartbeatHealthy/SyncerReady conditions were last computed from (-1: recompute)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of a cluster's published status."""

    cluster: str
    from_status: HealthStatus
    to_status: HealthStatus
    reason: str
    message: str
    failing: tuple[str, ...]
    at: float


def new_cluster(name: str, now: float) -> ClusterHealth:
    """A cluster just heard of: Unknown, every condition Unknown ("No heartbeat yet seen")."""
    return ClusterHealth(
        name=name,
        first_seen=now,
        status_since=now,
        candidate_since=now,
        conditions=cnd.initial_conditions(now),
    )


# ------------------------------------------------------------------------------ inputs


def observe_heartbeat(state: ClusterHealth, hb: SyncerHeartbeat, now: float) -> bool:
    """Record a heartbeat received at ``now``; False (ignored) if older than the last one seen.

    ``now`` should be when the message was received (for a replayed message, its publish time).
    """
    if state.last_heartbeat is not None and hb.timestamp < state.last_heartbeat:
        return False
    state.last_heartbeat = hb.timestamp
    state.last_heartbeat_received = now
    state.heartbeat_interval = hb.interval_seconds
    state.sequence = hb.sequence
    if hb.timestamp >= state.connected_at:
        state.connected_at = hb.timestamp
        if hb.connected != state.connected:
            state.connected = hb.connected
            if hb.connected:
                state.conn_reason = ""
    if hb.labels and hb.labels != state.labels:
        state.labels = dict(hb.labels)
    state.capacity, state.allocatable, state.used = hb.capacity, hb.allocatable, hb.used
    state.queue_depth = hb.queue_depth
    state.paused = hb.paused
    if hb.synced_resources != state.synced_resources:
        state.synced_resources = list(hb.synced_resources)
    state.syncer_version = hb.syncer_version
    state.cond_key = -1
    return True


def observe_connection(state: ClusterHealth, ev: ConnectionEvent, now: float) -> bool:
    """Record a connection change; "reconnecting" counts as disconnected.  False if older than what we know.

    ``now`` is unused (the payload timestamp orders connection reports); kept for symmetry.
    """
    if ev.timestamp < state.connected_at:
        return False
    state.connected_at = ev.timestamp
    state.connected = ev.state == "connected"
    if ev.state == "reconnecting":
        state.conn_reason = ev.reason or f"reconnecting (attempt {ev.attempt})"
    else:
        state.conn_reason = ev.reason
    state.cond_key = -1
    return True


def observe_sync(state: ClusterHealth, total: int, failed: int, now: float, window: float, bucket: float) -> None:
    """Count ``total`` syncs, ``failed`` of them failed, at ``now`` into the error window.

    The window is (re)made with ``window``/``bucket`` seconds when absent or when they change.
    """
    w = state.errors
    if w is None or w.bucket != bucket or w.window != window:
        w = state.errors = ErrorWindow(window, bucket)
    w.add(total, failed, now)


def error_ratio(state: ClusterHealth, now: float, window: float) -> float:
    """Failed / total syncs in the last ``window`` seconds (whole buckets); 0.0 without syncs."""
    if state.errors is None:
        return 0.0
    total, failed = state.errors.sums(now, window)
    return failed / total if total else 0.0


# -------------------------------------------------------------------------- evaluation


def _heartbeat_class(state: ClusterHealth, now: float, cfg: HealthConfig) -> int:
    received = state.last_heartbeat_received
    if received is None:
        return _NONE
    age = now - received
    if age > cfg.heartbeat_threshold:
        return _MISSED
    if age > state.heartbeat_interval * LATE_FACTOR + LATE_SLACK:
        return _LATE
    return _OK


def _raw(state: ClusterHealth, hb: int, now: float, cfg: HealthConfig, started_at: float) -> Raw:
    received = state.last_heartbeat_received
    if received is None:
        return _NO_HEARTBEAT
    if received < started_at and now - started_at < cfg.startup_grace:
        return _GRACE
    errors_high = False
    w = state.errors
    if w is not None and w.total >= MIN_SAMPLE:
        total, failed = w.sums(now)
        errors_high = total >= MIN_SAMPLE and failed > cfg.error_ratio_threshold * total
    queue_high = not state.paused and state.queue_depth > cfg.max_queue_depth
    disconnected = state.connected is False
    if hb == _OK and not (errors_high or queue_high or disconnected):
        return _PAUSED if state.paused else _HEALTHY
    failing: list[str] = []
    reasons: list[str] = []
    if hb == _MISSED:
        failing.append(cnd.HEARTBEAT_HEALTHY)
        reasons.append("HeartbeatMissed")
    if disconnected:
        failing.append(cnd.SYNCER_READY)
        reasons.append("SyncerDisconnected")
    unhealthy = bool(reasons)
    if errors_high:
        failing.append("ErrorRatio")
        reasons.append("ErrorRatioHigh")
    if queue_high:
        failing.append("QueueDepth")
        reasons.append("QueueBackingUp")
    if hb == _LATE:
        failing.append(cnd.HEARTBEAT_HEALTHY)
        reasons.append("HeartbeatLate")
    return ("Unhealthy" if unhealthy else "Degraded"), reasons[0], tuple(failing)


def raw_status(state: ClusterHealth, now: float, cfg: HealthConfig, started_at: float) -> Raw:
    """The status the checks give at ``now``, before hysteresis: (status, reason, failing checks).

    Heartbeat age is ``now - last_heartbeat_received`` -- tmcd's receipt time, not the payload
    timestamp -- so a syncer whose clock is skewed is judged by when tmcd hears from it, and
    both ends of the subtraction come from the same clock.  Does not change ``state``.
    """
    return _raw(state, _heartbeat_class(state, now, cfg), now, cfg, started_at)


def _message(state: ClusterHealth, reason: str, now: float, cfg: HealthConfig) -> str:
    return cnd.status_message(
        reason,
        last_heartbeat=state.last_heartbeat,
        interval=state.heartbeat_interval,
        conn_reason=state.conn_reason,
        ratio=error_ratio(state, now, cfg.error_window),
        queue_depth=state.queue_depth,
        cfg=cfg,
    )


def _set_ready(state: ClusterHealth, message: str, now: float) -> None:
    s = state.status
    ready = "Unknown" if s == "Unknown" else "False" if s == "Unhealthy" else "True"
    cnd.set_condition(state.conditions, cnd.READY_INDEX, ready, state.status_reason, message, now)


def evaluate(state: ClusterHealth, now: float, cfg: HealthConfig, started_at: float) -> Transition | None:
    """Judge the cluster at ``now``: update its conditions, candidate and (after the hold) status.

    Returns a :class:`Transition` only when the published status changes.  HeartbeatHealthy and
    SyncerReady follow the raw observations at once (as kcp's do); Ready follows the published
    status (as Karmada's thresholded Ready does).  A change of reason within the same status
    (e.g. AsExpected -> SyncPaused) updates ``status_reason`` and Ready without a transition.
    During startup grace the conditions are left as restored.
    """
    w = state.errors
    if w is not None and w.total:
        w.advance(now)
    hb = _heartbeat_class(state, now, cfg)
    status, reason, failing = _raw(state, hb, now, cfg, started_at)
    state.failing = failing
    if reason != "StartupGrace":
        key = hb * 3 + (0 if state.connected is None else 1 if state.connected else 2)
        if key != state.cond_key:
            cnd.update_observed(
                state.conditions,
                hb,
                state.last_heartbeat,
                state.heartbeat_interval,
                state.connected,
                state.conn_reason,
                now,
            )
            state.cond_key = key
    current = state.status
    if status == current:
        if state.candidate != status:
            state.candidate, state.candidate_since = status, now
        state.candidate_reason = reason
        if reason != state.status_reason:
            state.status_reason = reason
            _set_ready(state, _message(state, reason, now, cfg), now)
        return None
    if status == "Unknown":  # no judgement: the published status stands
        if state.candidate != status:
            state.candidate, state.candidate_since = status, now
        state.candidate_reason = reason
        return None
    if current != "Unknown":
        worse = RANK[status] > RANK[current]
        cand = state.candidate
        if cand == "Unknown" or cand == current or (RANK[cand] > RANK[current]) != worse:
            state.candidate_since = now
        state.candidate, state.candidate_reason = status, reason
        hold = cfg.failure_threshold if worse else cfg.success_threshold
        if now - state.candidate_since < hold:
            return None
    else:
        state.candidate, state.candidate_since, state.candidate_reason = status, now, reason
    message = _message(state, reason, now, cfg)
    state.status, state.status_reason, state.status_since = status, reason, now
    _set_ready(state, message, now)
    return Transition(state.name, current, status, reason, message, failing, now)


def should_forget(state: ClusterHealth, now: float, cfg: HealthConfig) -> bool:
    """True when no heartbeat has been received (or, with none ever, since first seen) for > ``forget_after``."""
    last = state.last_heartbeat_received
    return now - (state.first_seen if last is None else last) > cfg.forget_after


# ------------------------------------------------------------------------- persistence


def to_sync_target(state: ClusterHealth) -> SyncTarget:
    """The cluster as a SyncTarget for the registry (error ratio as of the last evaluation)."""
    w = state.errors
    ratio = w.failed / w.total if w is not None and w.total else 0.0
    seen = state.last_heartbeat is not None
    return SyncTarget(
        metadata=ObjectMeta(name=state.name, labels=dict(state.labels)),
        status=SyncTargetStatus(
            capacity=cnd.quantities_to_dict(state.capacity) if seen else {},
            allocatable=cnd.quantities_to_dict(state.allocatable) if seen else {},
            used=cnd.quantities_to_dict(state.used) if seen else {},
            last_syncer_heartbeat_time=rfc3339(state.last_heartbeat) if state.last_heartbeat is not None else "",
            synced_resources=list(state.synced_resources),
            conditions=list(state.conditions),
            health=state.status,
            health_reason=state.status_reason,
            sync_paused=state.paused,
            connected=bool(state.connected),
            queue_depth=state.queue_depth,
            error_ratio=round(ratio, 4),
            syncer_version=state.syncer_version,
        ),
    )


def from_sync_target(st: SyncTarget, now: float) -> ClusterHealth:
    """Restore a cluster after a restart from its stored SyncTarget.

    The stored heartbeat time doubles as the receipt time (the best tmcd knows), the error
    window starts empty, the status and candidate hold since ``now``; without a stored
    heartbeat the cluster is Unknown.
    """
    s = st.status
    last = cnd.parse_rfc3339(s.last_syncer_heartbeat_time)
    status: HealthStatus = s.health if last is not None else "Unknown"
    reason = s.health_reason if last is not None else "NoHeartbeat"
    return ClusterHealth(
        name=st.metadata.name,
        first_seen=now,
        labels=dict(st.metadata.labels),
        last_heartbeat=last,
        last_heartbeat_received=last,
        connected=s.connected if last is not None else None,
        connected_at=last or 0.0,
        queue_depth=s.queue_depth,
        paused=s.sync_paused,
        capacity=cnd.quantities_from_dict(s.capacity),
        allocatable=cnd.quantities_from_dict(s.allocatable),
        used=cnd.quantities_from_dict(s.used),
        synced_resources=list(s.synced_resources),
        syncer_version=s.syncer_version,
        status=status,
        status_reason=reason,
        status_since=now,
        candidate=status,
        candidate_since=now,
        candidate_reason=reason,
        conditions=cnd.restore_conditions(s.conditions, now),
    )
