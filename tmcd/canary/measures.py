"""What each measure is, how to read it from pooled data, and how evidence numbers are written.

Three kinds of measure:

``count`` (error_ratio, sync_error_ratio)
    errors / requests of the pooled windows; per-window samples are each window's ratio.
``quantile`` (latency_p99, sync_latency_p99)
    ``histogram_quantile`` of the pooled histogram; per-window samples are each window's quantile.
``rate`` (request_rate)
    requests per second summed over the clusters; comparisons use requests per second and per
    unit of traffic share (the ``share`` given with each window), so tracks with different
    weights compare fairly.

Which change is a regression ("worse") defaults per measure: higher error ratios and latencies,
lower request rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tmcd.canary.ranks import summary
from tmcd.canary.samples import Track, bucket_at_rank, histogram_quantile
from tmcd.canary.stats import binom_quantile_ranks

__all__ = ["MEASURES", "Direction", "Measure", "jsonable", "num"]

Direction = Literal["increase", "decrease", "either"]
"""Which change of the canary against stable (or against a threshold) is a regression."""


@dataclass(frozen=True, slots=True)
class Measure:
    """A named statistic of a track's pooled windows."""

    name: str
    kind: Literal["count", "quantile", "rate"]
    q: float = 0.0
    """The quantile, for kind quantile."""

    @property
    def worse(self) -> Direction:
        """The default regression direction."""
        return "decrease" if self.kind == "rate" else "increase"

    def has_data(self, t: Track) -> bool:
        """Whether the track has anything to measure."""
        if self.kind == "count":
            return t.requests > 0
        if self.kind == "quantile":
            return t.latency is not None and t.latency[-1] > 0
        return bool(t.windows)

    def value(self, t: Track) -> float:
        """The pooled value (NaN without data)."""
        if self.kind == "count":
            return t.errors / t.requests if t.requests > 0 else math.nan
        if self.kind == "quantile":
            return self._quantile(t.bounds, t.latency)
        seconds = math.fsum(w.seconds for w in t.windows.values())
        return t.requests / seconds if seconds > 0 else math.nan

    def window_values(self, t: Track) -> list[float]:
        """Per-window samples (windows without data are left out, as Kayenta removes NaN)."""
        out: list[float] = []
        for w in t.value_windows():
            v = w.values.get(self.name)
            if v is None:
                if self.kind == "count":
                    v = w.errors / w.requests if w.requests > 0 else math.nan
                elif self.kind == "quantile":
                    v = self._quantile(t.bounds, w.latency)
                else:
                    v = w.requests / w.exposure if w.exposure > 0 else math.nan
                w.values[self.name] = v
            if not math.isnan(v):
                out.append(v)
        return out

    def _quantile(self, bounds: Sequence[float] | None, cum: Sequence[float] | None) -> float:
        if bounds is None or cum is None:
            return math.nan
        return histogram_quantile(self.q, list(zip([*bounds, math.inf], cum, strict=True)))

    def quantile_interval(self, t: Track, confidence: float) -> tuple[float, float]:
        """Distribution-free interval of the pooled quantile, as far as the histogram can resolve it.

        The order statistics that bound the quantile (binomial ranks) are located in their
        buckets, and the interval runs from the lower edge of one to the upper edge of the
        other: no interpolation, so a bucket wider than the tolerance shows as an interval
        too wide to decide on, never as a precise value.  0 below when too few observations
        lie under the quantile; +Inf above when too few lie over it or the bucket is +Inf.
        """
        assert t.bounds is not None and t.latency is not None
        n = round(t.latency[-1])
        r, s = binom_quantile_ranks(n, self.q, confidence)
        bounds = [*t.bounds, math.inf]
        lo = 0.0 if r < 1 else bucket_at_rank(bounds, t.latency, r)[0]
        hi = math.inf if s > n else bucket_at_rank(bounds, t.latency, s)[1]
        return lo, hi

    def track_evidence(self, t: Track, samples: bool) -> dict[str, Any]:
        """Counts and value of a track, and optionally its per-window samples summary."""
        out: dict[str, Any] = {"windows": len(t.windows), "value": num(self.value(t))}
        if self.kind == "count":
            out.update(requests=num(t.requests), errors=num(t.errors))
        elif self.kind == "quantile":
            out.update(observations=num(t.latency[-1] if t.latency else 0.0))
            if t.mismatched_histograms:
                out.update(mismatchedHistograms=t.mismatched_histograms)
        else:
            out.update(requests=num(t.requests), seconds=num(math.fsum(w.seconds for w in t.windows.values())))
        if samples:
            out["samples"] = {k: num(v) for k, v in summary(self.window_values(t)).items()}
        return out


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("error_ratio", "count"),
        Measure("sync_error_ratio", "count"),
        Measure("latency_p99", "quantile", 0.99),
        Measure("sync_latency_p99", "quantile", 0.99),
        Measure("request_rate", "rate"),
    )
}
"""Every measure the pooled-data providers (nats, syncer) offer."""


def num(x: float | None) -> float | int | None:
    """A number for the evidence: 6 significant digits (whole numbers as int), None when not finite."""
    if x is None or not math.isfinite(x):
        return None
    v = float(f"{x:.6g}")
    return int(v) if v.is_integer() and abs(v) < 2**53 else v


def jsonable(lo: float, hi: float) -> list[float | int | None]:
    """An interval for the evidence (open ends as null)."""
    return [num(lo), num(hi)]
