"""The metrics agent: turns the syncer and placement streams into Prometheus metrics.

Sync events are handled inline in the consumer callback (no task per message, no
``.labels()`` per event); see :mod:`tmcd.metrics.model`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from tmcd.bus import Delivery
from tmcd.contracts.messages import (
    ConnectionEvent,
    HealthChange,
    PlacementDecision,
    SyncerHeartbeat,
    SyncEvent,
    SyncEventBatch,
)
from tmcd.contracts.subjects import (
    HEALTH_CHANGE,
    STREAM_PLACEMENT,
    STREAM_SYNCER,
    STREAM_WORKLOAD,
    health_changes,
)
from tmcd.metrics.model import FleetMetrics
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.consumers import consume_streams
from tmcd.telemetry import batch_span, placement_span

log = logging.getLogger("tmcd.metrics")


class MetricsAgent:
    """Consumes TMC_SYNCER, TMC_PLACEMENT and TMC_WORKLOAD."""

    name = "metrics"

    def __init__(self) -> None:
        self.fleet: FleetMetrics | None = None

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

    async def run(self, ctx: AgentContext) -> None:
        """Consume until stopped; forget silent clusters periodically."""
        fm = self._fleet(ctx)
        clock = ctx.clock
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
            """Workload stats feed canary analysis (the canary agent); counted here only."""

        async def on_health(d: Delivery[Any]) -> None:
            # the health agent forgot a silent cluster: drop its series here too
            if isinstance(d.msg, HealthChange) and d.msg.reason == "Forgotten" and fm.forget(d.msg.name):
                log.info("forgot cluster %s (the health agent forgot it)", d.msg.name)

        health_sub = await ctx.bus.subscribe(health_changes("cluster"), on_health, channel=HEALTH_CHANGE)
        sweeper = asyncio.create_task(self._sweep(ctx, fm), name="metrics-sweep")
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

    async def _sweep(self, ctx: AgentContext, fm: FleetMetrics) -> None:
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
