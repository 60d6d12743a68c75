"""The rollback engine's Prometheus series (defined in :mod:`tmcd.metrics.catalog`)."""

from __future__ import annotations

from typing import cast

from prometheus_client import CollectorRegistry, Counter, Histogram

from tmcd.metrics.catalog import create
from tmcd.resources.canary import CanaryRollout, CanaryRolloutStatus

__all__ = ["RollbackMetrics"]


class RollbackMetrics:
    """Rollbacks by trigger and result, and how long each stage took."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.total = cast(Counter, create("tmc_rollbacks_total", registry))
        self.duration = cast(Histogram, create("tmc_rollback_duration_seconds", registry))

    def stage(self, stage: str, seconds: float) -> None:
        """A stage was reached after ``seconds`` (``completed``: the whole rollback)."""
        if stage in ("traffic", "placement", "cleanup", "completed"):
            self.duration.labels(stage).observe(seconds)

    def finished(self, r: CanaryRollout, st: CanaryRolloutStatus) -> None:
        """Count a rollback that ended."""
        rb = st.rollback
        if rb is None:
            return
        result = "Completed" if rb.phase == "Completed" else "Failed"
        self.total.labels(r.metadata.namespace, r.metadata.name, rb.trigger or "Unknown", result).inc()
