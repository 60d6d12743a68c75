"""The daemon's own Prometheus metrics, on a registry owned by one daemon instance.

Agents add their metrics to the same registry; ``/metrics`` renders it.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from tmcd import __version__

# `_created` series double every counter's output and nobody queries them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class SelfMetrics:
    """Metrics every part of the runtime writes to."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.build_info = Info("tmc_build", "tmcd build information.", registry=self.registry)
        self.build_info.info({"version": __version__})
        self.events_invalid = Counter(
            "tmc_events_invalid",
            "Messages rejected as malformed, by message kind and reason; each is dead-lettered.",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.events_processed = Counter(
            "tmc_events_processed",
            "Messages decoded and handled, by JetStream stream (or 'core' for plain subscriptions).",
            ["stream"],
            registry=self.registry,
        )
        self.agent_restarts = Counter(
            "tmc_agent_restarts",
            "Times an agent crashed and was restarted.",
            ["agent"],
            registry=self.registry,
        )
        self.nats_connected = Gauge(
            "tmc_nats_connected", "1 while tmcd is connected to NATS, else 0.", registry=self.registry
        )
