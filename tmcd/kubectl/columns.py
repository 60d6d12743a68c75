"""Table columns per kind for ``kubectl tmc get`` (``-o wide`` adds the wide ones)."""

from __future__ import annotations

from tmcd.kubectl.output import age

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tmcd.kubectl.output import Column


def _meta(o: dict[str, Any]) -> dict[str, Any]:
    m = o.get("metadata")
    return m if isinstance(m, dict) else {}


def _status(o: dict[str, Any]) -> dict[str, Any]:
    s = o.get("status")
    return s if isinstance(s, dict) else {}


def _spec(o: dict[str, Any]) -> dict[str, Any]:
    s = o.get("spec")
    return s if isinstance(s, dict) else {}


def _label(o: dict[str, Any], *keys: str) -> str:
    labels = _meta(o).get("labels") or {}
    for k in keys:
        if labels.get(k):
            return str(labels[k])
    return ""


def memory(q: str) -> str:
    """Bytes as a binary quantity (``512Gi``) when it is a plain byte count."""
    if not q.isdigit():
        return q
    n = int(q)
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size:
            v = n / size
            return f"{v:.0f}{unit}" if v >= 10 or v == int(v) else f"{v:.1f}{unit}"
    return q


NAME: Column = ("NAME", lambda o, _n: _meta(o).get("name"))
AGE: Column = ("AGE", lambda o, now: age(str(_meta(o).get("creationTimestamp") or ""), now))


def _heartbeat(o: dict[str, Any], now: float) -> str:
    ts = str(_status(o).get("lastSyncerHeartbeatTime") or "")
    return age(ts, now) if ts else ""


CLUSTERS: list[Column] = [
    NAME,
    ("STATUS", lambda o, _n: _status(o).get("health") or "Unknown"),
    ("REGION", lambda o, _n: _label(o, "region", "topology.kubernetes.io/region")),
    ("PAUSED", lambda o, _n: bool(_status(o).get("syncPaused", False))),
    ("QUEUE", lambda o, _n: int(_status(o).get("queueDepth") or 0)),
    ("LAST HEARTBEAT", _heartbeat),
    AGE,
]
CLUSTERS_WIDE: list[Column] = [
    ("ZONE", lambda o, _n: _label(o, "zone", "topology.kubernetes.io/zone")),
    ("PROVIDER", lambda o, _n: _label(o, "provider")),
    ("CPU", lambda o, _n: (_status(o).get("capacity") or {}).get("cpu")),
    ("MEMORY", lambda o, _n: memory(str((_status(o).get("capacity") or {}).get("memory") or ""))),
    ("VERSION", lambda o, _n: _status(o).get("syncerVersion")),
]


def _selected(o: dict[str, Any]) -> list[str]:
    return [str(s.get("cluster", "")) for s in _status(o).get("selectedClusters") or []]


PLACEMENTS: list[Column] = [
    NAME,
    ("PHASE", lambda o, _n: _status(o).get("phase")),
    ("POLICY", lambda o, _n: _spec(o).get("policy") or "Spread"),
    ("SELECTED", lambda o, _n: len(_selected(o))),
    AGE,
]
PLACEMENTS_WIDE: list[Column] = [("CLUSTERS", lambda o, _n: _selected(o))]


def step_label(status: dict[str, Any], total: int) -> str:
    """The current step as Argo Rollouts shows it and the status message says it, 1-based:
    ``3/7`` while ``currentStepIndex`` is 2; ``0/7`` before the rollout starts, ``7/7`` when done."""
    idx = status.get("currentStepIndex") or 0
    phase = status.get("phase") or "Pending"
    if phase == "Pending" or not isinstance(idx, int) or isinstance(idx, bool) or idx < 0 or total == 0:
        return f"0/{total}"
    if phase == "Succeeded":
        return f"{total}/{total}"
    return f"{min(idx + 1, total)}/{total}"


def _step(o: dict[str, Any]) -> str:
    steps = _spec(o).get("steps")
    return step_label(_status(o), len(steps) if isinstance(steps, list) else 0)


CANARIES: list[Column] = [
    NAME,
    ("PHASE", lambda o, _n: _status(o).get("phase")),
    ("STEP", lambda o, _n: _step(o)),
    ("WEIGHT", lambda o, _n: int(_status(o).get("currentWeight") or 0)),
    AGE,
]


def _applied(o: dict[str, Any]) -> int | None:
    w = _status(o).get("appliedWeight")
    return w if isinstance(w, int) and not isinstance(w, bool) else None  # null until the router reports


def _version(o: dict[str, Any], key: str) -> Any:
    """The version the status describes; the spec's before the controller has written one."""
    return _status(o).get(key) or _spec(o).get(key)


CANARIES_WIDE: list[Column] = [
    ("APPLIED", lambda o, _n: _applied(o)),
    ("CLUSTERS", lambda o, _n: _status(o).get("canaryClusters")),
    ("STABLE", lambda o, _n: _version(o, "stableVersion")),
    ("CANARY", lambda o, _n: _version(o, "canaryVersion")),
]
"""``-o wide``: the weight the router reports applied (WEIGHT is the one set), the canary clusters, and
the versions."""

REVISIONS: list[Column] = [
    NAME,
    ("ROLLOUT", lambda o, _n: _spec(o).get("rollout")),
    ("REVISION", lambda o, _n: _spec(o).get("revision")),
    ("PHASE", lambda o, _n: _status(o).get("phase")),
    AGE,
]

BY_KIND: dict[str, tuple[list[Column], list[Column]]] = {
    "SyncTarget": (CLUSTERS, CLUSTERS_WIDE),
    "Placement": (PLACEMENTS, PLACEMENTS_WIDE),
    "CanaryRollout": (CANARIES, CANARIES_WIDE),
    "RolloutRevision": (REVISIONS, []),
}
DEFAULT: tuple[list[Column], list[Column]] = ([NAME, AGE], [])
