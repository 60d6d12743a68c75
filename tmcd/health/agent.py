"""The health agent: cluster health from the syncer stream, a KV-backed cluster registry,
health-change events, metrics, and the health tree on ``tmc.api.get.health``.

All decisions are made by the pure model (:mod:`tmcd.health.model`); this module only
feeds it messages and the clock, and writes what it concludes -- through the outbox
(:mod:`tmcd.health.outbox`), so that events and registry writes wait out a NATS outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable
from operator import attrgetter
from typing import Any

import msgspec

from tmcd.bus import BusError, CasConflictError, CorruptValueError, Delivery, KvEntry, KvStore
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
from tmcd.health.outbox import FORGOTTEN, Key, Outbox, Pending
from tmcd.resources import writes
from tmcd.resources.synctarget import SyncTarget
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.consumers import consume_streams
from tmcd.runtime.status import StatusConflictError, create_object, update_object, write_status

log = logging.getLogger("tmcd.health")

_OK = attrgetter("ok")
WRITE_CONCURRENCY = 64
"""Registry writes and event publishes in flight at once (one key per worker)."""


class _Disconnected(Exception):
    """NATS went away during a delivery: stop it, retry everything on reconnect or next sweep."""


class HealthAgent:
    """Keeps every cluster's health and the registry of SyncTargets."""

    name = "health"

    def __init__(self) -> None:
        self.metrics: HealthMetrics | None = None
        self._reset()

    def _reset(self) -> None:
        self.clusters: dict[str, model.ClusterHealth] = {}
        self._stored: dict[str, KvEntry[SyncTarget]] = {}
        """Each cluster's SyncTarget as last read or written (its spec and metadata are kept)."""
        self._persisted: dict[str, float] = {}
        self._exported: dict[str, tuple[str, tuple[tuple[str, str], ...], float]] = {}
        self._dirty: set[str] = set()
        self._urgent: set[str] = set()
        self._groups: dict[tuple[str, str], str] = {}
        self.outbox = Outbox()
        """Events and writes not yet acknowledged; kept across restarts of the agent (not of tmcd)."""

    def standby(self) -> None:
        """This replica no longer leads the health agent: forget the fleet's state and its series
        (the leader exports them); a next term starts as a fresh agent, from the registry in KV."""
        self._reset()
        if self.metrics is not None:
            self.metrics.clear()

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
        entries, _revision = await store.snapshot()  # one pass; undecodable values are dead-lettered
        for entry in entries:
            key = entry.key
            self.clusters[key] = model.from_sync_target(entry.value, now)
            self._stored[key] = entry
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
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def on_state(up: bool) -> None:
            if up and self.outbox:
                wake.set()  # NATS is back: deliver what waited, without waiting for the next sweep

        ctx.bus.state_listeners.append(on_state)
        try:
            next_sweep = loop.time() + cfg.interval
            while not ctx.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(ctx.stop, wake), max(0.0, next_sweep - loop.time()))
                if wake.is_set() and not ctx.stop.is_set() and loop.time() < next_sweep:
                    wake.clear()
                    await self.deliver(ctx, store)
                    continue
                wake.clear()
                next_sweep = loop.time() + cfg.interval
                await self.sweep(ctx, store, started_at)
        finally:
            ctx.bus.state_listeners.remove(on_state)

    async def sweep(self, ctx: AgentContext, store: KvStore[SyncTarget], started_at: float) -> None:
        """One evaluation of every cluster: transitions, forgetting, metrics, then delivery.

        Every transition and the registry writes it implies go through :attr:`outbox`, which
        :meth:`deliver` empties as far as NATS lets it; what it cannot deliver now waits for the
        next sweep (or the reconnection), so an outage delays events but drops none.
        """
        cfg = ctx.config.health
        now = ctx.clock()
        outbox = self.outbox
        changed: set[str] = set()
        for name, st in self.clusters.items():
            if outbox.forgetting(name):
                continue
            if model.should_forget(st, now, cfg):
                log.info("forgetting cluster %s: nothing heard for more than %.0fs", name, cfg.forget_after)
                outbox.forget(_change("cluster", name, st.status, "Unknown", FORGOTTEN, "cluster forgotten", [], now))
                continue
            t = model.evaluate(st, now, cfg, started_at)
            if t is not None:
                log.info("cluster %s: %s -> %s (%s)", t.cluster, t.from_status, t.to_status, t.reason)
                change = _change("cluster", t.cluster, t.from_status, t.to_status, t.reason, t.message, t.failing, now)
                outbox.add(change)
                changed.add(t.cluster)
        self._export_metrics()
        self._aggregate(now, cfg)
        self._persist(changed, now, cfg)
        await self.deliver(ctx, store)

    def _export_metrics(self) -> None:
        hm = self.metrics
        assert hm is not None
        for name, st in self.clusters.items():
            if self.outbox.forgetting(name):
                continue
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

    def _aggregate(self, now: float, cfg: HealthConfig) -> None:
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
                    self.outbox.add(
                        _change(kind, node.name, before, node.status, "ClustersChanged", message, failing, now)
                    )

    def _views(self, cfg: HealthConfig) -> Iterable[ClusterView]:
        label = cfg.location_label
        forgetting = self.outbox.forgetting
        for name, st in self.clusters.items():
            if forgetting(name):  # already gone for everyone but the registry
                continue
            yield ClusterView(
                name=name,
                status=st.status,
                location=st.labels.get(label, ""),
                reason=st.status_reason,
                failing=tuple(st.failing),
                since=st.status_since,
                last_heartbeat=st.last_heartbeat_received or 0.0,
            )

    def _persist(self, changed: set[str], now: float, cfg: HealthConfig) -> None:
        every = max(30.0, cfg.heartbeat_threshold / 2)
        due = [n for n in self._dirty if now - self._persisted.get(n, 0.0) >= every]
        for name in (*changed, *due, *self._urgent):
            if name in self.clusters:
                self.outbox.persist(name)
        self._urgent.clear()

    # -- delivery -----------------------------------------------------------------------

    async def deliver(self, ctx: AgentContext, store: KvStore[SyncTarget]) -> bool:
        """Publish and write what the outbox holds, ``WRITE_CONCURRENCY`` keys at a time.

        Per key, events go out in order, each after the previous one's JetStream ack, then the
        cluster's registry write (or, for a forgotten cluster, its deletion).  A key that fails
        keeps its work for the next delivery and the others go on; losing NATS stops the whole
        delivery at once.  True when the outbox is empty afterwards.
        """
        try:
            return await self._deliver(ctx, store)
        finally:
            if self.metrics is not None:
                self.metrics.outbox.set(len(self.outbox))

    async def _deliver(self, ctx: AgentContext, store: KvStore[SyncTarget]) -> bool:
        if not self.outbox:
            return True
        if not ctx.bus.connected:
            return False
        now = ctx.clock()
        keys = iter(self.outbox.keys())
        failed: list[str] = []

        async def worker() -> None:
            for key in keys:  # shared: each key goes to exactly one worker
                await self._deliver_key(ctx, store, key, now, failed)

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(WRITE_CONCURRENCY, len(self.outbox))):
                    tg.create_task(worker())
        except* _Disconnected:
            log.warning("NATS went away while delivering health events; %d items wait for it", len(self.outbox))
        if failed:
            log.warning("%d health deliveries failed, retrying next sweep: %s", len(failed), failed[0])
        return not self.outbox

    async def _deliver_key(
        self, ctx: AgentContext, store: KvStore[SyncTarget], key: Key, now: float, failed: list[str]
    ) -> None:
        outbox = self.outbox
        kind, name = key
        try:
            while (p := outbox.head(key)) is not None:
                await self._publish(ctx, p)
                outbox.published(key, p)
            if kind != "cluster" or not (outbox.ready_to_delete(name) or outbox.write_due(name)):
                return
            if not ctx.bus.connected:  # a KV request now would only wait for its timeout
                raise _Disconnected
            if outbox.ready_to_delete(name):
                await self._drop(store, name)
            elif outbox.write_due(name) and await self._write(store, name, now):
                outbox.written(name)
        except Exception as exc:
            if not _transient(exc):
                raise
            if not ctx.bus.connected:
                raise _Disconnected from exc
            failed.append(f"{kind} {name}: {exc}")

    async def _publish(self, ctx: AgentContext, p: Pending) -> None:
        if not ctx.bus.connected:
            raise _Disconnected
        event = p.event
        # the same id on every retry: JetStream stores a re-sent transition once (within its duplicate window)
        await ctx.bus.js_publish(subjects.health_change(event.kind, event.name), event, {"Nats-Msg-Id": p.msg_id})

    async def _drop(self, store: KvStore[SyncTarget], name: str) -> None:
        """Its Forgotten event is acknowledged: delete the cluster from the registry, then from memory."""
        with contextlib.suppress(CasConflictError):
            await store.delete(name)
        self.clusters.pop(name, None)
        for d in (self._stored, self._persisted, self._exported):
            d.pop(name, None)
        self._dirty.discard(name)
        self._urgent.discard(name)
        assert self.metrics is not None
        self.metrics.forget(name)
        self.outbox.deleted(name)

    async def _write(self, store: KvStore[SyncTarget], name: str, now: float) -> bool:
        """Write the cluster's current state (compare-and-set); True when written or nothing to write.

        As the API would: a new cluster is created (uid, creationTimestamp), the labels its
        syncer reports are an update of metadata, and what tmcd concludes a status write
        (:mod:`tmcd.runtime.status`), so a spec an operator saved (a cordon) is never overwritten.
        """
        st = self.clusters.get(name)
        if st is None:
            return True
        want = model.to_sync_target(st)
        for _ in range(3):
            try:
                entry = await self._current(store, name, want, now)
                if entry.value.metadata.labels != want.metadata.labels:  # the syncer's labels are the truth
                    meta = msgspec.structs.replace(entry.value.metadata, labels=want.metadata.labels)
                    entry = await update_object(store, entry, msgspec.structs.replace(entry.value, metadata=meta))
                done = await write_status(store, name, lambda _stored: want.status, current=entry)
            except CorruptValueError:
                # unreadable (already dead-lettered): this agent's state replaces it
                fresh = writes.status_written(writes.created(want, now=now, uid=str(uuid.uuid4())), want.status)
                self._stored[name] = KvEntry(name, fresh, await store.put(name, fresh))
            except (CasConflictError, StatusConflictError):
                self._stored.pop(name, None)  # read it again
                continue
            else:
                if done.entry is None:  # deleted meanwhile: create it again
                    self._stored.pop(name, None)
                    continue
                self._stored[name] = done.entry
            self._persisted[name] = now
            self._dirty.discard(name)
            return True
        log.warning("could not write SyncTarget %s after 3 attempts; retrying next sweep", name)
        return False

    async def _current(
        self, store: KvStore[SyncTarget], name: str, want: SyncTarget, now: float
    ) -> KvEntry[SyncTarget]:
        """The stored SyncTarget (as last seen, else read), created when there is none."""
        entry = self._stored.get(name) or await store.get(name)
        for _ in range(3):  # created and deleted by others in between: bounded
            if entry is not None:
                return entry
            entry = await create_object(store, name, want, clock=lambda: now) or await store.get(name)
        raise CasConflictError(f"SyncTarget {name} keeps being created and deleted")

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


def _transient(exc: BaseException) -> bool:
    """A failure to retry later: the bus's errors (the KV store's included), timeouts, socket errors."""
    return isinstance(exc, (BusError, TimeoutError, OSError))


async def _first(*events: asyncio.Event) -> None:
    """Return as soon as one of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
