"""Two-sample tests on per-window samples: Mann-Whitney with the Hodges-Lehmann shift, and Welch's t.

Both report the shift of the canary against stable (``canary - stable``) with a two-sided
confidence interval; the judges turn that interval into a verdict.

Mann-Whitney: U counts the (canary, stable) pairs where the canary is larger (ties count half).
Its p-value is exact (the null distribution of U, by the Gaussian-binomial recurrence) for
small samples without ties, otherwise the normal approximation with the tie-corrected variance
and a continuity correction (as scipy's ``mannwhitneyu(method="asymptotic")``).  The shift
estimate is the Hodges-Lehmann estimator, the median of all pairwise differences; its interval
is the pair of order statistics of those differences that the null distribution of U gives
(Lehmann 1963), so it needs no distributional assumption beyond a location shift.  With n and m
windows there are n*m differences; the order statistics are selected without listing them all
when n*m is large.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from tmcd.canary.stats import norm_cdf, norm_ppf, norm_sf, t_ppf, t_sf

__all__ = ["ShiftTest", "kth_pairwise_difference", "mann_whitney", "summary", "welch"]

_DIRECT_PAIRS = 20_000
"""Up to this many pairs the differences are listed and sorted; beyond, selected."""
_EXACT_PAIRS = 400
"""Exact null distribution of U up to this many pairs (without ties)."""


@dataclass(frozen=True, slots=True)
class ShiftTest:
    """The canary's shift against stable, with its interval and one-sided p-values."""

    test: str
    method: str
    """exact or normal (Mann-Whitney), welch (t-test)."""
    statistic: float
    """U of the canary (Mann-Whitney) or t (Welch)."""
    estimate: float
    """Hodges-Lehmann shift or difference of means, canary - stable."""
    lower: float
    upper: float
    """Two-sided confidence interval of the shift; -inf/inf when the data cannot bound it."""
    p_greater: float
    """p-value of 'the canary is larger'."""
    p_less: float
    """p-value of 'the canary is smaller'."""
    df: float = math.nan
    """Welch's degrees of freedom."""


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, mean, min, p50, p90, max of a sample (linear interpolation between order statistics)."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return {"n": 0}

    def q(p: float) -> float:
        rank = p * (n - 1)
        i = math.floor(rank)
        j = min(i + 1, n - 1)
        return xs[i] + (xs[j] - xs[i]) * (rank - i)

    return {"n": n, "mean": math.fsum(xs) / n, "min": xs[0], "p50": q(0.5), "p90": q(0.9), "max": xs[-1]}


# --- Mann-Whitney ---------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _u_counts(n: int, m: int) -> tuple[int, ...]:
    """Number of orderings with U = u, u = 0..n*m, for samples of n and m without ties.

    The coefficients of the Gaussian binomial [n + m choose n]_q, built as the product of
    (1 - q^(m+i)) / (1 - q^i) for i = 1..n with exact integer arithmetic.
    """
    size = n * m + 1
    poly = [1] + [0] * (size - 1)
    for i in range(1, n + 1):
        k = m + i
        for j in range(size - 1, k - 1, -1):  # multiply by (1 - q^k)
            poly[j] -= poly[j - k]
        for j in range(i, size):  # divide by (1 - q^i)
            poly[j] += poly[j - i]
    return tuple(poly)


def _ranks_u(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, bool]:
    """U of x, the tie term sum(t^3 - t), and whether there were ties."""
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    rank_x = 0.0
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        t = j - i + 1
        mid = (i + j) / 2.0 + 1.0
        rank_x += mid * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        ties += t**3 - t
        i = j + 1
    n = len(x)
    return rank_x - n * (n + 1) / 2.0, ties, ties > 0


def _count_le(xs: Sequence[float], ys: Sequence[float], p: float, strict: bool) -> list[int]:
    """Per canary value x_i: the first index j of sorted ys with x_i - ys[j] <= p (< p if strict).

    The differences are computed, never inverted (x - (x - y) need not be y in floating point).
    """
    m = len(ys)
    j = 0
    out = []
    for x in xs:
        if strict:
            while j < m and x - ys[j] >= p:
                j += 1
        else:
            while j < m and x - ys[j] > p:
                j += 1
        out.append(j)
    return out


def kth_pairwise_difference(xs: Sequence[float], ys: Sequence[float], k: int) -> float:
    """The k-th smallest (0-based) of all differences x - y, for sorted xs and ys.

    Row i holds x_i - ys[j], falling with j.  Each round keeps, per row, the index range of
    candidates, takes the weighted median of the rows' middle candidates as a pivot, counts
    the differences below it in O(n + m) and drops at least a quarter of the candidates.
    """
    n, m = len(xs), len(ys)
    if n * m <= _DIRECT_PAIRS:
        return sorted([x - y for x in xs for y in ys])[k]
    lo_j = [0] * n  # candidates of row i are ys[lo_j[i]:hi_j[i]]; j >= hi_j: below, j < lo_j: above
    hi_j = [m] * n
    while True:
        below = sum(m - h for h in hi_j)
        live = [(i, lo_j[i], hi_j[i]) for i in range(n) if hi_j[i] > lo_j[i]]
        if sum(h - lo for _, lo, h in live) <= max(64, n):
            cands = sorted(xs[i] - ys[j] for i, lo, h in live for j in range(lo, h))
            return cands[k - below]
        mids = sorted((xs[i] - ys[(lo + h) // 2], h - lo) for i, lo, h in live)
        half = sum(w for _, w in mids) / 2.0
        acc = 0
        pivot = mids[-1][0]
        for value, w in mids:
            acc += w
            if acc >= half:
                pivot = value
                break
        le = _count_le(xs, ys, pivot, strict=False)
        lt = _count_le(xs, ys, pivot, strict=True)
        n_le = sum(m - j for j in le)
        n_lt = sum(m - j for j in lt)
        if n_lt <= k < n_le:
            return pivot
        if k < n_lt:  # the answer is below the pivot: everything >= pivot is above
            lo_j = [max(a, b) for a, b in zip(lo_j, lt, strict=True)]
        else:  # above the pivot: everything <= pivot is below
            hi_j = [min(a, b) for a, b in zip(hi_j, le, strict=True)]


def mann_whitney(canary: Sequence[float], stable: Sequence[float], confidence: float) -> ShiftTest:
    """Mann-Whitney U test and the Hodges-Lehmann shift (canary - stable) with its interval."""
    n, m = len(canary), len(stable)
    if n == 0 or m == 0:
        raise ValueError("mann-whitney needs at least one sample per track")
    u, tie_term, tied = _ranks_u(canary, stable)
    nm = n * m
    half = (1.0 - confidence) / 2.0
    if not tied and nm <= _EXACT_PAIRS:
        counts = _u_counts(n, m)
        total = math.fsum(counts)
        k = round(u)
        p_greater = math.fsum(counts[k:]) / total
        p_less = math.fsum(counts[: k + 1]) / total
        # c = the largest c >= 1 with P(U <= c - 1) <= half
        acc = 0.0
        c = 0
        while c < len(counts) and (acc + counts[c]) / total <= half:
            acc += counts[c]
            c += 1
        method = "exact"
    else:
        var = nm / 12.0 * ((n + m + 1) - tie_term / ((n + m) * (n + m - 1)))
        sd = math.sqrt(var) if var > 0 else 0.0
        if sd == 0.0:
            p_greater = p_less = 1.0
        else:
            p_greater = norm_sf((u - nm / 2.0 - 0.5) / sd)
            p_less = norm_cdf((u - nm / 2.0 + 0.5) / sd)
        # the interval's rank uses the null variance of continuous data (ties only widen it)
        sd0 = math.sqrt(nm * (n + m + 1) / 12.0)
        c = math.floor(nm / 2.0 + 0.5 + norm_ppf(half) * sd0)
        method = "normal"
    xs, ys = sorted(canary), sorted(stable)
    mid = nm // 2
    if nm % 2:
        estimate = kth_pairwise_difference(xs, ys, mid)
    else:
        estimate = (kth_pairwise_difference(xs, ys, mid - 1) + kth_pairwise_difference(xs, ys, mid)) / 2.0
    if c >= 1:
        lower = kth_pairwise_difference(xs, ys, c - 1)
        upper = kth_pairwise_difference(xs, ys, nm - c)
    else:  # too few windows for an interval at this confidence
        lower, upper = -math.inf, math.inf
    return ShiftTest("mann-whitney", method, u, estimate, lower, upper, p_greater, p_less)


# --- Welch ----------------------------------------------------------------------------------------


def welch(canary: Sequence[float], stable: Sequence[float], confidence: float) -> ShiftTest:
    """Welch's unequal-variance t-test of the difference of means (canary - stable)."""
    n, m = len(canary), len(stable)
    if n < 2 or m < 2:
        raise ValueError("the t-test needs at least two samples per track")
    mc, ms = math.fsum(canary) / n, math.fsum(stable) / m
    vc = math.fsum((v - mc) ** 2 for v in canary) / (n - 1)
    vs = math.fsum((v - ms) ** 2 for v in stable) / (m - 1)
    diff = mc - ms
    se2 = vc / n + vs / m
    if se2 <= 0.0:  # both samples constant: the difference is known exactly
        p_greater = 0.0 if diff > 0 else 1.0
        p_less = 0.0 if diff < 0 else 1.0
        return ShiftTest(
            "t-test",
            "welch",
            math.copysign(math.inf, diff) if diff else 0.0,
            diff,
            diff,
            diff,
            p_greater,
            p_less,
            math.inf,
        )
    se = math.sqrt(se2)
    den = (vc / n) ** 2 / (n - 1) + (vs / m) ** 2 / (m - 1)
    df = se2 * se2 / den if den > 0 else math.inf
    t = diff / se
    q = t_ppf(1.0 - (1.0 - confidence) / 2.0, df)
    return ShiftTest("t-test", "welch", t, diff, diff - q * se, diff + q * se, t_sf(t, df), t_sf(-t, df), df)
