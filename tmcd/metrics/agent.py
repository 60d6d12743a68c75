"""The metrics agent: turns the syncer, placement and workload streams into Prometheus metrics.

Sync events are handled inline in the consumer callback (no task per message, no
``.labels()`` per event); see :mod:`tmcd.metrics.model`.

Replicas split the events and each observe the state: the durable consumers (shared by every
replica with the same ``consumer.durable_prefix``) hand each sync event, placement decision and
WorkloadStats window to one replica, which counts it; heartbeats, connection events and the
decisions' selected clusters reach every replica through its own reader (a plain subscription,
primed with the last message of every subject from the stream at start and after a
reconnection), so every replica exports the same cluster state.  The durable consumers still
ack, count and dead-letter those messages; the agent applies them only from the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from tmcd.bus import BusError, Delivery, Resync
from tmcd.bus.lastvalue import last_per_subject
from tmcd.bus.ratelog import Throttle, more
from tmcd.bus.reader import observe
from tmcd.contracts.messages import (
    ConnectionEvent,
    HealthChange,
    PlacementDecision,
    SyncerHeartbeat,
    SyncEvent,
    SyncEventBatch,
    WorkloadStats,
)
from tmcd.contracts.subjects import (
    HEALTH_CHANGE,
    PLACEMENT_DECISION,
    STREAM_PLACEMENT,
    STREAM_SYNCER,
    STREAM_WORKLOAD,
    SYNCER_CONN,
    SYNCER_HEARTBEAT,
    Channel,
    health_changes,
)
from tmcd.metrics.model import FleetMetrics
from tmcd.metrics.workload import WorkloadMetrics
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.consumers import consume_streams
from tmcd.telemetry import batch_span, placement_span

log = logging.getLogger("tmcd.metrics")

OBSERVED: tuple[Channel, ...] = (SYNCER_HEARTBEAT, SYNCER_CONN, PLACEMENT_DECISION)
"""Channels every replica reads in full (cluster and placement state), beside the durable consumers."""
OBSERVE_PENDING = 65_536
"""Observed messages that may wait for the agent; past that NATS drops them (a slow consumer)."""


class MetricsAgent:
    """Consumes TMC_SYNCER, TMC_PLACEMENT and TMC_WORKLOAD."""

    name = "metrics"

    def __init__(self) -> None:
        self.fleet: FleetMetrics | None = None
        self.workloads: WorkloadMetrics | None = None
        self._now: Callable[[], float] = time.time

    def _fleet(self, ctx: AgentContext) -> FleetMetrics:
        # created once: the agent object outlives restarts, and metrics register once per registry
        if self.fleet is None:
            self.fleet = FleetMetrics(
                ctx.metrics.registry,
                ctx.metrics.event_lag,
                max_resources_per_cluster=ctx.config.metrics.max_resources_per_cluster,
                on_fallback=lambda: ctx.metrics.set_speedups("python"),
            )
            ctx.metrics.set_speedups(self.fleet.aggregation)  # tmc_build_info says what runs
        return self.fleet

    def _workloads(self, ctx: AgentContext) -> WorkloadMetrics:
        if self.workloads is None:
            self.workloads = WorkloadMetrics(
                ctx.metrics.registry, max_workloads_per_cluster=ctx.config.metrics.max_workloads_per_cluster
            )
        return self.workloads

    async def run(self, ctx: AgentContext) -> None:
        """Consume until stopped; forget silent clusters periodically."""
        fm = self._fleet(ctx)
        wm = self._workloads(ctx)
        clock = self._now = ctx.clock
        drops = Throttle(clock)
        tracer = ctx.tracer

        def on_syncer(d: Delivery[Any]) -> None:
            # heartbeats and connection events are acked here but applied from the observer
            msg = d.msg
            if isinstance(msg, SyncEventBatch):
                with batch_span(tracer, STREAM_SYNCER, len(msg.events), d.headers):
                    fm.on_sync_events(msg.cluster, msg.events, clock())
            elif isinstance(msg, SyncEvent):
                fm.on_sync_events(msg.cluster, (msg,), clock())

        def on_placement(d: Delivery[Any]) -> None:
            if isinstance(d.msg, PlacementDecision):
                with placement_span(tracer, d.msg.placement, d.headers):
                    fm.on_placement(d.msg)

        def on_workload(d: Delivery[Any]) -> None:
            # impossible stats raise InvalidWorkloadStats: the bus counts, logs and dead-letters them
            msg = d.msg
            if isinstance(msg, WorkloadStats) and not wm.on_stats(msg, clock()):
                held = drops.hit(msg.cluster)
                if held is not None:
                    log.warning(
                        "workload stats of %s/%s on cluster %s not exported: the cluster already has %d "
                        "workloads (metrics.max_workloads_per_cluster)%s",
                        msg.namespace,
                        msg.workload,
                        msg.cluster,
                        wm.max_workloads,
                        more(held, f"windows dropped on cluster {msg.cluster}"),
                    )

        async def on_health(d: Delivery[Any]) -> None:
            # the health agent forgot a silent cluster: drop its series here too
            if isinstance(d.msg, HealthChange) and d.msg.reason == "Forgotten":
                forgot = fm.forget(d.msg.name)
                if wm.forget(d.msg.name) or forgot:
                    log.info("forgot cluster %s (the health agent forgot it)", d.msg.name)

        health_sub = await ctx.bus.subscribe(health_changes("cluster"), on_health, channel=HEALTH_CHANGE)
        subs = [health_sub]

        async def again() -> None:
            log.info("read %d last heartbeats, connection events and decisions", await self.prime(ctx))

        # observed messages of an outage are gone: read the last ones again, until that works
        resync = Resync(again, "the last heartbeats, connection events and decisions")
        resync.attach(ctx.bus)
        tasks: list[asyncio.Task[None]] = []
        try:
            for ch in OBSERVED:
                subs.append(await observe(ctx.bus, ch.wildcard, self._apply, max_pending=OBSERVE_PENDING))
            try:
                await self.prime(ctx)
            except BusError as exc:
                log.warning("could not read the last heartbeats, connection events and decisions: %s", exc)
                resync.request()
            tasks.append(asyncio.create_task(self._sweep(ctx, fm, wm), name="metrics-sweep"))
            await consume_streams(
                ctx,
                self.name,
                {STREAM_SYNCER: on_syncer, STREAM_PLACEMENT: on_placement, STREAM_WORKLOAD: on_workload},
            )
        finally:
            await resync.close()
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _apply(self, d: Delivery[Any], heard: float | None = None) -> None:
        """Apply one observed message (every replica sees each of them); ``heard``: when it was
        heard of, for forgetting (now, unless read from the stream)."""
        fm, msg, now = self.fleet, d.msg, self._now() if heard is None else heard
        if fm is None:
            return
        if isinstance(msg, SyncerHeartbeat):
            fm.on_heartbeat(msg, now)
        elif isinstance(msg, ConnectionEvent):
            fm.on_connection(msg, now)
        elif isinstance(msg, PlacementDecision):
            fm.on_selected(msg)

    async def prime(self, ctx: AgentContext) -> int:
        """Apply the last stored message of every observed subject, oldest first (the model leaves
        out what is older than what it has), except those older than ``metrics.forget_after``.
        Returns how many were applied; raises BusError (nothing applied) when NATS cannot answer."""
        stored: list[Delivery[Any]] = []
        for ch in OBSERVED:
            assert ch.stream is not None
            stored += await last_per_subject(ctx.bus, ch.stream, ch.wildcard, ch, account=False)
        now = ctx.clock()
        oldest = now - ctx.config.metrics.forget_after
        recent = sorted((d for d in stored if d.msg.timestamp >= oldest), key=lambda d: float(d.msg.timestamp))
        for d in recent:
            # a stored message is as old as its timestamp: a silent cluster is still forgotten in time
            self._apply(d, min(now, float(d.msg.timestamp)))
        return len(recent)

    async def _sweep(self, ctx: AgentContext, fm: FleetMetrics, wm: WorkloadMetrics) -> None:
        cfg = ctx.config.metrics
        while not ctx.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stop.wait(), cfg.sweep_interval)
            # one cluster at a time, yielding in between: forgetting a large fleet at once
            # (~130 series each) would stall ingestion for as long
            for name in fm.stale(ctx.clock(), cfg.forget_after):
                if fm.forget_if_stale(name, ctx.clock(), cfg.forget_after):
                    log.info("forgot cluster %s: nothing heard for %.0fs", name, cfg.forget_after)
                await asyncio.sleep(0)
            for name in wm.stale(ctx.clock(), cfg.forget_after):
                if n := wm.forget_stale(name, ctx.clock(), cfg.forget_after):
                    log.info("forgot %d workloads of cluster %s: no stats for %.0fs", n, name, cfg.forget_after)
                await asyncio.sleep(0)
