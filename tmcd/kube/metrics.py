"""The kube agent's Prometheus series (declared in :mod:`tmcd.metrics.catalog_kube`)."""

from __future__ import annotations

from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge

from tmcd.metrics.catalog import create
from tmcd.metrics.catalog_kube import EVENT_RESULTS, EVENT_TYPES, KINDS, RELIST_REASONS, WRITE_RESULTS

__all__ = ["KubeMetrics"]


class KubeMetrics:
    """Watch events, relists, status and Event writes, the API server's reachability.  Every label
    combination is exported at 0 from the start, so an alert's ``increase()`` has a series at once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.api_up = cast(Gauge, create("tmc_kube_api_up", registry))
        self.watch_events = cast(Counter, create("tmc_kube_watch_events_total", registry))
        self.relists = cast(Counter, create("tmc_kube_relists_total", registry))
        self.status_writes = cast(Counter, create("tmc_kube_status_writes_total", registry))
        self.pending = cast(Gauge, create("tmc_kube_status_writes_pending", registry))
        self.event_writes = cast(Counter, create("tmc_kube_event_writes_total", registry))
        for kind in KINDS:
            for t in EVENT_TYPES:
                self.watch_events.labels(kind, t)
            for reason in RELIST_REASONS:
                self.relists.labels(kind, reason)
        for result in WRITE_RESULTS:
            self.status_writes.labels(result)
        for result in EVENT_RESULTS:
            self.event_writes.labels(result)

    def watch_event(self, kind: str, type_: str) -> None:
        """Count one watch event (types outside the four Kubernetes sends are not counted)."""
        if kind in KINDS and type_ in EVENT_TYPES:
            self.watch_events.labels(kind, type_).inc()

    def relist(self, kind: str, reason: str) -> None:
        """Count one completed full list."""
        self.relists.labels(kind, reason).inc()

    def status_write(self, result: str) -> None:
        """Count one status write attempt's result (one of ``WRITE_RESULTS``)."""
        self.status_writes.labels(result).inc()

    def event_write(self, ok: bool) -> None:
        """Count one Event create."""
        self.event_writes.labels("created" if ok else "failed").inc()
