"""The mock service mesh's pure model: draws, weights, windows, faults, determinism."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from tmcd.canary.samples import histogram_quantile
from tmcd.contracts.messages import TrafficWeights, WorkloadStats
from tmcd.sim.draws import binomial, lognormal_buckets, multinomial, poisson
from tmcd.sim.mesh import LATENCY_BOUNDS, LATENCY_SIGMA, MeshModel, MeshOptionError, MeshOptions, RouteValues

T0 = 1_700_000_000.0


def weights(
    route: str = "web", canary: int = 0, clusters: tuple[str, ...] = (), generation: int = 1, namespace: str = "shop"
) -> TrafficWeights:
    return TrafficWeights(
        namespace=namespace,
        route=route,
        timestamp=T0,
        weights={"stable": 100 - canary, "canary": canary},
        clusters=list(clusters),
        generation=generation,
    )


def run_windows(model: MeshModel, n: int, start: float = T0, window: float = 10.0) -> list[WorkloadStats]:
    out: list[WorkloadStats] = []
    for k in range(1, n + 1):
        out.extend(model.window(start + k * window))
    return out


def p99(stats: list[WorkloadStats]) -> float:
    counts = [0] * len(LATENCY_BOUNDS)
    requests = 0
    for s in stats:
        counts = [a + b for a, b in zip(counts, s.latency.counts, strict=True)]
        requests += s.requests
    return histogram_quantile(0.99, [*zip(LATENCY_BOUNDS, counts, strict=True), (math.inf, requests)])


# --- draws -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mean", [0.3, 4.0, 29.0, 31.0, 500.0, 1e6])
def test_poisson_mean_and_variance(mean: float) -> None:
    rng = random.Random(7)
    xs = [poisson(rng, mean) for _ in range(4000)]
    assert statistics.fmean(xs) == pytest.approx(mean, rel=0.05, abs=0.05)
    assert statistics.pvariance(xs) == pytest.approx(mean, rel=0.12, abs=0.1)
    assert min(xs) >= 0


@pytest.mark.parametrize(("n", "p"), [(10, 0.05), (200, 0.01), (60, 0.5), (100, 0.9), (10_000, 0.005), (10**6, 0.3)])
def test_binomial_mean_and_variance(n: int, p: float) -> None:
    rng = random.Random(11)
    xs = [binomial(rng, n, p) for _ in range(4000)]
    assert statistics.fmean(xs) == pytest.approx(n * p, rel=0.05, abs=0.05)
    assert statistics.pvariance(xs) == pytest.approx(n * p * (1 - p), rel=0.12, abs=0.1)
    assert min(xs) >= 0 and max(xs) <= n


def test_binomial_and_poisson_edges() -> None:
    rng = random.Random(1)
    assert binomial(rng, 0, 0.5) == 0 and binomial(rng, 5, 0.0) == 0 and binomial(rng, 5, 1.0) == 5
    assert poisson(rng, 0.0) == 0 and poisson(rng, -1.0) == 0


def test_multinomial_keeps_the_total_and_the_shares() -> None:
    probs, _ = lognormal_buckets(0.05, LATENCY_SIGMA, LATENCY_BOUNDS)
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    rng = random.Random(3)
    totals = [0] * len(probs)
    for _ in range(300):
        counts = multinomial(rng, 1000, probs, order)
        assert sum(counts) == 1000 and min(counts) >= 0
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    for got, p in zip(totals, probs, strict=True):
        assert got / 300_000 == pytest.approx(p, abs=0.004)


def test_lognormal_buckets_sum_to_one_with_conditional_means_inside() -> None:
    probs, means = lognormal_buckets(0.05, LATENCY_SIGMA, LATENCY_BOUNDS)
    assert sum(probs) == pytest.approx(1.0)
    edges = [0.0, *LATENCY_BOUNDS, math.inf]
    for i, (p, m) in enumerate(zip(probs, means, strict=True)):
        if p > 1e-9:
            assert edges[i] <= m <= edges[i + 1]
    assert sum(p * m for p, m in zip(probs, means, strict=True)) == pytest.approx(0.05 * math.exp(0.125), rel=1e-6)


# --- weights -----------------------------------------------------------------------------------


def test_weights_split_traffic_on_the_named_clusters_only() -> None:
    model = MeshModel(MeshOptions(clusters=4, rps=50, seed=1, stable_error_ratio=0.02), T0)
    report = model.apply(weights(canary=20, clusters=("sim-001", "sim-003")), T0)
    assert report is not None
    assert report.weights == {"sim-001": {"stable": 80, "canary": 20}, "sim-003": {"stable": 80, "canary": 20}}
    assert report.generation == 1 and report.unknown_clusters == [] and report.applied_by == "mesh"
    stats = run_windows(model, 200)
    by: dict[tuple[str, str], list[WorkloadStats]] = {}
    for s in stats:
        by.setdefault((s.cluster, s.track), []).append(s)
    assert set(by) == {("sim-001", "stable"), ("sim-001", "canary"), ("sim-002", "stable")} | {
        ("sim-003", "stable"),
        ("sim-003", "canary"),
        ("sim-004", "stable"),
    }
    for cluster in ("sim-001", "sim-003"):
        canary = sum(s.requests for s in by[(cluster, "canary")])
        stable = sum(s.requests for s in by[(cluster, "stable")])
        assert canary / (canary + stable) == pytest.approx(0.20, abs=0.01)
        assert canary + stable == pytest.approx(50 * 10 * 200, rel=0.01)
    requests = sum(s.requests for s in stats)
    assert sum(s.errors for s in stats) / requests == pytest.approx(0.02, rel=0.05)
    assert all(s.window_seconds == 10.0 and s.workload == "web" and s.namespace == "shop" for s in stats)


def test_empty_clusters_means_every_cluster_and_unknown_ones_are_reported() -> None:
    model = MeshModel(MeshOptions(clusters=3, rps=10, seed=1), T0)
    everywhere = model.apply(weights(canary=50), T0)
    assert everywhere is not None and set(everywhere.weights) == {"sim-001", "sim-002", "sim-003"}
    assert model.canary_weights("shop", "web") == {"sim-001": 50, "sim-002": 50, "sim-003": 50}
    partly = model.apply(weights(canary=10, clusters=("sim-002", "sim-999"), generation=2), T0 + 1)
    assert partly is not None and set(partly.weights) == {"sim-002"} and partly.unknown_clusters == ["sim-999"]
    assert model.canary_weights("shop", "web") == {"sim-002": 10}
    assert model.canary_weights("shop", "other") is None


def test_older_generations_are_dropped_and_the_same_one_reapplied() -> None:
    model = MeshModel(MeshOptions(clusters=2, rps=10, seed=1), T0)
    assert model.apply(weights(canary=30, clusters=("sim-001",), generation=5), T0) is not None
    assert model.apply(weights(canary=90, clusters=("sim-001",), generation=4), T0 + 1) is None
    assert model.canary_weights("shop", "web") == {"sim-001": 30}
    again = model.apply(weights(canary=30, clusters=("sim-001",), generation=5), T0 + 2)
    assert again is not None and again.generation == 5 and again.timestamp == T0 + 2
    back = model.apply(weights(canary=0, generation=6), T0 + 3)
    assert back is not None and model.canary_weights("shop", "web") == {}
    assert back.weights == {"sim-001": {"stable": 100, "canary": 0}, "sim-002": {"stable": 100, "canary": 0}}


def test_a_change_inside_a_window_counts_for_its_part_of_the_window() -> None:
    model = MeshModel(MeshOptions(clusters=1, rps=1000, seed=2), T0)
    model.apply(weights(canary=0), T0)
    model.apply(weights(canary=100, generation=2), T0 + 7.5)  # the last quarter of the first window
    first = {s.track: s for s in model.window(T0 + 10)}
    assert first["canary"].requests / (first["canary"].requests + first["stable"].requests) == pytest.approx(
        0.25, abs=0.02
    )
    second = {s.track: s for s in model.window(T0 + 20)}
    assert set(second) == {"canary"}  # stable had 0 % the whole window: no report
    assert second["canary"].requests == pytest.approx(10_000, rel=0.05)


def test_a_route_that_appears_mid_window_serves_from_then_on() -> None:
    model = MeshModel(MeshOptions(clusters=1, rps=1000, seed=2), T0)
    model.apply(weights(), T0 + 5)
    [stable] = model.window(T0 + 10)
    assert stable.requests == pytest.approx(5000, rel=0.06)


def test_no_stats_routes_obey_weights_and_publish_nothing() -> None:
    opts = MeshOptions(clusters=2, rps=10, seed=1, no_stats=frozenset({"quiet", "other/muted"}))
    model = MeshModel(opts, T0)
    for route, ns in (("quiet", "shop"), ("muted", "other"), ("muted", "shop"), ("web", "shop")):
        assert model.apply(weights(route=route, namespace=ns, canary=10), T0) is not None
    assert model.canary_weights("shop", "quiet") == {"sim-001": 10, "sim-002": 10}
    stats = run_windows(model, 3)
    assert {(s.namespace, s.workload) for s in stats} == {("shop", "muted"), ("shop", "web")}


def test_workload_names_the_stats_and_defaults_to_the_route() -> None:
    model = MeshModel(MeshOptions(clusters=1, rps=10, seed=1), T0)
    named = TrafficWeights(namespace="shop", route="checkout", timestamp=T0, workload="checkout-api")
    model.apply(named, T0)
    model.apply(weights(route="web"), T0)
    assert {s.workload for s in model.window(T0 + 10)} == {"checkout-api", "web"}


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_requests() -> None:
    def draw(seed: int, extra_route: bool) -> list[WorkloadStats]:
        model = MeshModel(MeshOptions(clusters=3, rps=20, seed=seed, canary_error_ratio=RouteValues(0.1)), T0)
        if extra_route:
            model.apply(weights(route="noise", canary=50), T0)
        model.apply(weights(canary=25, clusters=("sim-002",)), T0)
        stats = run_windows(model, 20)
        return [s for s in stats if s.workload == "web"]

    a, b = draw(4, False), draw(4, False)
    assert a == b and len(a) == 20 * 4
    assert draw(4, True) == a  # a route's draws do not depend on the other routes
    assert draw(5, False) != a


# --- canary behaviour --------------------------------------------------------------------------------


def test_canary_settings_per_route_and_default_to_stable() -> None:
    opts = MeshOptions(
        clusters=1,
        rps=1000,
        seed=9,
        stable_error_ratio=0.005,
        canary_error_ratio=RouteValues(None, {"bad": 0.05}),
    )
    model = MeshModel(opts, T0)
    model.apply(weights(route="bad", canary=50), T0)
    model.apply(weights(route="good", canary=50), T0)
    stats = run_windows(model, 50)

    def ratio(route: str, track: str) -> float:
        picked = [s for s in stats if s.workload == route and s.track == track]
        return sum(s.errors for s in picked) / sum(s.requests for s in picked)

    assert ratio("bad", "canary") == pytest.approx(0.05, rel=0.05)
    assert ratio("bad", "stable") == pytest.approx(0.005, rel=0.15)
    assert ratio("good", "canary") == pytest.approx(0.005, rel=0.15)
    assert RouteValues(0.2, {"web": 0.3, "shop/web": 0.4}).get("shop", "web", 0.0) == 0.4
    assert RouteValues(0.2, {"web": 0.3}).get("other", "web", 0.0) == 0.3
    assert RouteValues(None, {}).get("other", "web", 0.7) == 0.7


def test_fault_after_delays_the_canary_faults() -> None:
    opts = MeshOptions(
        clusters=1,
        rps=2000,
        seed=3,
        stable_error_ratio=0.0,
        canary_error_ratio=RouteValues(0.5),
        canary_latency_factor=RouteValues(3.0),
        fault_after=25.0,
    )
    model = MeshModel(opts, T0)
    model.apply(weights(canary=0), T0)
    assert not [s for s in model.window(T0 + 10) if s.track == "canary"]
    model.apply(weights(canary=50, generation=2), T0 + 10)  # canary's first traffic: faults from T0 + 35
    windows = [{s.track: s for s in model.window(T0 + 10 * k)} for k in range(2, 7)]
    canary = [w["canary"] for w in windows]
    assert [c.errors for c in canary[:2]] == [0, 0]  # T0+10..30: healthy
    assert canary[2].errors / canary[2].requests == pytest.approx(0.25, abs=0.03)  # half of T0+30..40
    assert canary[3].errors / canary[3].requests == pytest.approx(0.5, abs=0.03)
    assert p99(canary[:2]) == pytest.approx(p99([w["stable"] for w in windows[:2]]), rel=0.1)
    assert p99(canary[3:]) > 2.4 * p99([w["stable"] for w in windows[3:]])
    # a canary that goes back to 0 and gets traffic again is faulted at once (first traffic counts)
    model.apply(weights(canary=0, generation=3), T0 + 60)
    model.window(T0 + 70)
    model.apply(weights(canary=50, generation=4), T0 + 70)
    again = {s.track: s for s in model.window(T0 + 80)}["canary"]
    assert again.errors / again.requests == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize(("factor", "low", "high"), [(1.5, 1.35, 1.65), (1.0, 0.92, 1.08), (2.0, 1.8, 2.2)])
def test_latency_factor_moves_the_p99_by_that_factor(factor: float, low: float, high: float) -> None:
    model = MeshModel(MeshOptions(clusters=2, rps=100, seed=5, canary_latency_factor=RouteValues(factor)), T0)
    model.apply(weights(canary=50), T0)
    stats = run_windows(model, 100)
    stable = p99([s for s in stats if s.track == "stable"])
    canary = p99([s for s in stats if s.track == "canary"])
    true_p99 = 0.050 * math.exp(2.3263 * LATENCY_SIGMA)
    assert stable == pytest.approx(true_p99, rel=0.1)
    assert low <= canary / stable <= high, (stable, canary)


def test_histogram_is_cumulative_and_its_sum_follows_the_latency() -> None:
    model = MeshModel(MeshOptions(clusters=1, rps=500, seed=1, stable_latency_ms=20), T0)
    model.apply(weights(), T0)
    stats = run_windows(model, 20)
    for s in stats:
        counts = s.latency.counts
        assert s.latency.bounds == list(LATENCY_BOUNDS)
        assert counts == sorted(counts) and counts[-1] <= s.requests
    seconds = sum(s.latency.sum_seconds for s in stats)
    requests = sum(s.requests for s in stats)
    assert seconds / requests == pytest.approx(0.020 * math.exp(LATENCY_SIGMA**2 / 2), rel=0.02)


@pytest.mark.parametrize(
    ("opts", "option"),
    [
        (MeshOptions(clusters=0, rps=1), "clusters"),
        (MeshOptions(clusters=1, rps=-1), "rps"),
        (MeshOptions(clusters=1, rps=math.inf), "rps"),
        (MeshOptions(clusters=1, rps=1, window=0), "window"),
        (MeshOptions(clusters=1, rps=1, stable_error_ratio=1.5), "stable_error_ratio"),
        (MeshOptions(clusters=1, rps=1, canary_error_ratio=RouteValues(None, {"web": -0.1})), "canary_error_ratio"),
        (MeshOptions(clusters=1, rps=1, stable_latency_ms=0), "stable_latency_ms"),
        (MeshOptions(clusters=1, rps=1, canary_latency_factor=RouteValues(0.0)), "canary_latency_factor"),
        (MeshOptions(clusters=1, rps=1, fault_after=math.nan), "fault_after"),
    ],
)
def test_bad_options_name_the_option(opts: MeshOptions, option: str) -> None:
    with pytest.raises(MeshOptionError) as info:
        MeshModel(opts, T0)
    assert info.value.option == option


def test_a_thousand_routes_on_ten_clusters_is_cheap() -> None:
    """Counts are drawn per window, not per request: 1,000 routes x 10 clusters at 100 rps."""
    model = MeshModel(MeshOptions(clusters=10, rps=100, seed=1), T0)
    for i in range(1000):
        model.apply(weights(route=f"r{i}", canary=10, clusters=("sim-001",)), T0)
    stats = model.window(T0 + 10)
    assert len(stats) == 1000 * 11
    assert sum(s.requests for s in stats) == pytest.approx(1000 * 10 * 1000, rel=0.01)
