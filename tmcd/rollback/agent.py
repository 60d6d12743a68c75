"""The rollback engine: drives every RollingBack rollout through :mod:`tmcd.rollback.model`.

It follows the ``tmc-canaries`` bucket; a rollout the canary controller hands over (a failed
analysis, a missed progress deadline, ``abort``) or that this agent starts itself (a canary
cluster turning Unhealthy, ``kubectl tmc rollback NAME [--to-revision N]`` on
``tmc.ctl.rollback.<ns>.<name>``) goes Reversing -> Restoring -> CleaningUp -> Completed.  Each
stage is recorded (compare-and-set) before it is applied and marked applied after, and its
``RollbackEvent`` carries a message id JetStream de-duplicates, so a ``kill -9`` at any moment
neither skips nor repeats a stage.  The reversal is one ``TrafficWeights`` for the whole route;
the agent hears the router's acknowledgement as it arrives (no polling delay), which keeps a
rollback of 50 clusters well under a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from tmcd.bus import BusError, CasConflictError, Delivery, KvEntry, KvStore
from tmcd.canary.imageplane import ImagePlane
from tmcd.canary.reversal import DataPlane
from tmcd.canary.traffic import TrafficRouter
from tmcd.contracts import subjects
from tmcd.contracts.messages import ControlReply, HealthChange, RollbackControl, RollbackEvent
from tmcd.contracts.traffic import RouterFactory
from tmcd.contracts.workloads import WorkloadError, WorkloadsFactory
from tmcd.resources import writes
from tmcd.resources.canary import CanaryRollout, CanaryRolloutStatus, RolloutRevision
from tmcd.resources.placement import Placement
from tmcd.resources.synctarget import SyncTarget
from tmcd.rollback import history
from tmcd.rollback.control import refuse_or_begin
from tmcd.rollback.history import RevisionKeeper
from tmcd.rollback.metrics import RollbackMetrics
from tmcd.rollback.model import Event, RollbackEnv, advance, begin, stage_applied
from tmcd.runtime.agent import AgentContext

log = logging.getLogger("tmcd.rollback")

CAS_ATTEMPTS = 8
RETRY = 1.0
"""Seconds before a rollback that hit a NATS error is tried again."""


class RollbackAgent:
    """Rolls rollouts back: traffic first, then placement, then cleanup."""

    name = "rollback"

    def __init__(
        self,
        router: TrafficRouter | None = None,
        router_factory: RouterFactory | None = None,
        workloads_factory: WorkloadsFactory | None = None,
    ) -> None:
        """``router`` serves every route (tests); else ``nats`` and what ``router_factory`` builds;
        ``workloads_factory`` builds what puts the canary images back."""
        self._router, self._router_factory, self._workloads_factory = router, router_factory, workloads_factory
        self.clusters: dict[str, SyncTarget] = {}
        """The SyncTargets (a Kubernetes router finds each cluster's kubeconfig context on them)."""
        self.rollouts: dict[str, KvEntry[CanaryRollout]] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}
        self._clock: Callable[[], float] = time.time
        self._ctx: AgentContext | None = None
        self._metrics: RollbackMetrics | None = None

    @property
    def metrics(self) -> RollbackMetrics:
        """The engine's series (created when it first runs)."""
        if self._metrics is None:
            raise RuntimeError("the rollback agent has not run yet")
        return self._metrics

    def wake(self) -> None:
        """Look at every rollout again now (tests that move a fake clock call this)."""
        self._dirty.update(self.rollouts)
        self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, ctx: AgentContext) -> None:
        """Load the rollouts, finish the rollbacks in flight, then follow changes until stopped."""
        self._ctx, self._clock = ctx, ctx.clock
        if self._metrics is None or self._metrics.registry is not ctx.metrics.registry:
            self._metrics = RollbackMetrics(ctx.metrics.registry)
        self.kv = await ctx.bus.kv("canaries", CanaryRollout)
        self.revisions: KvStore[RolloutRevision] = await ctx.bus.kv("revisions", RolloutRevision)
        placements = await ctx.bus.kv("placements", Placement)
        self.plane = DataPlane(
            ctx.bus, placements, self._router, factory=self._router_factory, clusters=self._cluster_annotations
        )
        self.images = ImagePlane(self._workloads_factory, self._cluster_annotations)
        clusters_kv: KvStore[SyncTarget] | None = None
        clusters_rev = 0
        if self._router_factory is not None or self._workloads_factory is not None:  # only the Kubernetes adapters
            clusters_kv = await ctx.bus.kv("clusters", SyncTarget)
            cluster_entries, clusters_rev = await clusters_kv.snapshot()
            self.clusters = {e.key: e.value for e in cluster_entries}
        entries, revision = await self.kv.snapshot()
        self.rollouts = {e.key: e for e in entries}
        self._dirty = {k for k, e in self.rollouts.items() if e.value.status.phase == "RollingBack"}
        subs = [
            await ctx.bus.serve(
                "tmc.ctl.rollback.*.*", self._control, channel=subjects.CTL_ROLLBACK, queue="tmcd-rollback"
            )
        ]
        if ctx.config.rollback.on_cluster_unhealthy:
            subs.append(
                await ctx.bus.subscribe(
                    subjects.health_changes("cluster"),
                    self._on_health,
                    channel=subjects.HEALTH_CHANGE,
                )
            )
        ctx.started.set()
        log.info("following %d rollouts, %d rolling back", len(self.rollouts), len(self._dirty))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._follow(ctx, revision))
                if clusters_kv is not None:
                    tg.create_task(self._follow_clusters(ctx, clusters_kv, clusters_rev))
                tg.create_task(RevisionKeeper().run(ctx))  # the revision records follow the rollouts' status
                tg.create_task(self.plane.follow(ctx.stop, self._on_applied))
                tg.create_task(self._work(ctx))
        finally:
            for sub in subs:
                await sub.unsubscribe()
            await self.plane.close()
            await self.images.close()

    def _cluster_annotations(self) -> dict[str, dict[str, str]]:
        return {k: t.metadata.annotations for k, t in self.clusters.items()}

    async def _follow_clusters(self, ctx: AgentContext, kv: KvStore[SyncTarget], after: int) -> None:
        async for change in kv.changes(after, ctx.stop):
            if change.value is None:
                self.clusters.pop(change.key, None)
            else:
                self.clusters[change.key] = change.value

    async def _follow(self, ctx: AgentContext, after: int) -> None:
        async for change in self.kv.changes(after, ctx.stop):
            known = self.rollouts.get(change.key)
            if known is not None and change.revision <= known.revision:
                continue  # our own write coming back
            if change.value is None:
                self.rollouts.pop(change.key, None)
                continue
            self.rollouts[change.key] = KvEntry(change.key, change.value, change.revision)
            if change.value.status.phase == "RollingBack":
                self._poke(change.key)

    def _on_applied(self, namespace: str, route: str) -> None:
        for key, e in self.rollouts.items():
            r = e.value
            rolling = r.status.phase == "RollingBack" and r.metadata.namespace == namespace
            if rolling and r.spec.traffic_routing.route == route:
                self._poke(key)

    def _poke(self, key: str) -> None:
        self._dirty.add(key)
        self._wake.set()

    async def _work(self, ctx: AgentContext) -> None:
        while not ctx.stop.is_set():
            self._wake.clear()
            batch, self._dirty = self._dirty, set()
            for key in sorted(batch):
                try:
                    await self._drive(ctx, key)
                except (BusError, WorkloadError) as exc:
                    log.warning("rollback %s: %s; trying again", key, exc)
                    asyncio.get_running_loop().call_later(RETRY, self._poke, key)
            if self._dirty:
                continue
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(ctx.stop.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # -- driving one rollback ------------------------------------------------------------------------

    async def _drive(self, ctx: AgentContext, key: str) -> None:
        async with self._lock(key):
            for _ in range(CAS_ATTEMPTS * 4):
                entry = self.rollouts.get(key)
                if entry is None or entry.value.status.phase != "RollingBack":
                    return
                r = entry.value
                rb = r.status.rollback
                if rb is None:  # handed over by an older tmcd without a record: start one
                    status = begin(r, ctx.clock(), trigger=r.status.abort_reason or "Aborted", reason=r.status.message)
                    await self._write(key, entry, status)
                    continue
                if rb.phase in ("Reversing", "Restoring", "CleaningUp") and rb.stage_state == "Applying":
                    await self._apply(ctx, entry)
                    continue
                plan = advance(r, RollbackEnv(now=ctx.clock(), applied=await self.plane.applied(r),
                                              next_generation=int(ctx.clock() * 1000)))  # fmt: skip
                if plan.status == r.status:
                    return  # waiting for the router's acknowledgement
                if not await self._write(key, entry, plan.status):
                    continue
                for ev in plan.events:
                    await self._event(ctx, r, plan.status, ev)
                if plan.status.phase != "RollingBack":
                    self.metrics.finished(r, plan.status)
                    return

    async def _apply(self, ctx: AgentContext, entry: KvEntry[CanaryRollout]) -> None:
        r = entry.value
        rb = r.status.rollback
        assert rb is not None
        images = None
        if rb.phase == "Reversing":
            await self.plane.reverse(r, rb.generation)
        elif rb.phase == "Restoring":  # the canary images back first (traffic is already stable)
            try:
                images = await self.images.restore(r)
            except WorkloadError as exc:  # unreachable, forbidden: say so in the rollback; applied again
                await self._stage_failed(entry, f"workload: {exc}")
                raise
            await self.plane.empty_placement(r, ctx.clock())
        else:
            await self.plane.remove_placement(r)
        status, ev = stage_applied(r, ctx.clock(), images)
        if ev is not None:  # in the stream before the stage is Applied: a lost event means applied again
            await self._event(ctx, r, status, ev, strict=True)
        await self._write(entry.key, entry, status)

    async def _stage_failed(self, entry: KvEntry[CanaryRollout], message: str) -> None:
        """Put why the stage could not be applied in ``status.rollback.message`` (once)."""
        rb = entry.value.status.rollback
        if rb is not None and rb.message != message:
            rb = msgspec.structs.replace(rb, message=message)
            await self._write(entry.key, entry, msgspec.structs.replace(entry.value.status, rollback=rb))

    async def _write(self, key: str, entry: KvEntry[CanaryRollout], status: CanaryRolloutStatus) -> bool:
        updated = writes.status_written(entry.value, status)
        try:
            revision = await self.kv.update(key, updated, entry.revision)
        except CasConflictError:
            fresh = await self.kv.get(key)
            if fresh is None:
                self.rollouts.pop(key, None)
            elif fresh.revision > entry.revision:
                self.rollouts[key] = fresh
            return False
        self.rollouts[key] = KvEntry(key, updated, revision)
        return True

    async def _event(
        self, ctx: AgentContext, r: CanaryRollout, st: CanaryRolloutStatus, ev: Event, *, strict: bool = False
    ) -> None:
        """Publish a RollbackEvent (deduplicated by its Nats-Msg-Id); ``strict``: a failure raises."""
        rb = st.rollback
        assert rb is not None
        ns, name = r.metadata.namespace, r.metadata.name
        msg = RollbackEvent(
            namespace=ns,
            name=name,
            timestamp=ctx.clock(),
            stage=ev.stage,  # type: ignore[arg-type]
            from_revision=rb.from_revision,
            to_revision=rb.to_revision,
            reason=ev.reason,
            trigger=rb.trigger,
            clusters=list(ev.clusters),
            seconds=round(ev.seconds, 3),
        )
        self.metrics.stage(ev.stage, ev.seconds)
        headers = {"Nats-Msg-Id": f"{ns}.{name}.rollback.{rb.generation or rb.start_time}.{ev.stage}"}
        try:
            await ctx.bus.js_publish(subjects.rollback_event(ns, name), msg, headers=headers)
        except BusError as exc:
            if strict:
                raise
            log.warning("rollback %s/%s: event not published: %s", ns, name, exc)

    # -- starting rollbacks -------------------------------------------------------------------------

    async def _start(self, key: str, make: Callable[[KvEntry[CanaryRollout]], tuple[Any, int, str]]) -> ControlReply:
        """Start a rollback with compare-and-set: ``make(entry)`` gives (status or None, code, message)."""
        now = self._clock()
        ns, _, name = key.partition(".")
        target = f"{ns}/{name}"
        async with self._lock(key):
            for _ in range(CAS_ATTEMPTS):
                entry = self.rollouts.get(key) or await self.kv.get(key)
                if entry is None:
                    return ControlReply(ok=False, target=target, code=404, message=f'canaryrollout "{name}" not found')
                status, code, message = make(entry)
                if status is None:
                    phase = entry.value.status.phase
                    return ControlReply(ok=code == 200, target=target, code=code, message=message, state=phase)
                if await self._write(key, entry, status):
                    self._poke(key)
                    return ControlReply(ok=True, target=target, code=200, message=message, state=status.phase)
        return ControlReply(ok=False, target=target, code=409, message="conflicting writes; try again", timestamp=now)

    async def _control(self, d: Delivery[RollbackControl]) -> ControlReply:
        req = d.msg
        key = f"{req.namespace}.{req.name}"
        revision: RolloutRevision | None = None
        if req.to_revision:
            revision = await history.revision(self.revisions, req.namespace, req.name, req.to_revision)
        else:  # the previous stable revision, for a finished rollout
            entry = self.rollouts.get(key)
            stable = entry.value.status.stable_revision if entry is not None else 0
            older = [
                rev
                for rev in await history.revisions(self.revisions, req.namespace, req.name)
                if rev.spec.revision < stable and rev.status.phase != "Failed"
            ]
            revision = older[0] if older else None  # newest first
        now = self._clock()
        return await self._start(key, lambda e: refuse_or_begin(e.value, req, revision, now))

    async def _on_health(self, d: Delivery[HealthChange]) -> None:
        change = d.msg
        if change.to_status != "Unhealthy":
            return
        for key, e in list(self.rollouts.items()):
            st = e.value.status
            if st.phase in ("Progressing", "Paused", "Promoting") and change.name in st.canary_clusters:
                reason = f"canary cluster {change.name} is Unhealthy ({change.reason or 'health'})"

                def make(entry: KvEntry[CanaryRollout], reason: str = reason) -> tuple[Any, int, str]:
                    s = entry.value.status
                    if s.phase not in ("Progressing", "Paused", "Promoting") or change.name not in s.canary_clusters:
                        return None, 200, "nothing to do"
                    return begin(entry.value, self._clock(), trigger="ClusterUnhealthy", reason=reason), 200, reason

                reply = await self._start(key, make)
                log.info("rollback of %s: %s", key, reply.message)
