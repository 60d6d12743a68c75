"""What each comparison test concludes: an interval of the canary's effect, classified.

Ratio tests (``proportion``, ``ratio``) give an interval of canary/stable and one of the
difference canary - stable; shift tests (``mann-whitney``, ``t-test``) an interval of the
shift.  The classification is the same for all: Failed when the whole interval is beyond
what is allowed, Successful when it is all within, Inconclusive otherwise (see judges.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tmcd.canary.measures import Direction, Measure, jsonable, num
from tmcd.canary.ranks import mann_whitney, welch
from tmcd.canary.samples import Track
from tmcd.canary.stats import (
    fisher_exact,
    norm_cdf,
    norm_ppf,
    norm_sf,
    odds_ratio_interval,
    poisson_ratio_interval,
    wilson,
)
from tmcd.resources.canary import Comparison

__all__ = [
    "FISHER_BELOW",
    "Effect",
    "Phase",
    "classify_ratio",
    "classify_shift",
    "fmt",
    "newcombe",
    "proportion",
    "ratio",
    "shift",
    "shift_of",
    "verdict",
]

Phase = Literal["Successful", "Failed", "Inconclusive", "Error"]
FISHER_BELOW = 5.0
"""Fisher's exact test replaces the z-test when an expected count of the 2x2 table is below this."""


def verdict(fail: bool, ok: bool) -> Phase:
    """Failed if shown bad, Successful if shown good, else Inconclusive."""
    return "Failed" if fail else "Successful" if ok else "Inconclusive"


def fmt(x: float) -> str:
    """A number in a message."""
    return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:.4g}"


@dataclass(slots=True)
class Effect:
    """An effect interval: canary/stable ratio (relative tests) or canary - stable shift."""

    phase: Phase
    reason: str
    evidence: dict[str, Any]


def classify_ratio(
    r: tuple[float, float], d: tuple[float, float], delta: float, eps: float, direction: Direction, conf: float
) -> tuple[Phase, str]:
    """Verdict from the canary/stable ratio interval r and the canary - stable interval d."""

    def side(up: bool) -> tuple[bool, bool]:
        # the regression, as a relative change and an absolute difference, oriented so bigger = worse
        rel = (r[0] - 1.0, r[1] - 1.0) if up else (1.0 - r[1], 1.0 - r[0])
        ab = d if up else (-d[1], -d[0])
        bad = rel[0] > delta and (eps <= 0.0 or ab[0] > eps)
        good = rel[1] <= delta or (eps > 0.0 and ab[1] <= eps)
        return bad, good

    sides = (
        [side(True)]
        if direction == "increase"
        else [side(False)]
        if direction == "decrease"
        else [side(True), side(False)]
    )
    fail = any(b for b, _ in sides)
    ok = all(g for _, g in sides)
    phase = verdict(fail, ok)
    limit = (
        f"{1.0 + delta:.4g}"
        if direction == "increase"
        else f"{1.0 - delta:.4g}"
        if direction == "decrease"
        else f"{1.0 - delta:.4g}..{1.0 + delta:.4g}"
    )
    slack = f" or a difference of {eps:g}" if eps > 0 else ""
    shown = f"the {conf:.0%} interval of canary/stable ({fmt(r[0])}..{fmt(r[1])})"
    reason = {
        "Failed": f"{shown} is beyond the allowed {limit}{slack}",
        "Successful": f"{shown} is within the allowed {limit}{slack}",
        "Inconclusive": f"{shown} straddles the allowed {limit}{slack}: not enough data yet to tell",
    }[phase]
    return phase, reason


def classify_shift(lo: float, hi: float, allowed: float, direction: Direction, conf: float) -> tuple[Phase, str]:
    """Verdict from the canary - stable shift interval against the allowed worsening."""
    bad_up, good_up = lo > allowed, hi <= allowed
    bad_down, good_down = hi < -allowed, lo >= -allowed
    if direction == "increase":
        fail, ok = bad_up, good_up
    elif direction == "decrease":
        fail, ok = bad_down, good_down
    else:
        fail, ok = bad_up or bad_down, good_up and good_down
    phase = verdict(fail, ok)
    shown = f"the {conf:.0%} interval of the shift canary - stable ({fmt(lo)}..{fmt(hi)})"
    word = {"Failed": "is beyond", "Successful": "is within", "Inconclusive": "straddles"}[phase]
    tail = ": not enough data yet to tell" if phase == "Inconclusive" else ""
    return phase, f"{shown} {word} the allowed {direction} of {fmt(allowed)}{tail}"


def newcombe(a: float, n1: float, b: float, n2: float, conf: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval of p1 - p2 (from two Wilson intervals)."""
    p1, p2 = a / n1, b / n2
    l1, u1 = wilson(a, n1, conf)
    l2, u2 = wilson(b, n2, conf)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def p_worse(p_greater: float, p_less: float, direction: Direction) -> float:
    """The one-sided p-value of 'the canary is worse' (either: two-sided)."""
    if direction == "increase":
        return p_greater
    if direction == "decrease":
        return p_less
    return min(1.0, 2.0 * min(p_greater, p_less))


def proportion(c: Track, s: Track, cmp: Comparison, eps: float, direction: Direction) -> Effect:
    """Two pooled error proportions: the z-test, or Fisher's exact test for small or rare counts."""
    conf = cmp.confidence
    a, n1, e2, n2 = round(c.errors), round(c.requests), round(s.errors), round(s.requests)
    b, d = n1 - a, n2 - e2
    total, errors = n1 + n2, a + e2
    expected = min(n1 * errors, n1 * (b + d), n2 * errors, n2 * (b + d)) / total
    if expected < FISHER_BELOW or a == 0 or e2 == 0:
        method = "fisher"
        why = (
            f"fisher: smallest expected count {expected:.3g} is below {FISHER_BELOW:g}"
            if expected < FISHER_BELOW
            else f"fisher: no errors on the {'canary' if a == 0 else 'stable'} track"
        )
        p_greater, p_less = fisher_exact(a, b, e2, d), fisher_exact(b, a, d, e2)
        r = odds_ratio_interval(a, b, e2, d, conf)
        estimate = (a * d) / (b * e2) if b * e2 > 0 else math.inf if a * d > 0 else math.nan
        stat = {"name": "canaryErrors", "value": a}
        kind = "oddsRatio"
    else:
        method = "z-test"
        why = f"z-test: every expected count is at least {FISHER_BELOW:g}"
        pooled = errors / total
        z = (a / n1 - e2 / n2) / math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
        p_greater, p_less = norm_sf(z), norm_cdf(z)
        estimate = (a / n1) / (e2 / n2)
        half = norm_ppf(1.0 - (1.0 - conf) / 2.0) * math.sqrt(1.0 / a - 1.0 / n1 + 1.0 / e2 - 1.0 / n2)
        r = (estimate * math.exp(-half), estimate * math.exp(half))
        stat = {"name": "z", "value": num(z)}
        kind = "riskRatio"
    diff = newcombe(a, n1, e2, n2, conf)
    phase, reason = classify_ratio(r, diff, cmp.max_increase, eps, direction, conf)
    evidence = {
        "method": method,
        "why": why,
        "statistic": stat,
        "pValue": num(p_worse(p_greater, p_less, direction)),
        "estimate": {"name": kind, "value": num(estimate), "interval": jsonable(*r)},
        "difference": {"value": num(a / n1 - e2 / n2), "interval": jsonable(*diff)},
    }
    return Effect(phase, reason, evidence)


def ratio(measure: Measure, c: Track, s: Track, cmp: Comparison, eps: float, direction: Direction) -> Effect:
    """canary/stable of the pooled values, with an interval from the pooled data."""
    conf = cmp.confidence
    vc, vs = measure.value(c), measure.value(s)
    if measure.kind == "count":
        r = poisson_ratio_interval(c.errors, c.requests, s.errors, s.requests, conf)
        d = newcombe(c.errors, c.requests, s.errors, s.requests, conf)
        method, why = "poisson-conditional", "exact interval of the ratio of error rates, given both tracks' errors"
    elif measure.kind == "quantile":
        # two intervals at 1 - alpha/2 each keep the pair's coverage at `confidence`
        lc, hc = measure.quantile_interval(c, 1.0 - (1.0 - conf) / 2.0)
        ls, hs = measure.quantile_interval(s, 1.0 - (1.0 - conf) / 2.0)
        r = (lc / hs if hs > 0 else 0.0, hc / ls if ls > 0 else math.inf)
        d = (lc - hs, hc - ls)
        method, why = "order-statistics", "distribution-free intervals of both quantiles, read off the histograms"
    else:
        if c.exposure <= 0 or s.exposure <= 0:
            raise ValueError("comparing request rates needs a traffic share above 0 on both tracks")
        r = poisson_ratio_interval(c.requests, c.exposure, s.requests, s.exposure, conf)
        vc, vs = c.requests / c.exposure, s.requests / s.exposure
        d = (vs * (r[0] - 1.0), vs * (r[1] - 1.0))
        method, why = "poisson-conditional", "requests per second per unit of traffic share, treated as Poisson"
    estimate = vc / vs if vs > 0 else math.inf if vc > 0 else math.nan
    phase, reason = classify_ratio(r, d, cmp.max_increase, eps, direction, conf)
    evidence = {
        "method": method,
        "why": why,
        "estimate": {"name": "ratio", "value": num(estimate), "interval": jsonable(*r)},
        "difference": {"value": num(vc - vs), "interval": jsonable(*d)},
    }
    return Effect(phase, reason, evidence)


def shift_of(xs: Sequence[float], ys: Sequence[float], cmp: Comparison, eps: float, direction: Direction) -> Effect:
    """Mann-Whitney or Welch on two samples, classified against the allowed shift."""
    conf = cmp.confidence
    if cmp.test == "t-test" and (len(xs) < 2 or len(ys) < 2):
        return Effect("Inconclusive", f"the t-test needs 2 windows per track (canary {len(xs)}, stable {len(ys)})", {})
    res = mann_whitney(xs, ys, conf) if cmp.test == "mann-whitney" else welch(xs, ys, conf)
    base = statistics.median(ys) if cmp.test == "mann-whitney" else statistics.fmean(ys)
    allowed = max(cmp.max_increase * abs(base), eps)
    phase, reason = classify_shift(res.lower, res.upper, allowed, direction, conf)
    evidence: dict[str, Any] = {
        "method": res.method,
        "why": "per-window samples; "
        + (
            "Hodges-Lehmann shift with its rank interval" if cmp.test == "mann-whitney" else "Welch's unequal variances"
        ),
        "statistic": {"name": "U" if cmp.test == "mann-whitney" else "t", "value": num(res.statistic)},
        "pValue": num(p_worse(res.p_greater, res.p_less, direction)),
        "estimate": {
            "name": "hodgesLehmannShift" if cmp.test == "mann-whitney" else "meanDifference",
            "value": num(res.estimate),
            "interval": jsonable(res.lower, res.upper),
        },
        "baseline": {"name": "stableMedian" if cmp.test == "mann-whitney" else "stableMean", "value": num(base)},
        "allowedShift": num(allowed),
    }
    if not math.isnan(res.df):
        evidence["df"] = num(res.df)
    return Effect(phase, reason, evidence)


def shift(measure: Measure, c: Track, s: Track, cmp: Comparison, eps: float, direction: Direction) -> Effect:
    """A per-window test on the tracks' window values; a pass also needs the pooled ratio to pass."""
    eff = shift_of(measure.window_values(c), measure.window_values(s), cmp, eps, direction)
    if eff.phase == "Successful":
        # per-window samples cannot see how many requests stand behind each window (a window of
        # 3 requests and no errors looks perfect; a window's p99 of 10 requests is its maximum):
        # a pass also needs the pooled data to show it
        guard = ratio(measure, c, s, cmp, eps, direction)
        eff.evidence["pooledCheck"] = {"verdict": guard.phase, "reason": guard.reason, **guard.evidence}
        if guard.phase != "Successful":
            eff.phase = "Inconclusive"
            eff.reason = f"{eff.reason}, but the pooled data cannot show it yet: {guard.reason}"
    return eff
