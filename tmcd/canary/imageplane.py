"""Sets the canary image on the canary clusters' Deployments and puts it back (I/O).

:class:`ImagePlane` drives a :class:`~tmcd.contracts.workloads.Workloads` adapter (the runtime's
Kubernetes one, through a factory) by the plan of :mod:`tmcd.canary.images`.  For an action it
reads every target cluster's image, writes the records with one compare-and-set *before* any
patch is sent, patches, lets the traffic change happen, then puts back the images of the
clusters that left.  Re-applying the same action after a crash reads the images again and finds
them set: nothing is recorded or patched twice.  The rollback engine calls :meth:`ImagePlane.restore`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import msgspec

from tmcd.bus import KvEntry
from tmcd.canary.images import ImageChanges, canary_image, merge, plan, record
from tmcd.contracts.traffic import ClusterAnnotations
from tmcd.contracts.workloads import ImageChanged, WorkloadError, WorkloadMissing, Workloads, WorkloadsFactory
from tmcd.resources.canary import CanaryRollout, CanaryRolloutStatus, StepAction, WorkloadImage

__all__ = ["ImagePlane", "Write"]

log = logging.getLogger("tmcd.canary")

T = TypeVar("T")
Write = Callable[[KvEntry[CanaryRollout], CanaryRolloutStatus], Awaitable[KvEntry[CanaryRollout] | None]]
"""Write a rollout's status with compare-and-set: the new entry, or None on a conflict."""


class ImagePlane:
    """The canary image on Deployments, through the adapter ``factory`` builds on first use."""

    def __init__(self, factory: WorkloadsFactory | None, clusters: ClusterAnnotations) -> None:
        self._factory, self._clusters = factory, clusters
        self._adapter: Workloads | None = None

    def error(self, r: CanaryRollout) -> str:
        """Why the rollout's canary image cannot be set here; empty when it can (or is not asked for)."""
        if canary_image(r) is not None and self._factory is None:
            return "setting the canary image needs the Kubernetes adapters, which this process was started without"
        return ""

    def _workloads(self) -> Workloads:
        if self._adapter is None:
            if self._factory is None:
                raise WorkloadError("setting or putting back images needs the Kubernetes adapters (none here)")
            self._adapter = self._factory(self._clusters)
        return self._adapter

    async def apply(
        self,
        entry: KvEntry[CanaryRollout],
        action: StepAction,
        write: Write,
        traffic: Callable[[], Awaitable[None]],
    ) -> tuple[KvEntry[CanaryRollout], ImageChanges] | None:
        """Canary images on the action's clusters (recorded first), then ``traffic()``, then the
        images of the clusters that left put back: the rollout as last written and the changes.
        None when the record write met a conflict (nothing was patched; read the rollout again).
        Raises WorkloadError."""
        r = entry.value
        p = plan(r, action)
        if p.empty:
            await traffic()
            return entry, ImageChanges(list(r.status.workload_images))
        if p.drop:  # finalize: the canary is stable, its image stays
            await traffic()
            return entry, ImageChanges([], kept=p.drop)
        wanted = canary_image(r)
        ns, dep = r.metadata.namespace, r.spec.workload_ref.name
        if p.target and wanted is not None:
            container, image = wanted
            w = self._workloads()
            images = await _all(w.image(c, ns, dep, container) for c in p.target)
            current = dict(zip(p.target, images, strict=True))
            changes = [x for c in p.target if (x := record(r, c, current[c])) is not None]
            if changes:  # recorded before any patch: a crash never leaves an unrecorded image
                status = msgspec.structs.replace(r.status, workload_images=merge(r.status.workload_images, changes))
                written = await write(entry, status)
                if written is None:
                    return None
                entry, r = written, written.value
            todo = [c for c in p.target if current[c] != image]
            await _all(w.set_image(c, ns, dep, container, image, expect=current[c]) for c in todo)
        await traffic()
        restored = await self._restore(ns, p.restore)
        keep = set(p.target)
        records = [
            x for x in r.status.workload_images if x.cluster in keep and x.state == "Canary" and x not in p.restore
        ]
        return entry, ImageChanges(records, set=records, restored=restored)

    async def restore(self, r: CanaryRollout) -> list[WorkloadImage]:
        """Put back every recorded canary image (the rollback's Restoring stage): the records with
        their new state (Restored, or Skipped with the reason).  Raises WorkloadError when a
        cluster could not be reached or refused (nothing is lost: the stage is applied again)."""
        ns = r.metadata.namespace
        todo = [x for x in r.status.workload_images if x.state == "Canary"]
        done = {(x.cluster, x.deployment, x.container): x for x in await self._restore(ns, todo)}
        return [done.get((x.cluster, x.deployment, x.container), x) for x in r.status.workload_images]

    async def _restore(self, ns: str, recs: Sequence[WorkloadImage]) -> list[WorkloadImage]:
        if not recs:
            return []
        w = self._workloads()
        return await _all(_restore_one(w, ns, x) for x in recs)

    async def close(self) -> None:
        """Release the adapter."""
        adapter, self._adapter = self._adapter, None
        if adapter is not None:
            await adapter.close()


async def _restore_one(w: Workloads, ns: str, rec: WorkloadImage) -> WorkloadImage:
    """Put ``rec.previous`` back where the container still runs the canary image."""
    try:
        await w.set_image(rec.cluster, ns, rec.deployment, rec.container, rec.previous, expect=rec.image)
    except ImageChanged as exc:  # someone else's image since: theirs wins
        why = f"it runs {exc.current}, set by someone else since; left as is"
        return msgspec.structs.replace(rec, state="Skipped", message=why)
    except WorkloadMissing as exc:  # nothing to put back
        return msgspec.structs.replace(rec, state="Skipped", message=str(exc))
    return msgspec.structs.replace(rec, state="Restored", message="")


async def _all(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Every call's result, run concurrently; one WorkloadError naming every failure."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for e in errors:
            if not isinstance(e, WorkloadError):
                raise e
        raise WorkloadError("; ".join(str(e) for e in errors))
    return [r for r in results if not isinstance(r, BaseException)]
