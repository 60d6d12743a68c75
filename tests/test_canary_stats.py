"""The canary analysis' statistics: PromQL's histogram_quantile, distributions and tests.

Numbers are checked against PromQL's own test data (promql/promqltest/testdata/histograms.test)
and against scipy (a dev dependency only: tmcd computes them in pure Python at run time).
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from tmcd.canary import ranks, stats
from tmcd.canary.ranks import kth_pairwise_difference, mann_whitney, welch
from tmcd.canary.samples import histogram_quantile
from tmcd.canary.sequential import TwoSampleMixture, one_sample_log_ratio

INF = math.inf


def _scipy() -> Any:
    return pytest.importorskip("scipy.stats")


# --- histogram_quantile, as PromQL ---------------------------------------------------------------

# testhistogram at 50m in histograms.test: one histogram with a positive lowest bucket, one negative
POSITIVE = [(0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 120.0)]
NEGATIVE = [(-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (INF, 30.0)]


@pytest.mark.parametrize(
    ("q", "positive", "negative"),
    [(0, 0.0, -0.2), (0.2, 0.048, -0.2), (0.5, 0.15, -0.15), (0.8, 0.72, 0.3), (1, 1.0, 0.3)],
)
def test_histogram_quantile_matches_promql_test_data(q: float, positive: float, negative: float) -> None:
    assert histogram_quantile(q, POSITIVE) == pytest.approx(positive)
    assert histogram_quantile(q, NEGATIVE) == pytest.approx(negative)


def test_histogram_quantile_interpolates_to_the_middle_of_buckets_and_aggregates() -> None:
    h2 = [(0.0, 0.0), (2.0, 1.0), (4.0, 2.0), (6.0, 3.0), (INF, 3.0)]
    assert [histogram_quantile(q, h2) for q in (1 / 6, 0.5, 5 / 6)] == pytest.approx([1.0, 3.0, 5.0])
    # sum by (le) over four instances, then by job: the published aggregated values
    summed = [(0.1, 10.0), (0.2, 19.0), (INF, 25.0)]
    assert histogram_quantile(0.3, summed) == pytest.approx(0.075)
    assert histogram_quantile(0.5, summed) == pytest.approx(0.1277777777777778)
    job1 = [(0.1, 3.0), (0.2, 8.0), (INF, 10.0)]
    assert (histogram_quantile(0.3, job1), histogram_quantile(0.5, job1)) == pytest.approx((0.1, 0.14))


def test_histogram_quantile_forces_monotonic_counts_and_merges_equal_bounds() -> None:
    nonmonotonic = [(0.1, 20.0), (1.0, 10.0), (10.0, 50.0), (100.0, 40.0), (1000.0, 90.0), (INF, 80.0)]
    assert histogram_quantile(0.01, nonmonotonic) == pytest.approx(0.0045)
    assert histogram_quantile(0.5, nonmonotonic) == pytest.approx(8.5)
    assert histogram_quantile(0.99, nonmonotonic) == pytest.approx(979.75)
    mixed = [(0.1, 1.0), (0.2, 1.0), (0.2, 1.0), (0.2, 1.0), (INF, 4.0)]  # "0.2", "2e-1", "2.0e-1"
    assert [histogram_quantile(q, mixed) for q in (0.5, 0.75, 1.0)] == pytest.approx([0.15, 0.2, 0.2])
    assert histogram_quantile(0.5, list(reversed(POSITIVE))) == pytest.approx(0.15), "order of buckets is free"


def test_histogram_quantile_edge_cases_are_promqls() -> None:
    assert histogram_quantile(-0.1, POSITIVE) == -INF
    assert histogram_quantile(1.01, POSITIVE) == INF
    assert math.isnan(histogram_quantile(math.nan, POSITIVE))
    assert math.isnan(histogram_quantile(0.5, [(0.1, 1.0), (0.2, 2.0)])), "no +Inf bucket"
    assert math.isnan(histogram_quantile(0.5, [(INF, 4.0), (INF, 0.0)])), "fewer than two buckets"
    assert math.isnan(histogram_quantile(0.2, [(0.1, 0.0), (0.2, 0.0), (INF, 0.0)])), "no observations"
    assert math.isnan(histogram_quantile(0.5, []))
    # the quantile lies in the +Inf bucket: the highest finite bound
    assert histogram_quantile(0.99, [(0.1, 5.0), (0.5, 10.0), (INF, 100.0)]) == 0.5
    # in the first bucket: interpolated from 0 when its bound is positive, the bound itself when not
    assert histogram_quantile(0.25, [(0.4, 10.0), (INF, 10.0)]) == pytest.approx(0.1)
    assert histogram_quantile(0.25, [(0.0, 10.0), (INF, 10.0)]) == 0.0
    # rank 0 in an empty first bucket is PromQL's 0/0
    assert math.isnan(histogram_quantile(0.0, [(0.1, 0.0), (0.2, 5.0), (INF, 5.0)]))


# --- distributions, checked against scipy ---------------------------------------------------------


def test_normal_quantile_matches_scipy_to_double_precision() -> None:
    sp = _scipy()
    for p in (1e-300, 1e-20, 1e-8, 0.001, 0.02425, 0.025, 0.3, 0.5, 0.8, 0.975, 0.999, 1 - 1e-12):
        assert stats.norm_ppf(p) == pytest.approx(sp.norm.ppf(p), rel=1e-13, abs=1e-13)
    assert stats.norm_sf(9.0) == pytest.approx(sp.norm.sf(9.0), rel=1e-12)
    assert (stats.norm_ppf(0.0), stats.norm_ppf(1.0)) == (-INF, INF)


def test_incomplete_beta_and_its_inverse_match_scipy() -> None:
    special = pytest.importorskip("scipy.special")
    rng = random.Random(7)
    for _ in range(400):
        a, b, x = 10 ** rng.uniform(-1, 5), 10 ** rng.uniform(-1, 5), rng.random()
        assert stats.beta_inc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-9, abs=1e-300)
        p = 10 ** rng.uniform(-12, 0)
        assert stats.beta_inc_inv(a, b, p) == pytest.approx(special.betaincinv(a, b, p), rel=1e-8)


def test_student_t_matches_scipy() -> None:
    sp = _scipy()
    for df in (1, 2.5, 7, 30, 1000):
        for t in (-4.0, -0.3, 0.0, 1.7, 12.0):
            assert stats.t_sf(t, df) == pytest.approx(sp.t.sf(t, df), rel=1e-9)
        for p in (0.0005, 0.025, 0.4, 0.975):
            assert stats.t_ppf(p, df) == pytest.approx(sp.t.ppf(p, df), rel=1e-9)


def test_binomial_intervals_match_scipy() -> None:
    sp = _scipy()
    for k, n in ((0, 20), (3, 20), (20, 20), (1, 1_000_000), (57, 10_000), (4999, 5000)):
        exact = sp.binomtest(k, n).proportion_ci(0.95, method="exact")  # solved to ~1e-7 by scipy
        assert stats.clopper_pearson(k, n, 0.95) == pytest.approx((exact.low, exact.high), rel=1e-6, abs=1e-15)
        # the definition, to full precision: beta quantiles
        lo = sp.beta.ppf(0.025, k, n - k + 1) if k else 0.0
        hi = sp.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
        assert stats.clopper_pearson(k, n, 0.95) == pytest.approx((lo, hi), rel=1e-10, abs=1e-300)
        score = sp.binomtest(k, n).proportion_ci(0.9, method="wilson")
        assert stats.wilson(k, n, 0.9) == pytest.approx((score.low, score.high), rel=1e-9, abs=1e-15)
        assert stats.binom_cdf(k, n, 0.01) == pytest.approx(sp.binom.cdf(k, n, 0.01), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("n", [1, 50, 370, 1000, 123_457])
def test_quantile_order_statistics_are_the_tightest_with_the_coverage(n: int) -> None:
    sp = _scipy()
    r, s = stats.binom_quantile_ranks(n, 0.99, 0.95)
    # r is the largest rank with P(B <= r - 1) <= 2.5 %, s the smallest with P(B >= s) <= 2.5 %
    assert r == 0 or sp.binom.cdf(r - 1, n, 0.99) <= 0.025 < sp.binom.cdf(r, n, 0.99)
    assert s == n + 1 or sp.binom.sf(s - 1, n, 0.99) <= 0.025 < sp.binom.sf(s - 2, n, 0.99)
    assert (s == n + 1) == (n < 370), "about 370 observations are needed to bound a p99 from above"


def test_fisher_exact_and_the_conditional_odds_ratio_interval_match_scipy() -> None:
    sp = _scipy()
    contingency = pytest.importorskip("scipy.stats.contingency")
    for table in ((3, 97, 0, 900), (4, 596, 1, 5399), (12, 88, 30, 870), (0, 50, 0, 70), (7, 0, 2, 40)):
        a, b, c, d = table
        assert stats.fisher_exact(a, b, c, d) == pytest.approx(
            sp.fisher_exact([[a, b], [c, d]], alternative="greater")[1], rel=1e-9
        )
        ci = contingency.odds_ratio([[a, b], [c, d]], kind="conditional").confidence_interval(0.95)
        lo, hi = stats.odds_ratio_interval(a, b, c, d, 0.95)
        assert lo == pytest.approx(ci.low, rel=1e-5, abs=1e-12)
        assert hi == pytest.approx(ci.high, rel=1e-5) if math.isfinite(ci.high) else hi == INF


def test_poisson_ratio_interval_maps_the_exact_binomial_interval() -> None:
    sp = _scipy()
    # 12 events over 100 units against 30 over 900: the share of the first is Binomial(42, pi)
    ci = sp.binomtest(12, 42).proportion_ci(0.95, method="exact")
    lo, hi = stats.poisson_ratio_interval(12, 100, 30, 900, 0.95)
    assert (lo, hi) == pytest.approx((ci.low / (1 - ci.low) * 9, ci.high / (1 - ci.high) * 9), rel=1e-9)
    assert stats.poisson_ratio_interval(0, 100, 0, 900, 0.95) == (0.0, INF), "no events bound nothing"


# --- Mann-Whitney, Hodges-Lehmann, Welch ----------------------------------------------------------


def test_mann_whitney_p_values_match_scipy_exact_and_asymptotic() -> None:
    sp = _scipy()
    rng = random.Random(11)
    for _ in range(150):
        n, m = rng.randint(1, 30), rng.randint(1, 30)
        digits = rng.choice([1, 9])  # 1 digit: ties, asymptotic with the tie correction
        x = [round(rng.gauss(0.0, 1.0), digits) for _ in range(n)]
        y = [round(rng.gauss(0.3, 1.0), digits) for _ in range(m)]
        t = mann_whitney(x, y, 0.95)
        method = "exact" if t.method == "exact" else "asymptotic"
        greater = sp.mannwhitneyu(x, y, alternative="greater", method=method)
        less = sp.mannwhitneyu(x, y, alternative="less", method=method)
        if math.isnan(greater.pvalue):
            continue
        assert t.statistic == greater.statistic
        assert (t.p_greater, t.p_less) == pytest.approx((greater.pvalue, less.pvalue), abs=1e-12)


def test_pairwise_difference_selection_equals_sorting_all_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranks, "_DIRECT_PAIRS", 0)  # always the selection algorithm
    rng = random.Random(5)
    for _ in range(40):
        xs = sorted(round(rng.gauss(0, 1), rng.choice([1, 3, 12])) for _ in range(rng.randint(1, 120)))
        ys = sorted(round(rng.gauss(0.5, 2), rng.choice([1, 3, 12])) for _ in range(rng.randint(1, 120)))
        everything = sorted(x - y for x in xs for y in ys)
        for k in {0, len(everything) // 2, len(everything) - 1, rng.randrange(len(everything))}:
            assert kth_pairwise_difference(xs, ys, k) == everything[k]


def test_hodges_lehmann_is_the_median_of_pairwise_differences_and_its_interval_covers() -> None:
    x, y = [1.0, 2.0, 3.0, 10.0], [0.0, 0.5, 1.5]
    assert mann_whitney(x, y, 0.95).estimate == 1.75  # median of the 12 differences
    rng = random.Random(3)
    covered = 0
    for _ in range(600):  # a shift of 0.7 between two normal samples of 15 windows
        a = [rng.gauss(0.7, 1.0) for _ in range(15)]
        b = [rng.gauss(0.0, 1.0) for _ in range(15)]
        t = mann_whitney(a, b, 0.9)
        covered += t.lower <= 0.7 <= t.upper
    assert 0.87 <= covered / 600 <= 0.95, covered / 600
    assert mann_whitney([1.0, 2.0], [3.0], 0.95).lower == -INF, "too few windows for an interval"


def test_welch_matches_scipy_including_its_interval() -> None:
    sp = _scipy()
    rng = random.Random(2)
    for _ in range(60):
        x = [rng.gauss(0, 1) for _ in range(rng.randint(2, 40))]
        y = [rng.gauss(0.4, 3) for _ in range(rng.randint(2, 40))]
        t = welch(x, y, 0.9)
        ref = sp.ttest_ind(x, y, equal_var=False)
        ci = ref.confidence_interval(0.9)
        assert (t.statistic, t.lower, t.upper) == pytest.approx((ref.statistic, ci.low, ci.high), rel=1e-9)
        assert t.p_greater == pytest.approx(sp.ttest_ind(x, y, equal_var=False, alternative="greater").pvalue)


# --- the sequential mixtures ----------------------------------------------------------------------


def test_the_one_sample_mixture_is_a_likelihood_ratio() -> None:
    # no data: ratio 1; errors at the null rate keep it small; many more push it up
    assert one_sample_log_ratio(0, 0, 0.01) == 0.0
    assert one_sample_log_ratio(10, 1000, 0.01) < 0.0
    assert one_sample_log_ratio(40, 1000, 0.01) > math.log(1000)
    assert one_sample_log_ratio(1, 10, 0.0) == INF, "one error disproves an error ratio of 0"


def test_the_two_sample_mixture_ignores_windows_without_information() -> None:
    mix = TwoSampleMixture(rho0=1.0)
    mix.add(0, 0, 0.1)  # no errors
    mix.add(3, 3, 0.0)  # no canary requests
    assert mix.log_ratio() == 0.0 and mix.windows == 2
    for _ in range(10):
        mix.add(5, 6, 1 / 9)  # 5 of 6 errors from a canary with a tenth of the requests
    assert mix.log_ratio() > math.log(1e6)
