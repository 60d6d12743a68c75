"""``describe canary``'s rollback sections: the last rollback (``status.rollback``) and the newest
revisions of the rollout's history.  Pure rendering of the object, the revisions and ``now``."""

from __future__ import annotations

from typing import Any

from tmcd.kubectl.describe import _field, _indent, _when
from tmcd.kubectl.output import NONE, cell, table
from tmcd.kubectl.revisions import HISTORY, rows

__all__ = ["HISTORY_SHOWN", "revisions_section", "rollback_section"]

HISTORY_SHOWN = 5
"""Revisions ``describe canary`` lists (``kubectl tmc history`` lists them all)."""
STAGES = ("Pending", "Reversing", "Restoring", "CleaningUp", "Completed", "Failed")
_SUB = 22


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _sub(label: str, value: Any) -> str:
    return "  " + _field(label, value, _SUB)


def _clusters(clusters: list[Any]) -> list[str]:
    if not clusters:
        return [_sub("Clusters", None)]
    out = []
    for c in map(_dict, clusters):
        w = c.get("canaryWeight")
        weight = f"{w}%" if isinstance(w, int) and not isinstance(w, bool) else "<unknown>"
        out.append([cell(c.get("cluster")), cell(c.get("state") or "Pending"), weight])
    return ["  Clusters:", *("    " + line for line in table(["CLUSTER", "STATE", "CANARY WEIGHT"], out).splitlines())]


def _stages(times: dict[str, Any], now: float) -> list[str]:
    if not times:
        return [_sub("Stages", None)]
    order = [s for s in STAGES if s in times] + sorted(s for s in times if s not in STAGES)
    width = max(len(s) for s in order) + 3
    return ["  Stages:", *(f"    {s + ':':<{width}}{_when(str(times[s] or ''), now)}" for s in order)]


def rollback_section(status: dict[str, Any], now: float) -> list[str]:
    """The rollout's last rollback: phase, trigger and reason, revisions, per-cluster progress, stages."""
    rb = _dict(status.get("rollback"))
    clusters = rb.get("clusters")
    if not rb:
        return [f"Rollback:  {NONE}"]
    return [
        "Rollback:",
        _sub("Phase", rb.get("phase") or "Pending"),
        _sub("Trigger", rb.get("trigger")),
        _sub("Reason", rb.get("reason")),
        _sub("From Revision", rb.get("fromRevision") or None),
        _sub("To Revision", rb.get("toRevision") or None),
        _sub("Started", _when(str(rb.get("startTime") or ""), now)),
        _sub("Ended", _when(str(rb.get("endTime") or ""), now)),
        _sub("Message", rb.get("message")),
        *_clusters(clusters if isinstance(clusters, list) else []),
        *_stages(_dict(rb.get("stageTimes")), now),
    ]


def revisions_section(
    revisions: list[dict[str, Any]] | None, now: float, problem: str = "", command: str = "kubectl tmc history"
) -> list[str]:
    """The newest :data:`HISTORY_SHOWN` revisions (given newest first), and how many more there are
    (``command`` lists them all)."""
    if problem:
        return [f"Revisions:  <unknown> ({problem})"]
    if not revisions:
        return [f"Revisions:  {NONE}"]
    shown = revisions[:HISTORY_SHOWN]
    lines = ["Revisions:", *_indent(table([h for h, _fn in HISTORY], rows(shown, now)))]
    if len(revisions) > HISTORY_SHOWN:
        lines.append(f"  ({len(revisions) - HISTORY_SHOWN} older: {command})")
    return lines
