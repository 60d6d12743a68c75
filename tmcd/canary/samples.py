"""What an analysis run has seen: WorkloadStats windows pooled per track, and histogram quantiles.

A measurement judges everything its run has seen so far, so low traffic becomes conclusive
with time.  :class:`RunData` is fed every window in arrival order (:meth:`RunData.add_stats`
for the mesh's ``WorkloadStats``, :meth:`RunData.add_window` for plain counts such as the
syncer provider's) and keeps, per track:

* the pooled totals (requests, errors, seconds, the summed latency histogram), updated in
  O(buckets) per window, so count tests cost O(1) per measurement;
* per-window values (the windows of all clusters with the same window index pooled), the
  samples of the Mann-Whitney and t tests.

Windows are indexed by ``round(timestamp / window_seconds)``, so the same window from several
clusters lands in one index even with some clock skew.  A redelivered window (same source,
track and index -- JetStream delivers at least once) is ignored.

The sequential two-sample test needs each window's final counts: a window index is *sealed*
once a later index has been seen on either track; data that arrives for a sealed index still
counts in the pooled totals but not in the sequential test (``late`` in the evidence).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from tmcd.canary.sequential import TwoSampleMixture
from tmcd.contracts.messages import WorkloadStats

__all__ = ["RunData", "Track", "TrackName", "Window", "bucket_at_rank", "histogram_quantile"]

TrackName = Literal["canary", "stable"]

# --- histograms ----------------------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The q-quantile of a cumulative histogram, exactly as PromQL's ``histogram_quantile``.

    ``buckets`` are (upper bound ``le``, cumulative count) pairs in any order; the highest must
    be +Inf.  Linear interpolation within the bucket holding rank q * total (from 0 for the first
    bucket when its bound is positive); a quantile in the +Inf bucket is the highest finite bound.
    NaN when q is NaN, there is no +Inf bucket, fewer than two buckets, or no observations;
    -Inf for q < 0 and +Inf for q > 1.  Equal bounds are merged and decreasing counts raised
    (PromQL's coalescing and monotonicity fix).
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if not buckets:
        return math.nan
    ordered = sorted(buckets, key=lambda b: b[0])
    if ordered[-1][0] != math.inf:
        return math.nan
    merged: list[list[float]] = []
    for le, count in ordered:
        if merged and merged[-1][0] == le:
            merged[-1][1] += count
        else:
            merged.append([le, count])
    prev = merged[0][1]
    for b in merged[1:]:  # float noise (relative 1e-12) flattened first, as PromQL does
        if b[1] != prev and abs(b[1] - prev) / b[1] <= 1e-12:
            b[1] = prev
        else:
            prev = b[1]
    top = merged[0][1]
    for b in merged[1:]:  # then the monotonic envelope
        top = max(top, b[1])
        b[1] = top
    if len(merged) < 2:
        return math.nan
    total = merged[-1][1]
    if total == 0:
        return math.nan
    return _interpolate([b[0] for b in merged], [b[1] for b in merged], q * total)


def _interpolate(bounds: Sequence[float], cumulative: Sequence[float], rank: float) -> float:
    """PromQL's value at ``rank`` of a merged, monotonic cumulative histogram ending with +Inf."""
    last = len(bounds) - 1
    b = next((i for i in range(last) if cumulative[i] >= rank), last)
    if b == last:
        return bounds[last - 1]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0 if b == 0 else bounds[b - 1]
    count = cumulative[b] - (0.0 if b == 0 else cumulative[b - 1])
    within = rank - (0.0 if b == 0 else cumulative[b - 1])
    if count == 0:  # rank 0 in an empty first bucket: PromQL's 0/0
        return math.nan
    return start + (bounds[b] - start) * (within / count)


def bucket_at_rank(bounds: Sequence[float], cumulative: Sequence[float], rank: float) -> tuple[float, float]:
    """The edges (lower, upper] of the bucket holding the observation of ``rank``.

    What a histogram can say about one order statistic without assuming how observations
    spread within a bucket: the first bucket starts at 0 when its bound is positive (as
    PromQL assumes), else at -Inf; the +Inf bucket ends at +Inf.
    """
    last = len(bounds) - 1
    b = next((i for i in range(last) if cumulative[i] >= rank), last)
    if b > 0:
        return bounds[b - 1], bounds[b]
    return (0.0 if bounds[0] > 0 else -math.inf), bounds[0]


# --- windows and tracks --------------------------------------------------------------------------


@dataclass(slots=True)
class Window:
    """One window index of one track, pooled over the clusters that reported it."""

    index: int
    requests: float = 0.0
    errors: float = 0.0
    seconds: float = 0.0
    """Length of the window (the longest reported; clusters share the same window)."""
    exposure: float = 0.0
    """Seconds times traffic share, summed over clusters: the denominator of request_rate comparisons."""
    latency: list[float] | None = None
    """Cumulative counts per bound of the track, the last being +Inf; None without a histogram."""
    values: dict[str, float] = field(default_factory=dict)
    """Per-measure values of this window, computed once (cleared when a report adds to it)."""


@dataclass(slots=True)
class Track:
    """Everything one track (canary or stable) has reported to the run."""

    bounds: tuple[float, ...] | None = None
    """Finite latency bounds, from the first histogram; +Inf is implied."""
    windows: dict[int, Window] = field(default_factory=dict)
    requests: float = 0.0
    errors: float = 0.0
    seconds: float = 0.0
    exposure: float = 0.0
    latency: list[float] | None = None
    """Pooled cumulative latency counts (last = +Inf)."""
    reports: int = 0
    """Distinct (source, window) reports pooled."""
    mismatched_histograms: int = 0
    """Reports whose latency bounds differ from the first ones (their latency is left out)."""

    def value_windows(self) -> list[Window]:
        """Windows in index order."""
        return [self.windows[k] for k in sorted(self.windows)]


def _cumulative(bounds: Sequence[float], counts: Sequence[float], total: float) -> list[float]:
    """Cumulative counts with the +Inf bucket appended; ``total`` fills it when larger."""
    out = [float(c) for c in counts]
    out.append(max(float(total), out[-1] if out else 0.0))
    return out


class RunData:
    """The pooled data of one analysis run; fed in arrival order, read by the judges."""

    def __init__(self) -> None:
        self.tracks: dict[TrackName, Track] = {"canary": Track(), "stable": Track()}
        self.duplicates = 0
        """Reports ignored because the same source already reported that track and window."""
        self.late = 0
        """Reports for an already sealed window (pooled, but not in the sequential test)."""
        self._seen: set[tuple[str, str, int]] = set()
        self._max_index: int | None = None
        self._sealed: set[int] = set()
        self._open: set[int] = set()
        self._sealed_order: list[tuple[float, float, float, float]] = []
        """Sealed windows in sealing order: canary errors, canary requests, stable errors, stable requests."""
        self._mixtures: dict[float, tuple[int, TwoSampleMixture]] = {}

    # --- feeding -------------------------------------------------------------------------------

    def add_stats(self, stats: WorkloadStats, share: float = 1.0) -> bool:
        """Pool one ``WorkloadStats`` (source = its cluster); False if it was a duplicate.

        ``share`` is the fraction of the route's traffic the track had on that cluster (the
        weight), so request rates of tracks with different weights compare per unit of traffic.
        Requests above the last latency bound count in the +Inf bucket.
        """
        return self.add_window(
            stats.track,
            stats.cluster,
            stats.timestamp,
            stats.window_seconds,
            requests=stats.requests,
            errors=stats.errors,
            bounds=stats.latency.bounds,
            cumulative=stats.latency.counts,
            share=share,
        )

    def add_window(
        self,
        track: TrackName,
        source: str,
        timestamp: float,
        window_seconds: float,
        *,
        requests: float,
        errors: float,
        bounds: Sequence[float] = (),
        cumulative: Sequence[float] = (),
        share: float = 1.0,
    ) -> bool:
        """Pool one window of plain counts (e.g. sync events: requests = events, errors = failures).

        ``bounds``/``cumulative`` are a cumulative latency histogram (finite bounds, ascending;
        an +Inf bucket holding ``requests`` is implied).  False if it was a duplicate.
        """
        if window_seconds <= 0 or not math.isfinite(timestamp):
            raise ValueError(f"window of {source}/{track}: window_seconds must be > 0 and timestamp finite")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"window of {source}/{track}: share must be within 0..1, got {share}")
        if errors > requests or errors < 0:
            raise ValueError(f"window of {source}/{track}: errors ({errors}) must be within 0..requests ({requests})")
        index = round(timestamp / window_seconds)
        key = (source, track, index)
        if key in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(key)
        t = self.tracks[track]
        t.reports += 1
        w = t.windows.get(index)
        if w is None:
            w = t.windows[index] = Window(index)
        w.values.clear()
        w.requests += requests
        w.errors += errors
        w.seconds = max(w.seconds, window_seconds)
        w.exposure += window_seconds * share
        t.requests += requests
        t.errors += errors
        t.seconds += window_seconds
        t.exposure += window_seconds * share
        finite = tuple(b for b in bounds if math.isfinite(b))
        if finite:
            usable = len(cumulative) >= len(finite) and all(a < b for a, b in itertools.pairwise(finite))
            if usable and t.bounds is None:
                t.bounds = finite
            if usable and finite == t.bounds:
                cum = _cumulative(finite, cumulative[: len(finite)], requests)
                w.latency = cum if w.latency is None else [a + b for a, b in zip(w.latency, cum, strict=True)]
                t.latency = list(cum) if t.latency is None else [a + b for a, b in zip(t.latency, cum, strict=True)]
            else:  # other bounds than the track's first, not ascending, or too few counts
                t.mismatched_histograms += 1
        self._note_index(index)
        return True

    def _note_index(self, index: int) -> None:
        if index in self._sealed:
            self.late += 1
        else:
            self._open.add(index)
        if self._max_index is not None and index <= self._max_index:
            return
        self._max_index = index
        for k in sorted(k for k in self._open if k < index):
            self._open.discard(k)
            self._sealed.add(k)
            c = self.tracks["canary"].windows.get(k)
            s = self.tracks["stable"].windows.get(k)
            self._sealed_order.append(
                (c.errors if c else 0.0, c.requests if c else 0.0, s.errors if s else 0.0, s.requests if s else 0.0)
            )

    # --- reading -------------------------------------------------------------------------------

    def sealed_windows(self) -> int:
        """How many windows the sequential two-sample test has taken in."""
        return len(self._sealed_order)

    def mixture(self, rho0: float) -> TwoSampleMixture:
        """The two-sample sequential mixture against ``rho0``, brought up to date incrementally."""
        done, mix = self._mixtures.get(rho0, (0, TwoSampleMixture(rho0)))
        for ce, cr, se, sr in self._sealed_order[done:]:
            ratio = cr / sr if sr > 0 else math.inf
            mix.add(ce, ce + se, ratio if cr > 0 else 0.0)
        self._mixtures[rho0] = (len(self._sealed_order), mix)
        return mix
