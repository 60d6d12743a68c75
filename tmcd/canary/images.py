"""The canary image on the canary clusters' Deployments: what an action changes, and the records (pure).

A rollout with ``spec.workloadRef.container`` and ``canaryImage`` runs the canary image on the
Deployment ``workloadRef.name`` of its canary clusters.  Every image tmcd sets is recorded in
``status.workloadImages`` (cluster, Deployment, container, the image set and the one it
replaced) *before* the patch is sent, so a crash never leaves a changed image without a record.
Per action (see :func:`plan`):

- ``clusters``, ``weight``, ``promote``: the action's clusters get the canary image before traffic
  moves; a recorded cluster that is no longer among them gets its previous image back after.
- ``stable``, ``reset``: every recorded cluster gets its previous image back, after traffic is stable.
- ``finalize``: the canary version is stable: the images stay, the records are dropped.

The rollback engine puts every recorded image back in its Restoring stage
(:mod:`tmcd.canary.imageplane` does the I/O for both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tmcd.resources.canary import CanaryRollout, StepAction, WorkloadImage

__all__ = [
    "ImageChanges",
    "ImagePlan",
    "canary_image",
    "kept_text",
    "merge",
    "plan",
    "record",
    "restored_text",
    "set_text",
]

WITH_CANARY = ("clusters", "weight", "promote")
"""Actions after which their clusters run the canary (and so its image)."""


def canary_image(r: CanaryRollout) -> tuple[str, str] | None:
    """(container, image) when the rollout sets the canary image, else None."""
    ref = r.spec.workload_ref
    if ref.container and ref.canary_image:
        return ref.container, ref.canary_image
    return None


@dataclass(frozen=True)
class ImagePlan:
    """What an action does to the images: clusters to give the canary image, records to put back,
    records to drop as they are (the images stay)."""

    target: list[str] = field(default_factory=list)
    restore: list[WorkloadImage] = field(default_factory=list)
    drop: list[WorkloadImage] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return not (self.target or self.restore or self.drop)


@dataclass(frozen=True)
class ImageChanges:
    """What an applied action did to the images."""

    records: list[WorkloadImage]
    """``status.workloadImages`` once the action is applied."""
    set: list[WorkloadImage] = field(default_factory=list)
    """The canary clusters' records (their Deployment runs the canary image)."""
    restored: list[WorkloadImage] = field(default_factory=list)
    """Records put back (Restored) or not (Skipped, with the reason)."""
    kept: list[WorkloadImage] = field(default_factory=list)
    """Records dropped with the canary image staying (the canary became stable)."""

    def text(self, r: CanaryRollout) -> str:
        """The changes in words for the step event (empty: none)."""
        return "; ".join(t for t in (set_text(r, self.set), restored_text(r, self.restored), kept_text(self.kept)) if t)

    def evidence(self) -> dict[str, Any]:
        """The changes per cluster for the step event's evidence (empty: none)."""
        out: dict[str, Any] = {}
        if self.set:
            out["images"] = {x.cluster: {"image": x.image, "previous": x.previous} for x in self.set}
        if self.restored:
            out["restoredImages"] = {x.cluster: {"image": x.previous, "state": x.state} for x in self.restored}
        if self.kept:
            out["keptImages"] = {x.cluster: x.image for x in self.kept}
        return out


def _matches(rec: WorkloadImage, r: CanaryRollout) -> bool:
    """The record is of the container the spec names now (a changed spec puts the old one back)."""
    wanted = canary_image(r)
    return wanted is not None and (rec.deployment, rec.container) == (r.spec.workload_ref.name, wanted[0])


def plan(r: CanaryRollout, action: StepAction) -> ImagePlan:
    """The image changes of ``action`` (see the module docstring); nothing once the rollback
    engine owns the rollout (RollingBack, RolledBack), which puts the images back itself."""
    if r.status.phase in ("RollingBack", "RolledBack"):
        return ImagePlan()
    records = [rec for rec in r.status.workload_images if rec.state == "Canary"]
    if action.kind == "finalize":
        return ImagePlan(drop=records)
    target = sorted(action.clusters) if action.kind in WITH_CANARY and canary_image(r) is not None else []
    keep = set(target)
    restore = [rec for rec in records if not (rec.cluster in keep and _matches(rec, r))]
    return ImagePlan(target=target, restore=restore)


def record(r: CanaryRollout, cluster: str, current: str) -> WorkloadImage | None:
    """The record to write before ``cluster``'s Deployment (whose container now runs ``current``)
    is given the canary image; None when the one there already says it."""
    wanted = canary_image(r)
    assert wanted is not None
    container, image = wanted
    old = next((x for x in r.status.workload_images if x.cluster == cluster and _matches(x, r)), None)
    previous = current
    if old is not None and old.state == "Canary" and current in (old.image, old.previous):
        previous = old.previous  # our own earlier canary image (a changed canaryImage), or not set yet
    new = WorkloadImage(
        cluster=cluster, deployment=r.spec.workload_ref.name, container=container, image=image, previous=previous
    )
    return None if new == old else new


def merge(records: Sequence[WorkloadImage], changes: Sequence[WorkloadImage]) -> list[WorkloadImage]:
    """``records`` with each cluster's record replaced by (or added from) ``changes``, by cluster."""
    by = {(x.cluster, x.deployment, x.container): x for x in changes}
    out = [by.pop((x.cluster, x.deployment, x.container), x) for x in records]
    return sorted([*out, *by.values()], key=lambda x: x.cluster)


def _where(r: CanaryRollout, recs: Sequence[WorkloadImage]) -> str:
    pairs = sorted({(x.deployment, x.container) for x in recs})
    return ", ".join(f"container {c} of Deployment {r.metadata.namespace}/{d}" for d, c in pairs)


def set_text(r: CanaryRollout, recs: Sequence[WorkloadImage]) -> str:
    """``canary image reg/web:2.0 on c1, c2 (container web of Deployment shop/web)``."""
    if not recs:
        return ""
    images = sorted({x.image for x in recs})
    clusters = ", ".join(x.cluster for x in recs)
    return f"canary image {', '.join(images)} on {clusters} ({_where(r, recs)})"


def restored_text(r: CanaryRollout, recs: Sequence[WorkloadImage]) -> str:
    """``image put back on c3 (reg/web:1.0); not put back on c4: ...`` (empty without records)."""
    back = [x for x in recs if x.state == "Restored"]
    skipped = [x for x in recs if x.state == "Skipped"]
    parts = []
    if back:
        parts.append("image put back on " + ", ".join(f"{x.cluster} ({x.previous})" for x in back))
    if skipped:
        parts.append("image not put back on " + "; ".join(f"{x.cluster}: {x.message}" for x in skipped))
    return "; ".join(parts)


def kept_text(recs: Sequence[WorkloadImage]) -> str:
    """``canary image reg/web:2.0 stays on c1, c2`` (empty without records)."""
    if not recs:
        return ""
    images = sorted({x.image for x in recs})
    return f"canary image {', '.join(images)} stays on {', '.join(x.cluster for x in recs)}"
