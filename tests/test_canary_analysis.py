"""The canary analysis: pooled data, judges, measurements, limits -- and the quality of its decisions.

Everything here is pure: data is built in memory, time is a number, random draws are seeded.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from typing import Any

import msgspec
import pytest

from tmcd.canary.analysis import (
    Assessment,
    ProviderError,
    ScalarValue,
    measure,
    metric_phase,
    peek,
    run_phase,
)
from tmcd.canary.judges import judge_samples
from tmcd.canary.measures import MEASURES
from tmcd.canary.samples import RunData
from tmcd.contracts.messages import LatencyHistogram, WorkloadStats
from tmcd.resources.canary import (
    AnalysisMetric,
    Comparison,
    MetricCondition,
    MetricProvider,
    MetricResult,
    NatsProvider,
    PrometheusProvider,
    Threshold,
)

BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
"""Prometheus' default buckets: 2 to 2.5 times apart."""
FINE = [round(0.001 * 1.05**i, 9) for i in range(190)]
"""5 % apart, from 1 ms to 10 s: fine enough to resolve a 20 % tolerance."""
T0 = 1_700_000_000.0


def comparison(test: str, max_increase: float = 0.2, **kw: Any) -> MetricCondition:
    return MetricCondition(comparison=Comparison(test=test, max_increase=max_increase, **kw))  # type: ignore[arg-type]


def metric(condition: MetricCondition, measure_name: str = "error_ratio", **kw: Any) -> AnalysisMetric:
    provider = MetricProvider(nats=NatsProvider(metric=measure_name))  # type: ignore[arg-type]
    return AnalysisMetric(name="m", provider=provider, condition=condition, **kw)


class Mesh:
    """Draws windows like the mock mesh: counts per track, a latency histogram, seeded."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def binomial(self, n: int, p: float) -> int:
        """Exact Binomial(n, p) by geometric skips (cheap for rare errors)."""
        if p <= 0.0 or n <= 0:
            return 0
        log_q, k, i = math.log1p(-p), 0, -1
        while True:
            i += int(math.log(1.0 - self.rng.random()) / log_q) + 1
            if i >= n:
                return k
            k += 1

    def window(
        self,
        data: RunData,
        k: int,
        track: str,
        n: int,
        p: float,
        *,
        latency: float = 0.0,
        share: float = 1.0,
        bounds: list[float] = FINE,
    ) -> None:
        counts: list[int] = []
        if latency:
            lat = sorted(self.rng.lognormvariate(math.log(latency), 0.5) for _ in range(n))
            counts = [bisect.bisect_right(lat, b) for b in bounds]
        data.add_window(
            track,  # type: ignore[arg-type]
            "sim-001",
            T0 + 10.0 * k,
            10.0,
            requests=n,
            errors=self.binomial(n, p),
            bounds=bounds if latency else (),
            cumulative=counts,
            share=share,
        )


def run(
    windows: int,
    canary: tuple[int, float],
    stable: tuple[int, float],
    seed: int = 1,
    latency: tuple[float, float] = (0.0, 0.0),
    bounds: list[float] = FINE,
) -> RunData:
    mesh, data = Mesh(seed), RunData()
    for k in range(windows):
        mesh.window(data, k, "canary", *canary, latency=latency[0], bounds=bounds)
        mesh.window(data, k, "stable", *stable, latency=latency[1], bounds=bounds)
    return data


def counts(data: RunData, errors: tuple[list[int], list[int]], requests: int) -> RunData:
    """Windows with exact error counts per window, canary and stable, in arrival order."""
    for k in range(max(len(errors[0]), len(errors[1]))):
        for track, per_window in zip(("canary", "stable"), errors, strict=True):
            if k < len(per_window):
                data.add_window(track, "sim-001", T0 + 10.0 * k, 10.0, requests=requests, errors=per_window[k])  # type: ignore[arg-type]
    return data


# --- decision quality -----------------------------------------------------------------------------


def test_sparse_data_does_not_pass_an_obvious_regression_kayenta_426_and_spinnaker_6278() -> None:
    # kayenta#426: errors per window, canary 0 1 2 1 0 0 against a stable of zeros; Kayenta: Pass
    sparse = comparison("mann-whitney", 0.25, confidence=0.98).comparison
    assert sparse is not None
    assert judge_samples("errors", [0.0, 1.0, 2.0, 1.0, 0.0, 0.0], [0.0] * 6, sparse).phase == "Inconclusive"
    # spinnaker#6278: 7 windows at 100 against 10 windows at 1; Kayenta: Pass
    canary, stable = [100.0] * 7 + [1.0] * 3, [1.0] * 10
    assert judge_samples("latency", canary, stable, sparse).phase == "Inconclusive"
    welch = comparison("t-test", 0.25, confidence=0.98).comparison
    assert welch is not None
    assert judge_samples("latency", canary, stable, welch).phase == "Failed"
    # the same sparse errors as pooled counts (100 requests a window): no test passes them ...
    sparse_counts = counts(RunData(), ([0, 1, 2, 1, 0, 0], [0] * 6), 100)
    for test in ("proportion", "ratio", "mann-whitney", "t-test"):
        a = measure(metric(comparison(test, 0.25)), None, sparse_counts, T0)
        assert a.measurement.phase == "Inconclusive", (test, a.measurement.message)
    # ... and as the run keeps seeing the regression, pooling makes it conclusive
    longer = counts(RunData(), ([0, 1, 2, 1, 0, 0] * 4, [0] * 24), 100)
    assert measure(metric(comparison("proportion", 0.25)), None, longer, T0).measurement.phase == "Failed"


def test_a_zero_baseline_neither_crashes_nor_fails_a_healthy_canary_kayenta_799() -> None:
    healthy = counts(RunData(), ([0] * 30, [0] * 30), 1000)  # no errors anywhere
    for test in ("proportion", "ratio", "mann-whitney", "t-test"):
        a = measure(metric(comparison(test)), None, healthy, T0)
        assert a.measurement.phase == "Inconclusive", (test, a.measurement.message)
    proportion = measure(metric(comparison("proportion")), None, healthy, T0).measurement
    assert "set maxDifference" in proportion.message
    # an absolute slack lets it pass: 0 errors in 30,000 requests is surely within 0.1 percentage point
    slack = comparison("proportion", max_difference=0.001)
    assert measure(metric(slack), None, healthy, T0).measurement.phase == "Successful"
    # kayenta#799 proper: stable reports nothing at all while the canary does -> no data, not a failure
    only_canary = counts(RunData(), ([1, 0, 2], []), 500)
    a = measure(metric(comparison("mann-whitney")), None, only_canary, T0)
    assert (a.measurement.phase, a.measurement.evidence["noData"]) == ("Inconclusive", "inconclusive")
    assert "no error_ratio data for stable" in a.measurement.message
    # and a canary with errors against a zero baseline is caught once the evidence is there
    broken = counts(RunData(), ([3] * 10, [0] * 10), 1000)
    assert measure(metric(comparison("proportion")), None, broken, T0).measurement.phase == "Failed"


def test_zero_errors_in_few_requests_is_inconclusive_not_successful() -> None:
    few = counts(RunData(), ([0, 0], [1, 0]), 10)
    threshold = metric(MetricCondition(threshold=Threshold(max=0.01)))
    assert measure(threshold, None, few, T0).measurement.phase == "Inconclusive"
    for test in ("proportion", "ratio", "mann-whitney", "t-test"):
        assert measure(metric(comparison(test)), None, few, T0).measurement.phase == "Inconclusive", test
    # 0 errors in 1,000 requests does show an error ratio under 1 %
    many = counts(RunData(), ([0] * 10, [0] * 10), 100)
    assert measure(threshold, None, many, T0).measurement.phase == "Successful"


@pytest.mark.parametrize("test", ["proportion", "ratio", "mann-whitney", "t-test"])
def test_identical_distributions_pass_error_ratio(test: str) -> None:
    passed = 0
    for seed in range(10):  # 100 windows of 1,000 requests at 2 % errors on both tracks
        data = run(100, (1000, 0.02), (1000, 0.02), seed=seed)
        passed += measure(metric(comparison(test)), None, data, T0).measurement.phase == "Successful"
    assert passed >= 9, passed


@pytest.mark.parametrize("test", ["ratio", "mann-whitney", "t-test"])
def test_identical_distributions_pass_latency_p99(test: str) -> None:
    data = run(30, (500, 0.0), (500, 0.0), seed=4, latency=(0.05, 0.05))
    a = measure(metric(comparison(test), "latency_p99"), None, data, T0)
    assert a.measurement.phase == "Successful", a.measurement.message


def test_a_latency_regression_fails_the_comparison_while_a_loose_threshold_passes_it() -> None:
    data = run(30, (500, 0.0), (500, 0.0), seed=2, latency=(0.075, 0.05))  # canary 1.5x slower
    for test in ("ratio", "mann-whitney", "t-test"):
        a = measure(metric(comparison(test), "latency_p99"), None, data, T0)
        assert a.measurement.phase == "Failed", (test, a.measurement.message)
    loose = metric(MetricCondition(threshold=Threshold(max=1.0)), "latency_p99")
    assert measure(loose, None, data, T0).measurement.phase == "Successful"


def test_buckets_too_coarse_for_the_tolerance_never_pass_a_regression() -> None:
    # both p99s (0.16 s and 0.24 s) fall in the (0.1, 0.25] bucket, where PromQL's interpolation
    # makes the 1.5x regression look like 1.06x: the interval spans the bucket instead
    data = run(30, (500, 0.0), (500, 0.0), seed=2, latency=(0.075, 0.05), bounds=BOUNDS)
    for test in ("ratio", "mann-whitney", "t-test"):
        a = measure(metric(comparison(test), "latency_p99"), None, data, T0)
        assert a.measurement.phase != "Successful", (test, a.measurement.message)
    ratio = measure(metric(comparison("ratio"), "latency_p99"), None, data, T0).measurement.evidence
    assert ratio["estimate"]["interval"] == [0.4, 2.5]  # (0.1, 0.25] against (0.1, 0.25]
    # a threshold on a bucket boundary is decided exactly (SLO practice: a bound at the objective)
    slo = metric(MetricCondition(threshold=Threshold(max=0.25)), "latency_p99")
    assert measure(slo, None, data, T0).measurement.phase == "Successful"


def test_request_rates_compare_per_unit_of_traffic_share() -> None:
    mesh, data = Mesh(3), RunData()
    for k in range(20):  # 10 % of the traffic to the canary: a ninth of stable's requests
        mesh.window(data, k, "canary", 100, 0.0, share=0.1)
        mesh.window(data, k, "stable", 900, 0.0, share=0.9)
    assert measure(metric(comparison("ratio"), "request_rate"), None, data, T0).measurement.phase == "Successful"
    dropped = RunData()
    for k in range(20):  # the canary loses half its requests: lower is worse for request_rate
        mesh.window(dropped, k, "canary", 50, 0.0, share=0.1)
        mesh.window(dropped, k, "stable", 900, 0.0, share=0.9)
    a = measure(metric(comparison("mann-whitney"), "request_rate"), None, dropped, T0)
    assert (a.measurement.phase, a.measurement.evidence["direction"]) == ("Failed", "decrease")


# --- anytime-valid early decisions ------------------------------------------------------------------


def _peeking_run(seed: int, windows: int, canary_p: float, stable_p: float, cond: MetricCondition) -> int | None:
    """Peek after every window; the window of the first early failure, or None."""
    m = metric(cond)
    mesh, data = Mesh(seed), RunData()
    for k in range(windows):
        share = 0.1 if k < windows // 2 else 0.5  # setWeight 10 -> 50 halfway
        n = 1000
        mesh.window(data, k, "canary", round(n * share), canary_p, share=share)
        mesh.window(data, k, "stable", round(n * (1 - share)), stable_p, share=1 - share)
        a = peek(m, None, data, T0 + 10.0 * k)
        if a is not None:
            assert a.measurement.early and a.verdict == "Failed"
            return k
    return None


def test_anytime_valid_peeking_keeps_false_failures_at_alpha() -> None:
    """A/A: 300 runs of 60 windows, looked at after every window: at most alpha fail."""
    strict = comparison("proportion", max_increase=0.0)  # the tightest null: canary <= stable
    failed = sum(_peeking_run(seed, 60, 0.01, 0.01, strict) is not None for seed in range(300))
    assert failed / 300 <= 0.05 + 0.02, failed  # alpha = 1 - confidence = 0.05, plus sampling margin
    # the same looks with the fixed-horizon z-test would fail healthy canaries far more often
    naive = 0
    for seed in range(300):
        mesh, c, s = Mesh(seed), [0, 0], [0, 0]
        for k in range(60):
            share = 0.1 if k < 30 else 0.5
            nc, ns = round(1000 * share), round(1000 * (1 - share))
            c = [c[0] + mesh.binomial(nc, 0.01), c[1] + nc]
            s = [s[0] + mesh.binomial(ns, 0.01), s[1] + ns]
            pooled = (c[0] + s[0]) / (c[1] + s[1])
            se = math.sqrt(pooled * (1 - pooled) * (1 / c[1] + 1 / s[1])) if 0 < pooled < 1 else 0.0
            if se and (c[0] / c[1] - s[0] / s[1]) / se > 1.645:
                naive += 1
                break
    assert naive / 300 > 0.15, naive


def test_anytime_valid_test_fails_a_clear_regression_early() -> None:
    """A/B: 5 % errors against stable's 0.5 %: failed within a few windows, every seed."""
    cond = comparison("proportion")
    decided = [_peeking_run(seed, 30, 0.05, 0.005, cond) for seed in range(40)]
    assert all(k is not None and k <= 6 for k in decided), decided
    # a threshold on the canary's error ratio decides early too (one-sample mixture)
    threshold = MetricCondition(threshold=Threshold(max=0.01))
    assert all((k := _peeking_run(seed, 30, 0.05, 0.005, threshold)) is not None and k <= 6 for seed in range(10))


def test_peek_respects_the_failure_limit_and_ignores_non_count_metrics() -> None:
    data = run(10, (1000, 0.2), (1000, 0.01))
    lenient = metric(comparison("proportion"), failure_limit=1)
    assert peek(lenient, None, data, T0) is None, "a first failure would not end the metric: wait for the schedule"
    one_failed = MetricResult(name="m", phase="Running", count=1, failed=1)
    a = peek(lenient, one_failed, data, T0)
    assert a is not None and a.verdict == "Failed" and a.result.failed == 2
    latency = metric(comparison("mann-whitney"), "latency_p99")
    assert peek(latency, None, data, T0) is None
    assert peek(metric(comparison("proportion")), None, ScalarValue(1.0), T0) is None


# --- noData, errors, limits (Argo Rollouts' counting) ---------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "phase"), [("inconclusive", "Inconclusive"), ("fail", "Failed"), ("pass", "Successful")]
)
def test_no_data_policy(policy: str, phase: str) -> None:
    a = measure(metric(MetricCondition(threshold=Threshold(max=0.01)), no_data=policy), None, RunData(), T0)
    assert a.measurement.phase == phase
    assert a.measurement.evidence["noData"] == policy


def test_errors_count_apart_and_consecutive_errors_end_the_metric() -> None:
    m = metric(MetricCondition(threshold=Threshold(max=0.01)), count=10, consecutive_error_limit=2)
    result: MetricResult | None = None
    for _ in range(3):
        a = measure(m, result, ProviderError("prometheus: connection refused"), T0)
        result = a.result
    assert result is not None
    assert (result.count, result.error, result.consecutive_error, result.phase) == (0, 3, 3, "Error")
    assert "consecutiveErrors (3) > consecutiveErrorLimit (2)" in result.message
    # a good measurement in between resets the streak
    ok = counts(RunData(), ([0] * 10, [0] * 10), 100)
    r = measure(m, None, ProviderError("x"), T0).result
    r = measure(m, r, ProviderError("x"), T0).result
    r = measure(m, r, ok, T0).result
    assert (r.count, r.error, r.consecutive_error, r.successful, r.phase) == (1, 2, 0, 1, "Running")


def test_failure_and_inconclusive_limits_and_the_count() -> None:
    bad = counts(RunData(), ([50] * 10, [0] * 10), 100)
    good = counts(RunData(), ([0] * 10, [0] * 10), 100)
    unsure = counts(RunData(), ([0], [0]), 5)
    m = metric(MetricCondition(threshold=Threshold(max=0.01)), count=4, failure_limit=1, inconclusive_limit=1)
    r = measure(m, None, bad, T0).result
    assert (r.failed, r.phase) == (1, "Running"), "failed (1) is not > failureLimit (1)"
    r = measure(m, r, unsure, T0).result
    assert (r.inconclusive, r.phase) == (1, "Running")
    r = measure(m, r, good, T0).result
    r = measure(m, r, good, T0).result
    assert (r.count, r.phase) == (4, "Successful"), "count reached; failures within the limit"
    r = measure(m, measure(m, None, bad, T0).result, bad, T0).result
    assert r.phase == "Failed" and r.message.startswith("failed (2) > failureLimit (1)")
    with pytest.raises(ValueError, match="already completed"):
        measure(m, r, good, T0)


def test_limits_are_checked_in_argo_order_a_later_one_winning() -> None:
    m = metric(MetricCondition(threshold=Threshold(max=0.01)), count=10)
    both = MetricResult(name="m", count=3, failed=1, inconclusive=2, error=5, consecutive_error=5)
    assert metric_phase(m, both)[0] == "Error"
    assert metric_phase(m, msgspec.structs.replace(both, consecutive_error=0))[0] == "Inconclusive"
    assert metric_phase(m, MetricResult(name="m", count=1, failed=1))[0] == "Failed"
    assert metric_phase(m, MetricResult(name="m"))[0] == "Pending"
    assert metric_phase(m, MetricResult(name="m"), terminating=True)[0] == "Successful"


def test_run_phase_is_the_worst_metric_and_terminates_on_the_first_failure() -> None:
    a = metric(MetricCondition(threshold=Threshold(max=0.01)), count=3)
    b = msgspec.structs.replace(a, name="b")
    running = MetricResult(name="m", phase="Running", count=1, successful=1)
    failed = MetricResult(
        name="b", phase="Failed", count=1, failed=1, message="failed (1) > failureLimit (0): too many errors"
    )
    assert run_phase([(a, running), (b, None)]) == ("Running", "")
    phase, message = run_phase([(a, running), (b, failed)])
    assert phase == "Failed" and 'metric "b" assessed Failed' in message and "too many errors" in message
    done = msgspec.structs.replace(running, phase="Successful", count=3, successful=3)
    inconclusive = MetricResult(name="b", phase="Inconclusive", count=2, inconclusive=2)
    assert run_phase([(a, done), (b, inconclusive)])[0] == "Inconclusive"
    assert run_phase([(a, done), (b, msgspec.structs.replace(done, name="b"))]) == ("Successful", "")
    assert run_phase([(a, running), (b, None)], terminating=True)[0] == "Successful"


def test_a_scalar_provider_is_judged_on_its_value() -> None:
    prom = AnalysisMetric(
        name="http-5xx",
        provider=MetricProvider(prometheus=PrometheusProvider(address="http://prometheus:9090", query="x")),
        condition=MetricCondition(threshold=Threshold(max=5.0)),
        no_data="pass",
    )
    assert measure(prom, None, ScalarValue(3.0), T0).measurement.phase == "Successful"
    assert measure(prom, None, ScalarValue(7.5), T0).measurement.phase == "Failed"
    assert measure(prom, None, ScalarValue(None), T0).measurement.phase == "Successful"  # noData: pass
    cmp = msgspec.structs.replace(prom, condition=comparison("ratio"))
    err = measure(cmp, None, ScalarValue(1.0), T0)
    assert err.measurement.phase == "Error" and "needs windows per track" in err.measurement.message
    wrong = measure(metric(comparison("proportion"), "latency_p99"), None, run(2, (10, 0), (10, 0)), T0)
    assert wrong.measurement.phase == "Error" and "compares counts" in wrong.measurement.message


# --- pooling and evidence --------------------------------------------------------------------------


def _stats(cluster: str, track: str, k: int, requests: int, errors: int, counts: list[int]) -> WorkloadStats:
    return WorkloadStats(
        cluster=cluster,
        namespace="shop",
        workload="checkout",
        track=track,  # type: ignore[arg-type]
        timestamp=T0 + 10.0 * k,
        window_seconds=10.0,
        requests=requests,
        errors=errors,
        latency=LatencyHistogram(bounds=[0.1, 0.5], counts=counts),
    )


def test_windows_pool_across_clusters_and_redeliveries_count_once() -> None:
    data = RunData()
    assert data.add_stats(_stats("sim-001", "canary", 0, 100, 1, [90, 99]))
    assert data.add_stats(_stats("sim-002", "canary", 0, 50, 2, [40, 50]))
    assert not data.add_stats(_stats("sim-001", "canary", 0, 100, 1, [90, 99])), "JetStream redelivery"
    canary = data.tracks["canary"]
    assert (canary.requests, canary.errors, data.duplicates, len(canary.windows)) == (150, 3, 1, 1)
    # one request above the last bound sits in the +Inf bucket
    assert canary.latency == [130.0, 149.0, 150.0]
    # per-window values are computed once, and again when a report adds to the window
    ratio = MEASURES["error_ratio"]
    assert ratio.window_values(canary) == [0.02]
    data.add_stats(_stats("sim-005", "canary", 0, 50, 0, [50, 50]))
    assert ratio.window_values(canary) == [0.015]
    # a window with other bounds still counts requests, but its latency is left out
    data.add_stats(
        msgspec.structs.replace(
            _stats("sim-003", "canary", 0, 10, 0, [10]), latency=LatencyHistogram(bounds=[1.0], counts=[10])
        )
    )
    assert (canary.requests, canary.mismatched_histograms, canary.latency[-1]) == (210, 1, 200.0)
    # the sequential test takes a window once a later one is seen; data for it afterwards is late
    data.add_stats(_stats("sim-001", "stable", 1, 100, 0, [100, 100]))
    data.add_stats(_stats("sim-004", "canary", 0, 10, 0, [10, 10]))
    assert (data.sealed_windows(), data.late) == (1, 1)
    with pytest.raises(ValueError, match="errors"):
        data.add_window("canary", "x", T0, 10.0, requests=1, errors=2)


def test_evidence_is_plain_json_with_counts_samples_statistics_and_why() -> None:
    data = counts(RunData(), ([1, 0, 2, 1], [0, 1, 0, 0]), 1000)
    a = measure(metric(comparison("proportion")), None, data, T0)
    ev = msgspec.json.decode(msgspec.json.encode(a.measurement))["evidence"]
    assert (
        ev["test"] == "proportion"
        and ev["method"] == "fisher"
        and ev["why"].startswith("fisher: smallest expected count")
    )
    assert ev["tracks"]["canary"] == {"windows": 4, "value": 0.001, "requests": 4000, "errors": 4}
    assert set(ev) >= {
        "statistic",
        "pValue",
        "estimate",
        "difference",
        "tolerance",
        "confidence",
        "sequential",
        "verdict",
        "reason",
    }
    assert ev["estimate"]["name"] == "oddsRatio" and len(ev["estimate"]["interval"]) == 2
    assert ev["tolerance"] == {"maxIncrease": 0.2, "maxDifference": 0.0}
    mw = measure(metric(comparison("mann-whitney")), None, data, T0).measurement.evidence
    assert set(mw["tracks"]["stable"]["samples"]) == {"n", "mean", "min", "p50", "p90", "max"}
    # the status carries it: a MetricResult with this evidence encodes as the API stores it
    stored = msgspec.json.decode(msgspec.json.encode(a.result), type=MetricResult)
    assert stored.evidence["reason"] == a.measurement.message and stored.count == 1 and stored.inconclusive == 1


def test_a_counts_measurement_over_hundreds_of_windows_takes_well_under_a_millisecond() -> None:
    data = run(300, (100, 0.01), (900, 0.01), latency=(0.05, 0.05))
    m = metric(comparison("proportion"))
    measure(m, None, data, T0)  # warm the sequential sums
    started = time.perf_counter()
    for _ in range(200):
        a: Assessment | None = peek(m, None, data, T0)
        measure(m, None, data, T0)
    per_call = (time.perf_counter() - started) / 400
    assert a is None
    assert per_call < 0.001, f"{per_call * 1e6:.0f} us per counts measurement"
