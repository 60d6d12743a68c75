"""The metrics agent: turns the syncer, placement and workload streams into Prometheus metrics.

Sync events are handled inline in the consumer callback (no task per message, no
``.labels()`` per event); see :mod:`tmcd.metrics.model`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from tmcd.bus import Delivery
from tmcd.bus.ratelog import Throttle, more
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
    STREAM_PLACEMENT,
    STREAM_SYNCER,
    STREAM_WORKLOAD,
    health_changes,
)
from tmcd.metrics.model import FleetMetrics
from tmcd.metrics.workload import WorkloadMetrics
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.consumers import consume_streams
from tmcd.telemetry import batch_span, placement_span

log = logging.getLogger("tmcd.metrics")


class MetricsAgent:
    """Consumes TMC_SYNCER, TMC_PLACEMENT and TMC_WORKLOAD."""

    name = "metrics"

    def __init__(self) -> None:
        self.fleet: FleetMetrics | None = None
        self.workloads: WorkloadMetrics | None = None

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
        clock = ctx.clock
        drops = Throttle(clock)
        tracer = ctx.tracer

        def on_syncer(d: Delivery[Any]) -> None:
            msg = d.msg
            if isinstance(msg, SyncEventBatch):
                with batch_span(tracer, STREAM_SYNCER, len(msg.events), d.headers):
                    fm.on_sync_events(msg.cluster, msg.events, clock())
            elif isinstance(msg, SyncEvent):
                fm.on_sync_events(msg.cluster, (msg,), clock())
            elif isinstance(msg, SyncerHeartbeat):
                fm.on_heartbeat(msg, clock())
            elif isinstance(msg, ConnectionEvent):
                fm.on_connection(msg, clock())

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
        sweeper = asyncio.create_task(self._sweep(ctx, fm, wm), name="metrics-sweep")
        try:
            await consume_streams(
                ctx,
                self.name,
                {STREAM_SYNCER: on_syncer, STREAM_PLACEMENT: on_placement, STREAM_WORKLOAD: on_workload},
            )
        finally:
            with contextlib.suppress(Exception):
                await health_sub.unsubscribe()
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

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
