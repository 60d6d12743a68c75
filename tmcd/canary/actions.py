"""What happens once the agent has applied a recorded action (pure)."""

from __future__ import annotations

import msgspec

from tmcd.canary.images import ImageChanges
from tmcd.canary.model import Note
from tmcd.resources.canary import CanaryRollout, CanaryRolloutStatus
from tmcd.resources.meta import rfc3339

__all__ = ["action_applied"]


def action_applied(
    r: CanaryRollout, now: float, images: ImageChanges | None = None
) -> tuple[CanaryRolloutStatus, Note]:
    """The status once the agent has applied ``status.action``, and the event saying so; ``images``:
    what the action did to the canary image (the records become ``status.workloadImages``)."""
    a = r.status.action
    if a is None or a.state != "Applying":
        raise ValueError("no action is being applied")
    weight = a.weight if a.kind in ("clusters", "weight", "promote") else 0
    st = msgspec.structs.replace(
        r.status,
        action=msgspec.structs.replace(a, state="Applied"),
        current_weight=weight,
        canary_clusters=list(a.clusters),
        progress_time=rfc3339(now),
    )
    if images is not None:
        st = msgspec.structs.replace(st, workload_images=images.records)
    where = f"{len(a.clusters)} cluster(s)" if a.clusters else "every cluster"
    text = {
        "clusters": f"canary clusters: {', '.join(a.clusters)} at {a.weight}%",
        "weight": f"canary weight {a.weight}% on {where}",
        "promote": f"canary weight 100% on {where}",
        "finalize": "canary version is stable; all traffic on it",
        "stable": "all traffic back to stable",
        "reset": "all traffic back to stable before the restart",
    }[a.kind]
    step = f"step {a.step_index + 1}: " if a.step_index >= 0 else ""
    extra = images.text(r) if images is not None else ""
    note = Note(
        "step",
        f"{step}applied {text}{f'; {extra}' if extra else ''}",
        {
            "action": a.kind,
            "stepIndex": a.step_index,
            "weight": a.weight,
            "clusters": list(a.clusters),
            "generation": a.generation,
            **(images.evidence() if images is not None else {}),
        },
    )
    return st, note
