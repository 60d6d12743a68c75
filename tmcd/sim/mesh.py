"""The mock service mesh: routes obey TrafficWeights; each window, every route's requests on
every cluster are split between the stable and canary tracks and drawn as counts.

Pure: no clock and no I/O.  Time comes in as ``now`` (Unix seconds); each route draws from
its own ``random.Random`` seeded from (seed, namespace, route), so a route's requests do not
depend on which other routes exist, and the same seed with the same calls gives the same
requests.  Per window, cluster, route and track: requests ~ Poisson(rps x seconds x share),
errors ~ Binomial(requests, error ratio), the latency histogram ~ Multinomial(requests,
bucket probabilities of a lognormal whose median is the stable latency, times the latency
factor on the canary).  A weight change inside a window counts for the part of the window
after it (the share is averaged over time), as does a canary fault that starts inside it.

No request goes unaccounted: per cluster, the part of each window that no track's weights
cover -- weights summing to less than 100, none at all, or a state no data plane can apply
(a negative weight, a sum above 100), and any time the window's accounting lost -- is counted
as unrouted requests (:meth:`MeshModel.unrouted`).  Weights that sum to 100 leave exactly 0.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from tmcd.contracts.messages import LatencyHistogram, TrafficApplied, TrafficWeights, WorkloadStats
from tmcd.sim.draws import binomial, lognormal_buckets, multinomial, poisson
from tmcd.sim.fleet import cluster_names

__all__ = ["LATENCY_BOUNDS", "LATENCY_SIGMA", "MeshModel", "MeshOptionError", "MeshOptions", "RouteValues"]

PER_DECADE = 32
LATENCY_BOUNDS: tuple[float, ...] = tuple(
    float(f"{10.0 ** (-3 + i / PER_DECADE):.6g}") for i in range(4 * PER_DECADE + 1)
)
"""Histogram bucket upper bounds in seconds, 1 ms to 10 s, 32 per decade (neighbours 7.5 %
apart), +Inf implied: fine enough that a quantile comparison with ``maxIncrease: 0.2`` can
decide a 1.5x regression (docs/canary.md, Histogram resolution), and that PromQL's linear
interpolation moves a p99 by about the factor the latency moved."""
LATENCY_SIGMA = 0.5
"""Log-standard deviation of request latency: p99 is about 3.2x the median."""
APPLIED_BY = "mesh"
ACCOUNTING_SLACK = 1e-9
"""Share-seconds per window-second a window's accounting may miss by rounding alone."""


@dataclass(frozen=True)
class RouteValues:
    """A per-route setting: ``default`` for every route (None: fall back), ``routes`` by route
    name, or by ``namespace/route`` (which wins)."""

    default: float | None = None
    routes: Mapping[str, float] = field(default_factory=dict)

    def get(self, namespace: str, route: str, fallback: float) -> float:
        """The value for this route."""
        for key in (f"{namespace}/{route}", route):
            if key in self.routes:
                return self.routes[key]
        return self.default if self.default is not None else fallback


@dataclass(frozen=True)
class MeshOptions:
    """What the mesh serves and how each track behaves."""

    clusters: int
    rps: float
    """Requests per second per cluster per route."""
    seed: int = 1
    window: float = 10.0
    """Seconds per WorkloadStats window."""
    stable_error_ratio: float = 0.005
    canary_error_ratio: RouteValues = field(default_factory=RouteValues)
    """Defaults to the stable error ratio."""
    stable_latency_ms: float = 50.0
    """Median latency of the stable track."""
    canary_latency_factor: RouteValues = field(default_factory=RouteValues)
    """Canary latency / stable latency; defaults to 1."""
    fault_after: float = 0.0
    """The canary's error ratio and latency factor apply from this many seconds after the
    canary first got traffic on the route; before that it behaves as stable."""
    no_stats: Set[str] = field(default_factory=frozenset)
    """Routes (``route`` or ``namespace/route``) that obey weights but publish no stats."""


class MeshOptionError(ValueError):
    """A bad mesh option; ``option`` is the flag name without dashes (``canary_error_ratio``)."""

    def __init__(self, option: str, expected: str) -> None:
        self.option = option
        self.expected = expected
        super().__init__(f"{option}: {expected}")


def _check(option: str, value: float, ok: bool, expected: str) -> None:
    if not (ok and math.isfinite(value)):
        raise MeshOptionError(option, f"expected {expected}, got {value:g}")


def validate_options(opts: MeshOptions) -> None:
    """Raise :class:`MeshOptionError` for the first invalid option."""
    if opts.clusters < 1:
        raise MeshOptionError("clusters", f"expected at least 1 cluster, got {opts.clusters}")
    _check("rps", opts.rps, opts.rps >= 0, "requests/s >= 0")
    _check("window", opts.window, opts.window > 0, "seconds > 0")
    _check("stable_error_ratio", opts.stable_error_ratio, 0 <= opts.stable_error_ratio <= 1, "a ratio in 0..1")
    for v in _values(opts.canary_error_ratio):
        _check("canary_error_ratio", v, 0 <= v <= 1, "a ratio in 0..1")
    _check("stable_latency_ms", opts.stable_latency_ms, opts.stable_latency_ms > 0, "milliseconds > 0")
    for v in _values(opts.canary_latency_factor):
        _check("canary_latency_factor", v, v > 0, "a factor > 0")
    _check("fault_after", opts.fault_after, opts.fault_after >= 0, "seconds >= 0")


def _values(rv: RouteValues) -> list[float]:
    return [*([rv.default] if rv.default is not None else []), *rv.routes.values()]


@dataclass
class _Track:
    """How one track of a route behaves: error ratio and median latency, when faulted and not."""

    error_ratio: float
    median: float
    fault_error_ratio: float
    fault_median: float


Weights = tuple[int, int] | None
"""A cluster's (stable %, canary %) in effect; None: no weights apply there."""


def shares(w: Weights) -> tuple[float, float, float]:
    """(stable, canary, unrouted) shares of a cluster's requests under weights ``w``: weights
    summing to 100 route everything; below 100 the rest finds no route; none, a negative one or
    a sum above 100 (a split no proxy can apply) route nothing."""
    if w is None or min(w) < 0 or sum(w) > 100:
        return 0.0, 0.0, 1.0
    stable, canary = w
    return stable / 100, canary / 100, (100 - stable - canary) / 100


@dataclass
class _Route:
    namespace: str
    route: str
    workload: str
    generation: int
    weights: list[Weights]
    """Per cluster index, as applied."""
    reported: list[int]
    """Cluster indexes the last TrafficWeights named (every cluster when it named none)."""
    unknown: list[str]
    rng: random.Random
    stats: bool
    since: float
    """Start of the time not yet accumulated into the window."""
    opened: float
    """Start of this route's part of the window (the window's start, or when the route appeared)."""
    stable_s: list[float]
    canary_s: list[float]
    unrouted_s: list[float]
    faulted_s: list[float]
    """Per cluster, this window: share-seconds per track, without a route, and canary under fault."""
    first_canary: float | None = None
    unrouted: int = 0
    """Requests the route could not route, since the mesh started serving it."""


class MeshModel:
    """Routes and their applied weights; :meth:`window` draws what each served."""

    def __init__(self, opts: MeshOptions, start: float) -> None:
        validate_options(opts)
        self.opts = opts
        self.clusters: list[str] = cluster_names(opts.clusters)
        self._index = {c: i for i, c in enumerate(self.clusters)}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._last_window = start
        self._buckets: dict[float, tuple[list[float], list[float], list[int]]] = {}
        self._grown: dict[tuple[str, str], _Route] = {}

    @property
    def routes(self) -> int:
        """Routes the mesh serves."""
        return len(self._routes)

    @property
    def unrouted_total(self) -> int:
        """Requests the mesh could not route, over every route, up to the last window."""
        return sum(r.unrouted for r in self._routes.values())

    def unrouted(self, namespace: str, route: str) -> int | None:
        """Requests the route could not route up to the last window; None for an unknown route."""
        r = self._routes.get((namespace, route))
        return None if r is None else r.unrouted

    def canary_weights(self, namespace: str, route: str) -> dict[str, int] | None:
        """Cluster -> applied canary percent (clusters above 0 only), or None for an unknown route."""
        r = self._routes.get((namespace, route))
        if r is None:
            return None
        return {c: w[1] for c, w in zip(self.clusters, r.weights, strict=True) if w is not None and w[1] > 0}

    def apply(self, w: TrafficWeights, now: float) -> TrafficApplied | None:
        """Apply a route's desired weights; the report to publish, or None when ``w`` is older
        than the generation applied (dropped).  The same generation again is applied again."""
        key = (w.namespace, w.route)
        r = self._routes.get(key)
        if r is not None and w.generation < r.generation:
            return None
        if r is None:
            r = self._routes[key] = self._new_route(w, now)
        else:
            self._accumulate(r, now)
        r.generation = w.generation
        r.workload = w.workload_name
        named = set(w.clusters)
        # every cluster at once, in one step: no instant sees a cluster half-way between splits
        split = (w.weights.get("stable", 0), w.canary_percent)
        r.reported = (
            [i for i, c in enumerate(self.clusters) if c in named] if named else list(range(len(self.clusters)))
        )
        r.weights = [(100, 0)] * len(self.clusters)
        for i in r.reported:
            r.weights[i] = split
        r.unknown = sorted(named - set(self._index))
        if r.first_canary is None and w.canary_percent > 0 and r.reported:
            r.first_canary = now
        return self._report(r, now)

    def force_weights(self, namespace: str, route: str, cluster: str, weights: Weights, now: float) -> None:
        """Put one cluster of a known route on ``weights`` as they are, unchecked: the states a data
        plane that updates clusters or tracks one at a time passes through, which no TrafficWeights
        can express.  The accounting counts what they leave unrouted (the tests use it)."""
        r = self._routes[(namespace, route)]
        self._accumulate(r, now)
        r.weights[self._index[cluster]] = weights

    def _report(self, r: _Route, now: float) -> TrafficApplied:
        weights = {self.clusters[i]: r.weights[i] for i in r.reported}
        return TrafficApplied(
            namespace=r.namespace,
            route=r.route,
            timestamp=now,
            generation=r.generation,
            weights={c: {"stable": w[0], "canary": w[1]} for c, w in weights.items() if w is not None},
            unknown_clusters=list(r.unknown),
            applied_by=APPLIED_BY,
            unrouted_requests=r.unrouted,
        )

    def _new_route(self, w: TrafficWeights, now: float) -> _Route:
        n = len(self.clusters)
        no_stats = self.opts.no_stats
        since = max(now, self._last_window)
        return _Route(
            namespace=w.namespace,
            route=w.route,
            workload=w.workload_name,
            generation=w.generation,
            weights=[(100, 0)] * n,
            reported=[],
            unknown=[],
            # str seeds hash with SHA-512: the same in every process (unlike hash())
            rng=random.Random(f"{self.opts.seed}/{w.namespace}/{w.route}"),
            stats=w.route not in no_stats and f"{w.namespace}/{w.route}" not in no_stats,
            since=since,
            opened=since,
            stable_s=[0.0] * n,
            canary_s=[0.0] * n,
            unrouted_s=[0.0] * n,
            faulted_s=[0.0] * n,
        )

    def _accumulate(self, r: _Route, until: float) -> None:
        """Add the time since ``r.since`` at the current weights to the window's accumulators."""
        dt = until - r.since
        if dt <= 0:
            return
        fault_from = r.first_canary + self.opts.fault_after if r.first_canary is not None else math.inf
        faulted = max(0.0, until - max(r.since, fault_from))
        for i, w in enumerate(r.weights):
            stable, canary, lost = shares(w)
            r.stable_s[i] += stable * dt
            r.canary_s[i] += canary * dt
            r.unrouted_s[i] += lost * dt
            r.faulted_s[i] += canary * faulted
        r.since = until

    def window(self, now: float) -> list[WorkloadStats]:
        """Close the window ending at ``now``: one WorkloadStats per route (with stats), cluster
        and track that had traffic share in it (a track at 0 % the whole window is left out; one
        that had a share but drew no request reports 0).  Counts each route's unrouted requests."""
        length = now - self._last_window
        self._last_window = now
        out: list[WorkloadStats] = []
        if length <= 0:
            return out
        for r in self._routes.values():
            self._accumulate(r, now)
            self._count_unrouted(r, now)
            if r.stats:
                self._draw_route(r, now, length, out)
            n = len(self.clusters)
            r.stable_s, r.canary_s, r.unrouted_s, r.faulted_s = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
            # a change applied after this window's scheduled end (a late wake-up) was accounted up to
            # its own time already: the next window starts there, so that time is not "lost" twice
            r.opened = max(now, r.since)
        return out

    def _count_unrouted(self, r: _Route, now: float) -> None:
        """Add the window's unrouted requests: the share-seconds no track covered, from the weights
        in effect and from any part of the window the accounting lost, at ``rps`` (rounded up, so
        that any instant without a route counts)."""
        served = now - r.opened
        slack = ACCOUNTING_SLACK * max(served, 1.0)
        lost = 0.0
        for i in range(len(self.clusters)):
            missing = served - (r.stable_s[i] + r.canary_s[i] + r.unrouted_s[i])
            lost_s = r.unrouted_s[i] + (missing if missing > slack else 0.0)
            if lost_s > slack:
                lost += lost_s
        if lost > 0:
            count = math.ceil(self.opts.rps * lost)
            if count:
                r.unrouted += count
                self._grown[(r.namespace, r.route)] = r

    def take_unrouted_reports(self, now: float) -> list[TrafficApplied]:
        """A TrafficApplied (the weights in effect, the new count) for every route whose unrouted
        count grew in the windows closed since the last call."""
        grown, self._grown = self._grown, {}
        return [self._report(r, now) for r in grown.values()]

    def _tracks(self, r: _Route) -> tuple[_Track, _Track]:
        o = self.opts
        median = o.stable_latency_ms / 1000.0
        stable = _Track(o.stable_error_ratio, median, o.stable_error_ratio, median)
        ratio = o.canary_error_ratio.get(r.namespace, r.route, o.stable_error_ratio)
        factor = o.canary_latency_factor.get(r.namespace, r.route, 1.0)
        return stable, _Track(o.stable_error_ratio, median, ratio, median * factor)

    def _draw_route(self, r: _Route, now: float, length: float, out: list[WorkloadStats]) -> None:
        stable, canary = self._tracks(r)
        for i, cluster in enumerate(self.clusters):
            canary_s = r.canary_s[i]
            stable_s = r.stable_s[i]
            if stable_s > 1e-9:
                out.append(self._draw(r, cluster, "stable", stable, stable_s, 0.0, now, length))
            if canary_s > 1e-9:
                fault = min(1.0, r.faulted_s[i] / canary_s)
                out.append(self._draw(r, cluster, "canary", canary, canary_s, fault, now, length))

    def _draw(
        self, r: _Route, cluster: str, track: str, t: _Track, share_s: float, fault: float, now: float, length: float
    ) -> WorkloadStats:
        rng = r.rng
        requests = poisson(rng, self.opts.rps * share_s)
        error_ratio = fault * t.fault_error_ratio + (1.0 - fault) * t.error_ratio
        errors = binomial(rng, requests, error_ratio)
        probs, means, order = self._mixture(t, fault)
        counts = multinomial(rng, requests, probs, order)
        cumulative: list[int] = []
        total = 0
        for k in counts[:-1]:  # the last bucket is above the last bound: +Inf, implied
            total += k
            cumulative.append(total)
        return WorkloadStats(
            cluster=cluster,
            namespace=r.namespace,
            workload=r.workload,
            track="canary" if track == "canary" else "stable",
            timestamp=now,
            window_seconds=length,
            requests=requests,
            errors=errors,
            latency=LatencyHistogram(
                bounds=list(LATENCY_BOUNDS),
                counts=cumulative,
                sum_seconds=sum(k * m for k, m in zip(counts, means, strict=True)),
            ),
        )

    def _lognormal(self, median: float) -> tuple[list[float], list[float], list[int]]:
        cached = self._buckets.get(median)
        if cached is None:
            probs, means = lognormal_buckets(median, LATENCY_SIGMA, LATENCY_BOUNDS)
            order = sorted(range(len(probs)), key=lambda i: -probs[i])
            cached = self._buckets[median] = (probs, means, order)
        return cached

    def _mixture(self, t: _Track, fault: float) -> tuple[list[float], list[float], list[int]]:
        """Bucket probabilities when a share ``fault`` of the requests is faulted."""
        if fault <= 0 or t.fault_median == t.median:
            return self._lognormal(t.median)
        if fault >= 1:
            return self._lognormal(t.fault_median)
        p0, m0, _ = self._lognormal(t.median)
        p1, m1, _ = self._lognormal(t.fault_median)
        probs = [(1 - fault) * a + fault * b for a, b in zip(p0, p1, strict=True)]
        means = [
            ((1 - fault) * a * ma + fault * b * mb) / p if p > 0 else ma
            for a, b, ma, mb, p in zip(p0, p1, m0, m1, probs, strict=True)
        ]
        return probs, means, sorted(range(len(probs)), key=lambda i: -probs[i])
