"""Kubernetes-facing pieces of cluster health: the three conditions, quantity strings and
RFC 3339 parsing.  Pure functions."""

from __future__ import annotations

import datetime as dt
import functools
import re

from tmcd.config import HealthConfig
from tmcd.contracts.messages import ResourceQuantities
from tmcd.resources.meta import Condition, rfc3339

HEARTBEAT_HEALTHY = "HeartbeatHealthy"
"""kcp's condition: True while heartbeats arrive within the heartbeat threshold."""
SYNCER_READY = "SyncerReady"
"""True while the syncer is connected to the control plane and heartbeating."""
READY = "Ready"
"""The published (debounced) summary: True when Healthy or Degraded, False when Unhealthy."""
CONDITION_TYPES: tuple[str, ...] = (HEARTBEAT_HEALTHY, SYNCER_READY, READY)
"""Condition types in the order a cluster's ``conditions`` list holds them."""
HB, SYNCER, READY_INDEX = 0, 1, 2
HB_NONE, HB_OK, HB_LATE, HB_MISSED = 0, 1, 2, 3
"""Heartbeat classes: none yet, on time, late, missed (older than the threshold)."""

NO_HEARTBEAT_REASON = "NoHeartbeat"
NO_HEARTBEAT_MESSAGE = "No heartbeat yet seen"
HEARTBEAT_MISSED_REASON = "ErrorHeartbeat"
"""kcp's reason for HeartbeatHealthy=False."""


@functools.lru_cache(maxsize=1024)
def stamp(ts: float) -> str:
    """:func:`rfc3339`, memoized: a sweep stamps every changed condition with the same ``now``."""
    return rfc3339(ts)


def no_heartbeat_since(ts: float) -> str:
    """kcp's message for a stale heartbeat."""
    return f"No heartbeat since {stamp(ts)}"


def initial_conditions(now: float) -> list[Condition]:
    """All three conditions Unknown: no heartbeat yet seen."""
    ltt = stamp(now)
    return [
        Condition(
            type=t,
            status="Unknown",
            reason=NO_HEARTBEAT_REASON,
            message=NO_HEARTBEAT_MESSAGE,
            last_transition_time=ltt,
        )
        for t in CONDITION_TYPES
    ]


def set_condition(conds: list[Condition], i: int, status: str, reason: str, message: str, now: float) -> bool:
    """Replace ``conds[i]`` if anything differs; its last_transition_time moves only when ``status`` does."""
    old = conds[i]
    if old.status == status and old.reason == reason and old.message == message:
        return False
    ltt = old.last_transition_time if old.status == status and old.last_transition_time else stamp(now)
    conds[i] = Condition(type=old.type, status=status, reason=reason, message=message, last_transition_time=ltt)
    return True


def update_observed(
    conds: list[Condition],
    hb: int,
    last_heartbeat: float | None,
    interval: float,
    connected: bool | None,
    conn_reason: str,
    now: float,
) -> None:
    """Set HeartbeatHealthy and SyncerReady from the heartbeat class and the connection state.

    HeartbeatHealthy as kcp: True ``HeartbeatReceived`` within the threshold, False
    ``ErrorHeartbeat`` "No heartbeat since ..." beyond it; True ``HeartbeatLate`` when late.
    SyncerReady: False when the syncer reports it is disconnected, Unknown when it is not heard
    from, else True ``SyncerConnected``.  Every condition has a reason, as Kubernetes requires.
    """
    since = no_heartbeat_since(last_heartbeat or 0.0) if hb in (HB_LATE, HB_MISSED) else ""
    if hb == HB_NONE:
        set_condition(conds, HB, "Unknown", NO_HEARTBEAT_REASON, NO_HEARTBEAT_MESSAGE, now)
    elif hb == HB_MISSED:
        set_condition(conds, HB, "False", HEARTBEAT_MISSED_REASON, since, now)
    elif hb == HB_LATE:
        set_condition(conds, HB, "True", "HeartbeatLate", f"{since}; expected every {interval:g}s", now)
    else:
        set_condition(conds, HB, "True", "HeartbeatReceived", "Heartbeats arrive on time", now)
    if connected is False:
        msg = conn_reason or "Syncer reports it is disconnected from the control plane"
        set_condition(conds, SYNCER, "False", "SyncerDisconnected", msg, now)
    elif hb == HB_NONE:
        set_condition(conds, SYNCER, "Unknown", NO_HEARTBEAT_REASON, NO_HEARTBEAT_MESSAGE, now)
    elif hb == HB_MISSED:
        set_condition(conds, SYNCER, "Unknown", "HeartbeatMissed", since, now)
    else:
        set_condition(conds, SYNCER, "True", "SyncerConnected", "Syncer is connected and heartbeating", now)


def status_message(
    reason: str,
    *,
    last_heartbeat: float | None,
    interval: float,
    conn_reason: str,
    ratio: float,
    queue_depth: int,
    cfg: HealthConfig,
) -> str:
    """Human-readable explanation of a status reason (for transitions and the Ready condition)."""
    if reason == "HeartbeatMissed":
        return no_heartbeat_since(last_heartbeat or 0.0)
    if reason == "HeartbeatLate":
        return f"{no_heartbeat_since(last_heartbeat or 0.0)}; expected every {interval:g}s"
    if reason == "SyncerDisconnected":
        return "Syncer is disconnected from the control plane" + (f": {conn_reason}" if conn_reason else "")
    if reason == "ErrorRatioHigh":
        return (
            f"{ratio:.1%} of syncs failed in the last {cfg.error_window:g}s (threshold {cfg.error_ratio_threshold:.1%})"
        )
    if reason == "QueueBackingUp":
        return f"Syncer queue depth {queue_depth} exceeds {cfg.max_queue_depth}"
    if reason == "SyncPaused":
        return "Syncing is paused; the syncer is heartbeating"
    if reason == "StartupGrace":
        return "tmcd started recently; waiting to hear from the syncer"
    if reason == "NoHeartbeat":
        return NO_HEARTBEAT_MESSAGE
    return "Syncer is heartbeating and syncing as expected"


def restore_conditions(stored: list[Condition], now: float) -> list[Condition]:
    """The stored conditions in :data:`CONDITION_TYPES` order; missing ones Unknown (no heartbeat)."""
    by_type = {c.type: c for c in stored}
    defaults = initial_conditions(now)
    return [by_type.get(d.type, d) for d in defaults]


def condition(conds: list[Condition], type_: str) -> Condition | None:
    """The condition of the given type, if present."""
    for c in conds:
        if c.type == type_:
            return c
    return None


# ---------------------------------------------------------------------------- quantities

_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
_QUANTITY = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-zA-Z]{0,2})\s*$")


def format_cpu(cores: float) -> str:
    """CPU cores as a Kubernetes quantity: ``"8"`` for whole cores, else millicores (``"7500m"``)."""
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def quantities_to_dict(q: ResourceQuantities) -> dict[str, str]:
    """``{"cpu": ..., "memory": bytes, "pods": count}`` as Kubernetes quantity strings."""
    return {"cpu": format_cpu(q.cpu), "memory": str(q.memory), "pods": str(q.pods)}


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity (``"7500m"``, ``"8"``, ``"16Gi"``, ``"1e3"``) as a number; 0.0 if unreadable."""
    m = _QUANTITY.match(text)
    if m is None or m.group(2) not in _SUFFIX:
        return 0.0
    return max(0.0, float(m.group(1)) * _SUFFIX[m.group(2)])


def quantities_from_dict(d: dict[str, str]) -> ResourceQuantities:
    """The inverse of :func:`quantities_to_dict` (missing or unreadable entries are 0)."""
    return ResourceQuantities(
        cpu=round(parse_quantity(d.get("cpu", "0")), 3),
        memory=round(parse_quantity(d.get("memory", "0"))),
        pods=round(parse_quantity(d.get("pods", "0"))),
    )


def parse_rfc3339(text: str) -> float | None:
    """An RFC 3339 timestamp (``2026-11-26T10:00:00Z``) as Unix seconds; None if empty or unreadable."""
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()
