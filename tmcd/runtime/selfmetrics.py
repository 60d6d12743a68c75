"""The daemon's own Prometheus metrics, on a registry owned by one daemon instance.

Agents add their metrics to the same registry; ``/metrics`` renders it.  Definitions
(names, labels, help) come from :mod:`tmcd.metrics.catalog`.

Creating one is where a daemon starts, so it is also where ``TMCD_NO_SPEEDUPS`` is read
and the metrics agent's C path is self-checked (both once; a bad value raises
:class:`tmcd.config.ConfigError`, which the CLI turns into one line and exit code 2).
"""

from __future__ import annotations

from typing import cast

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from tmcd import __version__
from tmcd.bus.natserrors import METRIC_KINDS as NATS_ERROR_KINDS
from tmcd.contracts.codec import INVALID_KINDS, REASONS
from tmcd.metrics.catalog import create, spec
from tmcd.metrics.model import speedups_mode

# `_created` series double every counter's output and nobody queries them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class SelfMetrics:
    """Metrics every part of the runtime writes to."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        info = spec("tmc_build_info")
        self.build_info = Info(info.base, info.help, registry=self.registry)
        self.speedups = ""
        self.set_speedups(speedups_mode())
        self.events_invalid = cast(Counter, create("tmc_events_invalid_total", self.registry))
        for kind in INVALID_KINDS:  # ~16 kinds x 7 reasons: alert rules on rate() have a series at once
            for reason in REASONS:
                self.events_invalid.labels(kind, reason)
        self.events_processed = cast(Counter, create("tmc_events_processed_total", self.registry))
        self.agent_restarts = cast(Counter, create("tmc_agent_restarts_total", self.registry))
        self.leader = cast(Gauge, create("tmc_leader", self.registry))
        self.nats_connected = cast(Gauge, create("tmc_nats_connected", self.registry))
        self.event_lag = cast(Histogram, create("tmc_event_lag_seconds", self.registry))
        self.consumer_pending = cast(Gauge, create("tmc_consumer_pending_messages", self.registry))
        self.nats_errors = cast(Counter, create("tmc_nats_errors_total", self.registry))
        for kind in NATS_ERROR_KINDS:  # exported at 0, so rate() has a series from the start
            self.nats_errors.labels(kind)
        self.dead_letters_dropped = cast(Counter, create("tmc_dead_letters_dropped_total", self.registry))

    def set_speedups(self, mode: str) -> None:
        """Record which per-event path the metrics agent runs ("c" or "python") in tmc_build_info."""
        self.speedups = mode
        self.build_info.info({"version": __version__, "speedups": mode})
