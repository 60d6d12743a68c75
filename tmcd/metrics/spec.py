"""What a metric family is: :class:`MetricSpec` (the catalog, :mod:`tmcd.metrics.catalog`, lists them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Kind", "MetricSpec"]

Kind = Literal["counter", "gauge", "histogram", "info"]


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric family."""

    name: str
    """Full name as scraped (counters end in ``_total``)."""
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    example: str = ""
    """A PromQL query a user would start from (docs/metrics.md)."""
    group: str = "tmcd"

    @property
    def base(self) -> str:
        """The name given to prometheus-client (without ``_total`` / ``_info``)."""
        if self.kind == "counter":
            return self.name.removesuffix("_total")
        if self.kind == "info":
            return self.name.removesuffix("_info")
        return self.name

    @property
    def series_names(self) -> tuple[str, ...]:
        """Sample names that appear in the exposition."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)
