"""The health agent's metrics: per-cluster status and conditions, last heartbeat, fleet counts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import cast

from prometheus_client import CollectorRegistry, Gauge

from tmcd.health.aggregate import STATUSES
from tmcd.metrics.catalog import create

CONDITION_TYPES = ("HeartbeatHealthy", "SyncerReady", "Ready")
CONDITION_STATUSES = ("True", "False", "Unknown")


class HealthMetrics:
    """State-set gauges kept in step with the health model."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.status = cast(Gauge, create("tmc_cluster_health_status", registry))
        self.condition = cast(Gauge, create("tmc_cluster_condition", registry))
        self.last_heartbeat = cast(Gauge, create("tmc_cluster_last_heartbeat_timestamp_seconds", registry))
        self.fleet = cast(Gauge, create("tmc_fleet_clusters", registry))
        for st in STATUSES:
            self.fleet.labels(st).set(0)
        self.outbox = cast(Gauge, create("tmc_health_outbox_pending", registry))

    def set_status(self, cluster: str, status: str) -> None:
        """1 for ``status``, 0 for the other statuses."""
        for st in STATUSES:
            self.status.labels(cluster, st).set(1 if st == status else 0)

    def set_conditions(self, cluster: str, conditions: Iterable[tuple[str, str]]) -> None:
        """(type, status) pairs as a state set per condition type."""
        for ctype, cstatus in conditions:
            for st in CONDITION_STATUSES:
                self.condition.labels(cluster, ctype, st).set(1 if st == cstatus else 0)

    def set_last_heartbeat(self, cluster: str, ts: float) -> None:
        """Unix time the last heartbeat was received."""
        self.last_heartbeat.labels(cluster).set(ts)

    def set_fleet(self, counts: dict[str, int]) -> None:
        """Clusters per status."""
        for st in STATUSES:
            self.fleet.labels(st).set(counts.get(st, 0))

    def clear(self) -> None:
        """Remove every cluster's series and zero the fleet: this replica no longer leads the
        health agent, and a follower must not keep exporting what it last knew."""
        for metric in (self.status, self.condition, self.last_heartbeat):
            metric.clear()
        self.set_fleet({})
        self.outbox.set(0)

    def forget(self, cluster: str) -> None:
        """Remove every series of a cluster."""
        for st in STATUSES:
            _remove(self.status, cluster, st)
        for ctype in CONDITION_TYPES:
            for st in CONDITION_STATUSES:
                _remove(self.condition, cluster, ctype, st)
        _remove(self.last_heartbeat, cluster)


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
