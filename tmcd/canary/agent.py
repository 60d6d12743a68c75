"""The canary agent: drives every CanaryRollout through :mod:`tmcd.canary.model`.

It follows the ``tmc-canaries``, ``tmc-analysistemplates``, ``tmc-clusters`` and
``tmc-placements`` buckets, pools the mesh's ``WorkloadStats`` per analysis run, and
reconciles a rollout when it changes, when a control request arrives, when new data or an
applied-weights report arrives, and when the model asked to look again (a measurement due, a
pause ending, the progress deadline).

Crash safety: a data-plane action is recorded in ``status.action`` (Applying) with a
compare-and-set write *before* it is applied, applied idempotently (same traffic generation),
its ``step`` event published with a message id JetStream de-duplicates, and only then marked
Applied (a second compare-and-set).  After a ``kill -9`` the agent finds the Applying action
and applies it again; the repeated event is dropped by the stream.  The pooled windows of
running analysis runs live in memory: on start the agent replays ``TMC_WORKLOAD`` from the
oldest running run's start, so a restarted agent judges the same data.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from functools import partial
from typing import Any

import msgspec

from tmcd.bus import BusError, CasConflictError, Delivery, KvEntry, KvStore
from tmcd.canary import observe
from tmcd.canary.actions import action_applied
from tmcd.canary.clusters import eligible_pool
from tmcd.canary.control import control
from tmcd.canary.feed import RunFeeds
from tmcd.canary.imageplane import ImagePlane
from tmcd.canary.metrics import CanaryMetrics
from tmcd.canary.model import ACTIVE, Env, Note, Outcome, reconcile
from tmcd.canary.reversal import DataPlane
from tmcd.canary.schedule import parse_time
from tmcd.canary.spans import emit_spans
from tmcd.canary.syncpool import SyncPool, uses_syncer
from tmcd.canary.traffic import TrafficError, TrafficRouter
from tmcd.contracts import subjects
from tmcd.contracts.messages import (
    CanaryControl,
    CanaryEvent,
    ControlReply,
    SyncEvent,
    SyncEventBatch,
    WorkloadStats,
)
from tmcd.contracts.traffic import RouterFactory
from tmcd.contracts.workloads import WorkloadError, WorkloadsFactory
from tmcd.placement.model import Decision
from tmcd.resources import writes
from tmcd.resources.canary import AnalysisTemplate, CanaryRollout, CanaryRolloutStatus
from tmcd.resources.kinds import CANARY_ROLLOUT, parse_kv_key
from tmcd.resources.placement import Placement
from tmcd.resources.synctarget import SyncTarget
from tmcd.runtime.agent import AgentContext

log = logging.getLogger("tmcd.canary")

CAS_ATTEMPTS = 8
"""Status writes of one rollout tried before waiting for its next change."""
RETRY = 1.0
"""Seconds of real time before a rollout whose reconcile failed (NATS error, conflicts) is tried again."""
IDLE_WAKE = 30.0
"""A rollout with nothing scheduled is looked at again after this long anyway."""


class CanaryAgent:
    """Runs every CanaryRollout: steps, analysis, decisions, control requests."""

    name = "canary"

    def __init__(
        self,
        router: TrafficRouter | None = None,
        router_factory: RouterFactory | None = None,
        workloads_factory: WorkloadsFactory | None = None,
    ) -> None:
        """``router`` serves every route (tests); else ``nats`` and what ``router_factory`` builds
        (the runtime passes the Kubernetes routers' factory, and the workloads' that sets canary images)."""
        self._router, self._router_factory, self._workloads_factory = router, router_factory, workloads_factory
        self.rollouts: dict[str, KvEntry[CanaryRollout]] = {}
        self.templates: dict[str, AnalysisTemplate] = {}
        """``namespace.name`` -> template."""
        self.clusters: dict[str, SyncTarget] = {}
        self.placements: dict[str, Placement] = {}
        self.feeds = RunFeeds()
        self.syncpool = SyncPool()
        self._sync_subs: dict[str, list[Any]] = {}
        """Cluster -> its syncer subscriptions (only clusters a rollout's syncer metrics need)."""
        self.decisions = 0
        """Status writes made (a figure for the benchmark)."""
        self._dirty: set[str] = set()
        self._timers: list[tuple[float, str]] = []
        self._wake = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}
        self._clock: Any = time.time
        self._pending_decisions: dict[str, Decision] = {}
        """Rollout key -> the canary Placement decision its recorded action came with."""
        self._ctx: AgentContext | None = None
        self._metrics: CanaryMetrics | None = None

    @property
    def metrics(self) -> CanaryMetrics:
        """The agent's series (created when it first runs)."""
        if self._metrics is None:
            raise RuntimeError("the canary agent has not run yet")
        return self._metrics

    def standby(self) -> None:
        """This replica no longer leads the canary agent: drop the rollouts' gauges (the leader
        exports them)."""
        if self._metrics is not None:
            self._metrics.clear()

    def wake(self) -> None:
        """Look at every scheduled rollout now (tests that move a fake clock call this)."""
        self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, ctx: AgentContext) -> None:
        """Load the buckets, replay the running analyses' data, then follow everything until stopped."""
        bus = ctx.bus
        self._ctx = ctx
        self._clock = ctx.clock
        if self._metrics is None or self._metrics.registry is not ctx.metrics.registry:
            self._metrics = CanaryMetrics(ctx.metrics.registry)  # once per registry: restarts reuse it
        canaries = await bus.kv("canaries", CanaryRollout)
        templates = await bus.kv("analysistemplates", AnalysisTemplate)
        clusters = await bus.kv("clusters", SyncTarget)
        placements = await bus.kv("placements", Placement)
        self.kv = canaries
        self.placements_kv = placements
        self.plane = DataPlane(
            bus, placements, self._router, factory=self._router_factory, clusters=self._cluster_annotations
        )
        self.images = ImagePlane(self._workloads_factory, self._cluster_annotations)
        revs: dict[str, int] = {}
        rollout_entries, revs["canaries"] = await canaries.snapshot()
        self.rollouts = {e.key: e for e in rollout_entries}
        template_entries, revs["templates"] = await templates.snapshot()
        self.templates = {e.key: e.value for e in template_entries}
        cluster_entries, revs["clusters"] = await clusters.snapshot()
        self.clusters = {e.key: e.value for e in cluster_entries}
        placement_entries, revs["placements"] = await placements.snapshot()
        self.placements = {e.key: e.value for e in placement_entries}
        self._dirty = set(self.rollouts)
        for key, e in self.rollouts.items():
            self.feeds.track(key, e.value)  # before the replay starts, so it pools into the running runs
        starts = [
            t
            for e in self.rollouts.values()
            for r in e.value.status.analysis_runs
            if r.phase in ("Running", "Pending") and (t := parse_time(r.start_time)) is not None
        ]
        replay_from = min(starts, default=ctx.clock()) - 60.0
        log.info("following %d canary rollouts; replaying workload stats from %.0f", len(self.rollouts), replay_from)
        ctl = await bus.serve("tmc.ctl.canary.*.*.*", self._control, channel=subjects.CTL_CANARY, queue="tmcd-canary")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._follow(ctx, canaries, revs["canaries"], self._on_rollout))
                tg.create_task(self._follow(ctx, templates, revs["templates"], self._on_template))
                tg.create_task(self._follow(ctx, clusters, revs["clusters"], self._on_cluster))
                tg.create_task(self._follow(ctx, placements, revs["placements"], self._on_placement))
                tg.create_task(
                    bus.consume(
                        "TMC_WORKLOAD",
                        f"{ctx.config.consumer.durable_prefix}-canary-TMC_WORKLOAD",
                        self._on_stats,
                        ctx.stop,
                        primary=False,
                        start_time=replay_from,
                        on_ready=ctx.started.set,
                    )
                )
                tg.create_task(self.plane.follow(ctx.stop, self._on_applied))
                tg.create_task(self._work(ctx))
        finally:
            await ctl.unsubscribe()
            for subs in self._sync_subs.values():
                for sub in subs:
                    await sub.unsubscribe()
            self._sync_subs.clear()
            await self.plane.close()
            await self.images.close()

    async def _follow(self, ctx: AgentContext, kv: KvStore[Any], after: int, on: Any) -> None:
        async for change in kv.changes(after, ctx.stop):
            on(change.key, change.value, change.revision)

    # -- what changed -----------------------------------------------------------------------------

    def _on_rollout(self, key: str, value: CanaryRollout | None, revision: int) -> None:
        known = self.rollouts.get(key)
        if known is not None and revision <= known.revision:
            return  # our own write coming back
        if value is None:
            self.rollouts.pop(key, None)
            self.feeds.forget(key)
            self.metrics.forget(*parse_kv_key(CANARY_ROLLOUT, key))
            return
        self.rollouts[key] = KvEntry(key, value, revision)
        self._poke(key)

    def _on_template(self, key: str, value: AnalysisTemplate | None, _revision: int) -> None:
        if value is None:
            self.templates.pop(key, None)
        else:
            self.templates[key] = value
        ns = key.partition(".")[0]
        for k in self.rollouts:
            if k.startswith(ns + "."):
                self._poke(k)

    def _on_cluster(self, key: str, value: SyncTarget | None, _revision: int) -> None:
        if value is None:
            self.clusters.pop(key, None)
        else:
            self.clusters[key] = value

    def _cluster_annotations(self) -> dict[str, dict[str, str]]:
        return {k: t.metadata.annotations for k, t in self.clusters.items()}

    def _on_placement(self, key: str, value: Placement | None, _revision: int) -> None:
        if value is None:
            self.placements.pop(key, None)
        else:
            self.placements[key] = value

    def _on_stats(self, d: Delivery[WorkloadStats]) -> None:
        for key in self.feeds.add(d.msg):
            self._poke(key)

    def _on_applied(self, namespace: str, route: str) -> None:
        for key, e in self.rollouts.items():
            spec = e.value.spec
            if e.value.metadata.namespace == namespace and spec.traffic_routing.route == route:
                self._poke(key)

    def _poke(self, key: str) -> None:
        self._dirty.add(key)
        self._wake.set()

    def _retry(self, key: str) -> None:
        """Look at the rollout again in a second of real time (after an error; not on the model's clock)."""
        asyncio.get_running_loop().call_later(RETRY, self._poke, key)

    def _at(self, when: float | None, key: str) -> None:
        heapq.heappush(self._timers, (when if when is not None else self._clock() + IDLE_WAKE, key))
        self._wake.set()

    # -- the work loop ----------------------------------------------------------------------------

    async def _work(self, ctx: AgentContext) -> None:
        while not ctx.stop.is_set():
            self._wake.clear()
            now = ctx.clock()
            while self._timers and self._timers[0][0] <= now:
                self._dirty.add(heapq.heappop(self._timers)[1])
            self._dirty.update(self.syncpool.flush(now))
            await self._follow_syncers(ctx)
            batch, self._dirty = self._dirty, set()
            for i, key in enumerate(sorted(batch)):
                try:
                    await self._reconcile(ctx, key)
                except (BusError, TrafficError, WorkloadError) as exc:
                    log.warning("canary %s: %s; trying again shortly", key, exc)
                    self._retry(key)
                if i % 16 == 15:
                    await asyncio.sleep(0)  # many rollouts: let the loop breathe
            if self._dirty:
                continue
            delay = max(0.0, self._timers[0][0] - ctx.clock()) if self._timers else None
            await _wait_any(self._wake, ctx.stop, delay)

    async def _follow_syncers(self, ctx: AgentContext) -> None:
        """Subscribe to the syncer subjects of exactly the clusters the syncer metrics need."""
        wanted = self.syncpool.interest()
        for cluster in [c for c in self._sync_subs if c not in wanted]:
            for sub in self._sync_subs.pop(cluster):
                await sub.unsubscribe()
        for cluster in sorted(wanted - set(self._sync_subs)):
            self._sync_subs[cluster] = [
                await ctx.bus.subscribe(subjects.syncer_sync(cluster), self._on_sync, channel=subjects.SYNCER_SYNC),
                await ctx.bus.subscribe(subjects.syncer_batch(cluster), self._on_batch, channel=subjects.SYNCER_BATCH),
            ]

    async def _on_sync(self, d: Delivery[SyncEvent]) -> None:
        self.syncpool.add(d.msg)

    async def _on_batch(self, d: Delivery[SyncEventBatch]) -> None:
        for ev in d.msg.events:
            self.syncpool.add(ev)

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _reconcile(self, ctx: AgentContext, key: str) -> None:
        async with self._lock(key):
            for _ in range(CAS_ATTEMPTS * 4):  # a few steps at once, and conflicting writes
                entry = self.rollouts.get(key)
                if entry is None:
                    return
                r = entry.value
                if r.status.action is not None and r.status.action.state == "Applying":
                    await self._apply(ctx, entry)  # on a conflict: look again at the fresh object
                    continue
                out = reconcile(r, await self._env(ctx, r))
                self.metrics.observe(r, out.status)
                if out.status == r.status:
                    self._at(out.wake_at, key)
                    return
                if not await self._write(key, entry, out.status):
                    continue
                emit_spans(ctx.tracer, r, out.status, ctx.clock())
                await self._publish(ctx, r, out.notes, out)
                if not (out.status.action is not None and out.status.action.state == "Applying"):
                    self._at(out.wake_at, key)
                    if out.status.phase not in ACTIVE:
                        self.feeds.forget(key)
                    return
            log.warning("canary %s: status not written after %d conflicting writes", key, CAS_ATTEMPTS)
            self._retry(key)

    async def _apply(self, ctx: AgentContext, entry: KvEntry[CanaryRollout]) -> bool:
        """Apply the recorded action, publish its event, mark it Applied; False on a write conflict."""
        r = entry.value
        action = r.status.action
        assert action is not None
        placement = self._pending_decisions.pop(entry.key, None)
        try:  # canary images first (each recorded before it is set), then traffic and placement
            done = await self.images.apply(
                entry,
                action,
                partial(self._write, entry.key),
                lambda: self.plane.apply(r, action, placement, ctx.clock()),
            )
        except (TrafficError, WorkloadError) as exc:  # a missing HTTPRoute, a refused patch: say so, try again
            if placement is not None:
                self._pending_decisions[entry.key] = placement
            what = "traffic router" if isinstance(exc, TrafficError) else "workload"
            await self._traffic_failed(self.rollouts.get(entry.key, entry), f"{what}: {exc}")
            raise
        if done is None:
            return False  # the images' record met a conflicting write: look again
        entry, images = done
        status, note = action_applied(entry.value, ctx.clock(), images)
        await self._event(ctx, r, note, status, msg_id=f"{r.metadata.namespace}.{r.metadata.name}.{action.generation}")
        written = await self._write(entry.key, entry, status)
        if written:
            self.metrics.observe(r, status)
        return written is not None

    async def _write(
        self, key: str, entry: KvEntry[CanaryRollout], status: CanaryRolloutStatus
    ) -> KvEntry[CanaryRollout] | None:
        updated = writes.status_written(entry.value, status)  # the /status subresource's rule
        try:
            revision = await self.kv.update(key, updated, entry.revision)
        except CasConflictError:
            fresh = await self.kv.get(key)
            if fresh is None:
                self.rollouts.pop(key, None)
            elif fresh.revision > entry.revision:
                self.rollouts[key] = fresh
            return None
        written = self.rollouts[key] = KvEntry(key, updated, revision)
        self.decisions += 1
        return written

    async def _traffic_failed(self, entry: KvEntry[CanaryRollout], message: str) -> None:
        """Put the router's (or the workload's) error in ``status.message`` (once) so ``kubectl tmc get``
        shows why the rollout is stuck; the action stays Applying and is tried again."""
        if entry.value.status.message != message:
            status = msgspec.structs.replace(entry.value.status, message=message)
            await self._write(entry.key, entry, status)

    async def _env(self, ctx: AgentContext, r: CanaryRollout) -> Env:
        now = ctx.clock()
        ns = r.metadata.namespace
        templates = {k.partition(".")[2]: t for k, t in self.templates.items() if k.startswith(ns + ".")}
        parent = self.placements.get(r.spec.placement_ref) if r.spec.placement_ref else None
        pool, pool_error = eligible_pool(r, [self.clusters[k] for k in sorted(self.clusters)], parent)
        router_error = self.plane.router_error(r)
        workload_error = self.images.error(r)
        applied = await self.plane.applied(r)
        observations = await observe.observations(r, templates, self.feeds, self.syncpool, now)
        key = f"{ns}.{r.metadata.name}"
        self.feeds.track(key, r)
        self.syncpool.track(key, r, [t.metadata.name for t in pool], uses_syncer(r, templates))
        return Env(
            now=now,
            templates=templates,
            pool=pool,
            pool_error=pool_error,
            router_error=router_error,
            workload_error=workload_error,
            applied=applied,
            observations=observations,
            next_generation=int(now * 1000),
        )

    # -- events -------------------------------------------------------------------------------------

    async def _publish(self, ctx: AgentContext, r: CanaryRollout, notes: list[Note], out: Outcome) -> None:
        if out.placement is not None:
            self._pending_decisions[f"{r.metadata.namespace}.{r.metadata.name}"] = out.placement
        for note in notes:
            await self._event(ctx, r, note, out.status)

    async def _event(
        self, ctx: AgentContext, r: CanaryRollout, note: Note, status: CanaryRolloutStatus, msg_id: str = ""
    ) -> None:
        ns, name = r.metadata.namespace, r.metadata.name
        event = CanaryEvent(
            namespace=ns,
            name=name,
            timestamp=ctx.clock(),
            type=note.type,
            phase=status.phase,
            step_index=min(status.current_step_index, max(len(r.spec.steps) - 1, 0)) if r.spec.steps else -1,
            revision=status.canary_revision,
            message=note.message,
            evidence=note.evidence,
        )
        self.metrics.event(r, note, status)
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        try:
            await ctx.bus.js_publish(subjects.canary_event(ns, name), event, headers=headers)
        except BusError as exc:
            if msg_id:  # a step's event: the action stays Applying and is applied (and told) again
                raise
            log.warning("canary %s/%s: event not published: %s", ns, name, exc)  # the status is written

    # -- control ------------------------------------------------------------------------------------

    async def _control(self, d: Delivery[CanaryControl]) -> ControlReply:
        req = d.msg
        key = f"{req.namespace}.{req.name}"
        target = f"{req.namespace}/{req.name}"
        now = self._clock()
        async with self._lock(key):
            for _ in range(CAS_ATTEMPTS):
                entry = self.rollouts.get(key) or await self.kv.get(key)
                if entry is None:
                    return ControlReply(
                        ok=False,
                        target=target,
                        code=404,
                        message=f'canaryrollout "{req.name}" not found',
                        timestamp=now,
                    )
                status, code, message = control(entry.value, req.action, now, full=req.full)
                if code != 200 or status == entry.value.status:
                    return ControlReply(
                        ok=code == 200, target=target, code=code, message=message, state=status.phase, timestamp=now
                    )
                if await self._write(key, entry, status):
                    who = f" by {req.requested_by}" if req.requested_by else ""
                    note = Note("decision", f"{req.action}{' --full' if req.full else ''}{who}: {message}")
                    if self._ctx is not None:
                        await self._event(self._ctx, entry.value, note, status)
                    self._poke(key)
                    return ControlReply(
                        ok=True, target=target, code=200, message=message, state=status.phase, timestamp=now
                    )
        return ControlReply(ok=False, target=target, code=409, message="conflicting writes; try again", timestamp=now)


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, delay: float | None) -> None:
    """Until ``wake`` or ``stop`` is set, or ``delay`` seconds pass."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
