"""Workload request metrics: the service mesh's ``WorkloadStats`` windows as Prometheus series.

Counters add each window's requests and errors; the latency histogram re-bins the window's
cumulative histogram onto :data:`tmcd.metrics.catalog.WORKLOAD_DURATION_BUCKETS` (every 8th
of the mesh's bounds) and adds the counts to the histogram child's buckets, so both
renderers (:mod:`tmcd.metrics.exposition` and prometheus-client's) read them as they read
any histogram.  Workloads per cluster are capped; workloads not reported for a while are
forgotten.  No I/O; time comes in as arguments.  WorkloadStats are low rate (one per
workload, track and cluster per window), so nothing here is optimised.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram

from tmcd.contracts.codec import InvalidMessage
from tmcd.contracts.messages import WorkloadStats
from tmcd.metrics import catalog

BOUND_TOLERANCE = 1e-6
"""An incoming bound up to this much (relative) above an exported one still counts as equal:
a publisher computing 10**-2.25 exactly (0.0056234133) matches 0.00562341."""


class InvalidWorkloadStats(InvalidMessage):
    """WorkloadStats that decode but cannot be true (more errors than requests, a histogram
    that is not cumulative over ascending bounds)."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid_fields", detail, WorkloadStats.KIND)


def check(stats: WorkloadStats) -> None:
    """Raise :class:`InvalidWorkloadStats` naming the first thing wrong with ``stats``."""
    if stats.errors > stats.requests:
        raise InvalidWorkloadStats(f"errors ({stats.errors}) exceed requests ({stats.requests})")
    h = stats.latency
    if len(h.counts) != len(h.bounds):
        raise InvalidWorkloadStats(f"latency has {len(h.bounds)} bounds but {len(h.counts)} counts")
    if not all(math.isfinite(b) for b in h.bounds) or any(a >= b for a, b in pairwise(h.bounds)):
        raise InvalidWorkloadStats("latency bounds are not finite and strictly ascending")
    if h.counts and (h.counts[0] < 0 or any(a > b for a, b in pairwise(h.counts))):
        raise InvalidWorkloadStats("latency counts are not cumulative (non-negative, never decreasing)")
    if h.counts and h.counts[-1] > stats.requests:
        raise InvalidWorkloadStats(f"latency counts ({h.counts[-1]}) exceed requests ({stats.requests})")
    if not math.isfinite(h.sum_seconds):
        raise InvalidWorkloadStats("latency sum_seconds is not finite")


def rebin(bounds: Sequence[float], cumulative: Sequence[int], to: Sequence[float]) -> list[int]:
    """The cumulative count at each of ``to``: that of the largest of ``bounds`` <= it (within
    :data:`BOUND_TOLERANCE`), 0 below the first.  Exact where ``bounds`` include it; else a
    lower bound (requests between the two bounds are counted in a later bucket)."""
    out: list[int] = []
    for b in to:
        i = bisect_right(bounds, b * (1.0 + BOUND_TOLERANCE))
        out.append(cumulative[i - 1] if i else 0)
    return out


@dataclass
class _Workload:
    """One workload of a cluster: when last reported and the tracks it has series for."""

    last_seen: float
    tracks: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)
    """Track -> (requests child, errors child, histogram child)."""


@dataclass
class _Cluster:
    workloads: dict[tuple[str, str], _Workload] = field(default_factory=dict)
    """(namespace, workload) -> its series."""
    dropped: Any = None
    """The tmc_workload_stats_dropped_total child."""


class WorkloadMetrics:
    """``tmc_workload_*`` series on one registry, fed with WorkloadStats."""

    def __init__(self, registry: CollectorRegistry, *, max_workloads_per_cluster: int = 100) -> None:
        self.requests = cast(Counter, catalog.create("tmc_workload_requests_total", registry))
        self.errors = cast(Counter, catalog.create("tmc_workload_errors_total", registry))
        self.duration = cast(Histogram, catalog.create("tmc_workload_request_duration_seconds", registry))
        self.dropped = cast(Counter, catalog.create("tmc_workload_stats_dropped_total", registry))
        self.bounds = tuple(catalog.spec("tmc_workload_request_duration_seconds").buckets)
        self.max_workloads = max_workloads_per_cluster
        self.clusters: dict[str, _Cluster] = {}

    def on_stats(self, stats: WorkloadStats, now: float) -> bool:
        """Add one window; False when it was dropped (its cluster is at the cap).

        Raises :class:`InvalidWorkloadStats` (and changes nothing) for impossible stats.
        """
        check(stats)
        cs = self.clusters.get(stats.cluster)
        if cs is None:
            cs = self.clusters[stats.cluster] = _Cluster()
            cs.dropped = self.dropped.labels(stats.cluster)  # at 0 from the first window on
        key = (stats.namespace, stats.workload)
        wl = cs.workloads.get(key)
        if wl is None:
            if len(cs.workloads) >= self.max_workloads:
                cs.dropped.inc()
                return False
            wl = cs.workloads[key] = _Workload(now)
        wl.last_seen = now
        children = wl.tracks.get(stats.track)
        if children is None:
            labels = (stats.cluster, stats.namespace, stats.workload, stats.track)
            children = wl.tracks[stats.track] = (
                self.requests.labels(*labels),
                self.errors.labels(*labels),
                self.duration.labels(*labels),
            )
        requests, errors, duration = children
        requests.inc(stats.requests)
        errors.inc(stats.errors)
        h = stats.latency
        if h.bounds:  # no histogram: the latencies are unknown, not slow
            _add_window(duration, rebin(h.bounds, h.counts, self.bounds), stats.requests, h.sum_seconds)
        return True

    # -- forgetting ---------------------------------------------------------------------

    def forget(self, cluster: str) -> bool:
        """Remove every workload series of a cluster; True if it had any."""
        cs = self.clusters.pop(cluster, None)
        if cs is None:
            return False
        for key in list(cs.workloads):
            self._remove(cluster, cs, key)
        self.dropped.remove(cluster)
        return True

    def stale(self, now: float, forget_after: float) -> list[str]:
        """Clusters with a workload not reported for ``forget_after`` seconds."""
        return [
            name
            for name, cs in self.clusters.items()
            if any(now - wl.last_seen > forget_after for wl in cs.workloads.values())
        ]

    def forget_stale(self, cluster: str, now: float, forget_after: float) -> int:
        """Remove the series of the cluster's workloads not reported for ``forget_after``
        seconds (and the cluster's when none is left); how many workloads."""
        cs = self.clusters.get(cluster)
        if cs is None:
            return 0
        stale = [key for key, wl in cs.workloads.items() if now - wl.last_seen > forget_after]
        for key in stale:
            self._remove(cluster, cs, key)
        if not cs.workloads:
            self.forget(cluster)
        return len(stale)

    def _remove(self, cluster: str, cs: _Cluster, key: tuple[str, str]) -> None:
        wl = cs.workloads.pop(key)
        for track in wl.tracks:
            labels = (cluster, *key, track)
            for metric in (self.requests, self.errors, self.duration):
                metric.remove(*labels)


def _add_window(histogram: Any, cumulative: list[int], requests: int, total: float) -> None:
    """Add a window's cumulative counts at the histogram's finite bounds, ``requests`` in
    all (the rest goes to +Inf) and the latency sum to a histogram child."""
    buckets = histogram._buckets
    below = 0
    for i, at in enumerate([*cumulative, requests]):
        if at != below:
            buckets[i].inc(at - below)
            below = at
    histogram._sum.inc(total)
