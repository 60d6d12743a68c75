"""Watch mode's decisions (pure): what a cluster's CR does to tmcd's store, and what goes back.

The kube agent (:mod:`tmcd.kube.agent`) lists and watches CanaryRollouts and AnalysisTemplates
in a Kubernetes API server and mirrors them into tmcd's store; tmcd keeps owning their status
and writes it back to the CR.  This module decides, on plain JSON objects, with the time as an
argument: whether a CR creates, updates or leaves alone a stored object (and refuses to touch
one tmcd did not mirror), which status patch the CR needs, and which core/v1 Event a phase
change makes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tmcd.resources.meta import rfc3339

__all__ = [
    "MIRRORED_ANNOTATION",
    "MIRRORED_LABEL",
    "Decision",
    "decide",
    "phase_event",
    "refusal_event",
    "status_patch",
    "store_body",
]

MIRRORED_LABEL = "tmc.kcp.io/mirrored"
"""Label (value ``"true"``) on every object tmcd mirrored from a cluster (``kubectl tmc get -l`` finds them)."""
MIRRORED_ANNOTATION = "tmc.kcp.io/mirrored-from"
"""Annotation on every mirrored object: the CR's origin as ``<context or "default">/<uid>``."""
WARNING_PHASES = ("RolledBack", "Degraded")
"""Phases whose Event is a Warning (and Paused, when analysis paused it)."""
ANALYSIS_PAUSES = ("InconclusiveAnalysis",)
COMPONENT = "tmcd"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""Not mirrored: kubectl's copy of the whole object, spec included, would double its size in tmcd."""

Obj = dict[str, Any]
Action = Literal["create", "update", "skip", "refuse"]


def mirrored(stored: Mapping[str, Any]) -> bool:
    """True when a stored object (as JSON) was mirrored from a cluster."""
    meta = stored.get("metadata") or {}
    return (meta.get("labels") or {}).get(MIRRORED_LABEL) == "true" or MIRRORED_ANNOTATION in (
        meta.get("annotations") or {}
    )


def store_body(cr: Mapping[str, Any], origin: str) -> Obj:
    """The object to store for a CR: its apiVersion, kind, name, namespace, labels, annotations and
    spec (never its status, which tmcd owns), marked as mirrored from ``origin``."""
    meta = cr.get("metadata") or {}
    labels = {**(meta.get("labels") or {}), MIRRORED_LABEL: "true"}
    uid = str(meta.get("uid", ""))
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    annotations[MIRRORED_ANNOTATION] = f"{origin or 'default'}/{uid}"
    out: Obj = {
        "apiVersion": cr.get("apiVersion", ""),
        "kind": cr.get("kind", ""),
        "metadata": {
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "labels": labels,
            "annotations": annotations,
        },
    }
    if "spec" in cr:
        out["spec"] = cr["spec"]
    return out


@dataclass(frozen=True)
class Decision:
    """What to do with one CR: ``action`` and, for ``refuse``, why."""

    action: Action
    reason: str = ""


def decide(body: Mapping[str, Any], stored: Mapping[str, Any] | None) -> Decision:
    """What a CR (as :func:`store_body` made it) does to the stored object (JSON, or None when absent).

    Equal spec, labels and annotations: ``skip`` (the watch event of tmcd's own status write
    lands here, so it never writes again)."""
    if stored is None:
        return Decision("create")
    if not mirrored(stored):
        return Decision("refuse", "a rollout of that name exists in tmcd and was not created from the cluster")
    smeta, bmeta = stored.get("metadata") or {}, body.get("metadata") or {}
    same = (
        _normal(stored.get("spec")) == _normal(body.get("spec"))
        and (smeta.get("labels") or {}) == (bmeta.get("labels") or {})
        and (smeta.get("annotations") or {}) == (bmeta.get("annotations") or {})
    )
    return Decision("skip" if same else "update")


def _normal(x: Any) -> Any:
    """Drop empty values, so that a stored spec (defaults omitted) compares equal to the CR's."""
    if isinstance(x, dict):
        return {k: n for k, v in x.items() if (n := _normal(v)) not in (None, {}, [], "")}
    if isinstance(x, list):
        return [_normal(v) for v in x]
    return x


def status_patch(stored_status: Mapping[str, Any], cr: Mapping[str, Any]) -> Obj | None:
    """The merge patch that makes the CR's status the stored one, or None when they are equal.

    The whole status is sent; keys the CR has and the store no longer has are nulled (a merge
    patch removes them)."""
    current = cr.get("status") or {}
    if _normal(dict(stored_status)) == _normal(current):
        return None
    status: Obj = {k: None for k in current if k not in stored_status}
    status.update(stored_status)
    return {"status": status}


def phase_event(
    cr: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any], now: float, origin: str = COMPONENT
) -> Obj | None:
    """The core/v1 Event for a phase change between two statuses (JSON), or None when the phase stayed."""
    before, after = str(old.get("phase") or "Pending"), str(new.get("phase") or "Pending")
    if before == after:
        return None
    warning = after in WARNING_PHASES or (after == "Paused" and new.get("pauseReason") in ANALYSIS_PAUSES)
    message = str(new.get("message") or f"phase {before} -> {after}")
    return _event(cr, after, message, "Warning" if warning else "Normal", now, origin)


def refusal_event(cr: Mapping[str, Any], reason: str, now: float) -> Obj:
    """The Warning Event for a CR tmcd will not mirror."""
    return _event(cr, "NotMirrored", f"tmcd does not run this object: {reason}", "Warning", now, COMPONENT)


def _event(cr: Mapping[str, Any], reason: str, message: str, type_: str, now: float, origin: str) -> Obj:
    meta = cr.get("metadata") or {}
    name, ns = str(meta.get("name", "")), str(meta.get("namespace", ""))
    ts = rfc3339(now)
    # a unique, stable name per (object version, reason, time), as kubelet-style "<name>.<hex>"
    digest = hashlib.sha256(f"{meta.get('uid')}/{meta.get('resourceVersion')}/{reason}/{now}".encode()).hexdigest()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{digest[:16]}", "namespace": ns},
        "involvedObject": {
            "apiVersion": cr.get("apiVersion", ""),
            "kind": cr.get("kind", ""),
            "name": name,
            "namespace": ns,
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "count": 1,
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "source": {"component": origin},
        "reportingComponent": origin,
        "reportingInstance": origin,
    }
