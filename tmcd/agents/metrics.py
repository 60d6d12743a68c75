"""The metrics agent: consumes the syncer, placement and workload streams.

This foundation counts what it processes (``tmc_events_processed_total{stream}``); the
metrics issue turns the events into syncer, placement and cluster metrics.
"""

from __future__ import annotations

from typing import Any

from tmcd.agents.base import AgentContext
from tmcd.agents.consumers import consume_streams
from tmcd.bus import Delivery
from tmcd.contracts.subjects import STREAM_PLACEMENT, STREAM_SYNCER, STREAM_WORKLOAD


class MetricsAgent:
    """Turns syncer, placement and workload events into Prometheus metrics."""

    name = "metrics"

    async def run(self, ctx: AgentContext) -> None:
        """Consume until stopped."""
        await consume_streams(
            ctx,
            self.name,
            {STREAM_SYNCER: self._on_event, STREAM_PLACEMENT: self._on_event, STREAM_WORKLOAD: self._on_event},
        )

    async def _on_event(self, delivery: Delivery[Any]) -> None:
        """Every decoded event is counted by the bus; richer metrics come with the metrics issue."""
