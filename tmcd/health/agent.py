"""The health agent: cluster health from the syncer stream, a KV-backed cluster registry,
health-change events, metrics, and the health tree on ``tmc.api.get.health``.

All decisions are made by the pure model (:mod:`tmcd.health.model`); this module only
feeds it messages and the clock, and writes what it concludes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from operator import attrgetter
from typing import Any

from tmcd.bus import BusError, CasConflictError, Delivery, KvStore
from tmcd.config import HealthConfig
from tmcd.contracts import subjects
from tmcd.contracts.messages import (
    ConnectionEvent,
    HealthChange,
    HealthQuery,
    HealthReport,
    SyncerHeartbeat,
    SyncEvent,
    SyncEventBatch,
)
from tmcd.contracts.names import is_valid_name
from tmcd.health import model
from tmcd.health.aggregate import ClusterView, report
from tmcd.health.metrics import HealthMetrics
from tmcd.resources.synctarget import SyncTarget, SyncTargetSpec
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.consumers import consume_streams

log = logging.getLogger("tmcd.health")

_OK = attrgetter("ok")
WRITE_CONCURRENCY = 64


class HealthAgent:
    """Keeps every cluster's health and the registry of SyncTargets."""

    name = "health"

    def __init__(self) -> None:
        self.metrics: HealthMetrics | None = None
        self.clusters: dict[str, model.ClusterHealth] = {}
        self._revisions: dict[str, int] = {}
        self._specs: dict[str, SyncTargetSpec] = {}
        self._persisted: dict[str, float] = {}
        self._exported: dict[str, tuple[str, tuple[tuple[str, str], ...], float]] = {}
        self._dirty: set[str] = set()
        self._urgent: set[str] = set()
        self._groups: dict[tuple[str, str], str] = {}

    # -- lifecycle ----------------------------------------------------------------

    async def run(self, ctx: AgentContext) -> None:
        """Load the registry, then consume the syncer stream and evaluate until stopped."""
        if self.metrics is None:
            self.metrics = HealthMetrics(ctx.metrics.registry)
        store = await ctx.bus.kv("clusters", SyncTarget)
        started_at = ctx.clock()
        await self._load(store, started_at)
        sub = await ctx.bus.serve(
            subjects.API_HEALTH.template, self._query_handler(ctx), channel=subjects.API_HEALTH, queue="tmcd-health"
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(
                    consume_streams(ctx, self.name, {subjects.STREAM_SYNCER: self._on_syncer(ctx)}, primary=False)
                )
                tg.create_task(self._evaluate_loop(ctx, store, started_at))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _load(self, store: KvStore[SyncTarget], now: float) -> None:
        self.clusters.clear()
        for key in await store.keys():
            entry = await store.get(key)
            if entry is None:
                continue
            self.clusters[key] = model.from_sync_target(entry.value, now)
            self._revisions[key] = entry.revision
            self._specs[key] = entry.value.spec
            self._persisted[key] = now
        log.info("loaded %d clusters from the registry", len(self.clusters))

    # -- ingestion (hot path: no I/O) ----------------------------------------------------

    def _cluster(self, name: str, now: float) -> model.ClusterHealth:
        st = self.clusters.get(name)
        if st is None:
            st = self.clusters[name] = model.new_cluster(name, now)
        return st

    def _on_syncer(self, ctx: AgentContext) -> Any:
        cfg = ctx.config.health
        clock = ctx.clock
        window, bucket = cfg.error_window, cfg.interval

        def handle(d: Delivery[Any]) -> None:
            msg = d.msg
            now = clock()
            if isinstance(msg, SyncEventBatch):
                total = len(msg.events)
                model.observe_sync(
                    self._cluster(msg.cluster, now), total, total - sum(map(_OK, msg.events)), now, window, bucket
                )
            elif isinstance(msg, SyncEvent):
                model.observe_sync(self._cluster(msg.cluster, now), 1, 0 if msg.ok else 1, now, window, bucket)
            elif isinstance(msg, SyncerHeartbeat):
                st = self._cluster(msg.cluster, now)
                if st.paused != msg.paused or st.last_heartbeat is None:
                    self._urgent.add(msg.cluster)  # `sync status` should see a pause at once
                model.observe_heartbeat(st, msg, now)
                self._dirty.add(msg.cluster)
            elif isinstance(msg, ConnectionEvent):
                model.observe_connection(self._cluster(msg.cluster, now), msg, now)
                self._dirty.add(msg.cluster)

        return handle

    # -- evaluation ----------------------------------------------------------------

    async def _evaluate_loop(self, ctx: AgentContext, store: KvStore[SyncTarget], started_at: float) -> None:
        cfg = ctx.config.health
        while not ctx.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stop.wait(), cfg.interval)
            try:
                await self.sweep(ctx, store, started_at)
            except BusError as exc:  # NATS down: keep evaluating, write when it is back
                log.warning("health sweep could not publish or persist: %s", exc)

    async def sweep(self, ctx: AgentContext, store: KvStore[SyncTarget], started_at: float) -> None:
        """One evaluation of every cluster: transitions, forgetting, metrics, events, registry writes."""
        cfg = ctx.config.health
        now = ctx.clock()
        changed: list[model.Transition] = []
        forgotten = []
        for name, st in list(self.clusters.items()):
            if model.should_forget(st, now, cfg):
                forgotten.append(name)
                continue
            t = model.evaluate(st, now, cfg, started_at)
            if t is not None:
                changed.append(t)
        for name in forgotten:
            await self._forget(ctx, store, name, now, cfg)
        for t in changed:
            log.info("cluster %s: %s -> %s (%s)", t.cluster, t.from_status, t.to_status, t.reason)
            change = _change("cluster", t.cluster, t.from_status, t.to_status, t.reason, t.message, t.failing, now)
            await self._publish(ctx, change)
        self._export_metrics()
        await self._aggregate(ctx, now, cfg)
        await self._persist(store, {t.cluster for t in changed}, now, cfg)

    def _export_metrics(self) -> None:
        hm = self.metrics
        assert hm is not None
        for name, st in self.clusters.items():
            conditions = tuple((c.type, c.status) for c in st.conditions)
            last = (st.status, conditions, st.last_heartbeat_received or 0.0)
            prev = self._exported.get(name)
            if prev == last:
                continue
            if prev is None or prev[0] != last[0]:
                hm.set_status(name, st.status)
            if prev is None or prev[1] != conditions:
                hm.set_conditions(name, conditions)
            if st.last_heartbeat_received and (prev is None or prev[2] != st.last_heartbeat_received):
                hm.set_last_heartbeat(name, st.last_heartbeat_received)
            self._exported[name] = last

    async def _aggregate(self, ctx: AgentContext, now: float, cfg: HealthConfig) -> None:
        rep = report(self._views(cfg), now=now, location_label=cfg.location_label, include_clusters=False)
        assert self.metrics is not None
        self.metrics.set_fleet(rep.fleet.counts)
        for kind, node in [("fleet", rep.fleet), *(("location", n) for n in rep.locations)]:
            key = (kind, node.name)
            before = self._groups.get(key, "Unknown")
            if before != node.status:
                self._groups[key] = node.status
                failing = [s for s in ("Unhealthy", "Degraded") if node.counts.get(s)]
                message = ", ".join(f"{n} {s}" for s, n in node.counts.items() if n)
                if is_valid_name(node.name):
                    change = _change(kind, node.name, before, node.status, "ClustersChanged", message, failing, now)
                    await self._publish(ctx, change)

    def _views(self, cfg: HealthConfig) -> Iterable[ClusterView]:
        label = cfg.location_label
        for name, st in self.clusters.items():
            yield ClusterView(
                name=name,
                status=st.status,
                location=st.labels.get(label, ""),
                reason=st.status_reason,
                failing=tuple(st.failing),
                since=st.status_since,
                last_heartbeat=st.last_heartbeat_received or 0.0,
            )

    async def _publish(self, ctx: AgentContext, event: HealthChange) -> None:
        await ctx.bus.js_publish(subjects.health_change(event.kind, event.name), event)

    async def _forget(
        self, ctx: AgentContext, store: KvStore[SyncTarget], name: str, now: float, cfg: HealthConfig
    ) -> None:
        st = self.clusters.pop(name)
        log.info("forgetting cluster %s: nothing heard for more than %.0fs", name, cfg.forget_after)
        with contextlib.suppress(CasConflictError):
            await store.delete(name)
        for d in (self._revisions, self._specs, self._persisted, self._exported):
            d.pop(name, None)
        self._dirty.discard(name)
        assert self.metrics is not None
        self.metrics.forget(name)
        await self._publish(
            ctx, _change("cluster", name, st.status, "Unknown", "Forgotten", "cluster forgotten", [], now)
        )

    async def _persist(self, store: KvStore[SyncTarget], changed: set[str], now: float, cfg: HealthConfig) -> None:
        every = max(30.0, cfg.heartbeat_threshold / 2)
        due = [n for n in self._dirty if now - self._persisted.get(n, 0.0) >= every]
        names = [n for n in {*changed, *due, *self._urgent} if n in self.clusters]
        self._urgent.clear()
        sem = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def write(name: str) -> None:
            async with sem:
                await self._write(store, name, now)

        await asyncio.gather(*(write(n) for n in names))

    async def _write(self, store: KvStore[SyncTarget], name: str, now: float) -> None:
        obj = model.to_sync_target(self.clusters[name])
        obj.spec = self._specs.get(name, obj.spec)
        for _ in range(3):
            rev = self._revisions.get(name)
            try:
                self._revisions[name] = (
                    await store.create(name, obj) if rev is None else await store.update(name, obj, rev)
                )
                self._persisted[name] = now
                self._dirty.discard(name)
                return
            except CasConflictError:
                # someone else (an operator cordoning it, another replica) wrote it: keep their spec
                entry = await store.get(name)
                if entry is None:
                    self._revisions.pop(name, None)
                    continue
                self._revisions[name] = entry.revision
                self._specs[name] = obj.spec = entry.value.spec
        log.warning("could not write SyncTarget %s after 3 attempts", name)

    # -- the health API ------------------------------------------------------------------

    def _query_handler(self, ctx: AgentContext) -> Any:
        async def handle(d: Delivery[Any]) -> HealthReport:
            q: HealthQuery = d.msg
            cfg = ctx.config.health
            return report(
                self._views(cfg),
                now=ctx.clock(),
                location_label=cfg.location_label,
                only_location=q.location,
                include_clusters=q.include_clusters,
            )

        return handle


def _change(
    kind: str, name: str, before: str, after: str, reason: str, message: str, failing: Iterable[str], now: float
) -> HealthChange:
    return HealthChange(
        kind=kind,  # type: ignore[arg-type]
        name=name,
        timestamp=now,
        from_status=before,  # type: ignore[arg-type]
        to_status=after,  # type: ignore[arg-type]
        reason=reason,
        message=message,
        failing_checks=list(failing),
    )
