"""Random counts for the mock service mesh: Poisson, binomial and multinomial draws, and the
bucket probabilities of a lognormal latency.

A window's requests, errors and latency histogram are drawn as counts, never request by
request, so a window costs the same for 10 requests as for 10 million.  Small counts are
drawn exactly (inversion); large ones by the normal approximation, which at that size is
closer to the exact distribution than the histogram's own resolution.  Python 3.11 has no
``random.binomialvariate``.  Pure: every draw takes its ``random.Random``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

EXACT_BELOW = 30.0
"""Means below this are drawn exactly; from it on by the normal approximation."""


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count with this mean."""
    if not mean > 0:
        return 0
    if mean < EXACT_BELOW:
        # inversion: walk the CDF from 0 (expected mean + 1 steps)
        u = rng.random()
        k, p = 0, math.exp(-mean)
        cdf = p
        while u > cdf and p > 0:
            k += 1
            p *= mean / k
            cdf += p
        return k
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Successes in ``n`` trials of probability ``p``."""
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    if p > 0.5:  # draw the rarer outcome: inversion stays short, the approximation symmetric
        return n - binomial(rng, n, 1.0 - p)
    mean = n * p
    if mean < EXACT_BELOW:
        # inversion (Kachitvichyanukul & Schmeiser's BINV): P(k+1) = P(k) * (n-k)/(k+1) * p/q
        q = 1.0 - p
        ratio = p / q
        u = rng.random()
        k, pk = 0, q**n
        while u > pk and k < n:
            u -= pk
            k += 1
            pk *= ratio * (n - k + 1) / k
            if pk <= 0:
                break
        return k
    return min(n, max(0, round(rng.gauss(mean, math.sqrt(mean * (1.0 - p))))))


def multinomial(rng: random.Random, n: int, probs: Sequence[float], order: Sequence[int]) -> list[int]:
    """Counts per category of ``n`` draws with these probabilities (summing to 1 or less: the
    rest is a category of its own, left out).  ``order`` lists the categories to draw first,
    the likeliest first, so the remaining count reaches 0 early (conditional binomials)."""
    counts = [0] * len(probs)
    left_n, left_p = n, 1.0
    for i in order:
        if left_n <= 0 or left_p <= 0:
            break
        p = probs[i]
        k = binomial(rng, left_n, min(1.0, p / left_p)) if p > 0 else 0
        counts[i] = k
        left_n -= k
        left_p -= p
    return counts


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def lognormal_buckets(median: float, sigma: float, bounds: Sequence[float]) -> tuple[list[float], list[float]]:
    """For a lognormal latency (``median``, log-``sigma``) and ascending finite ``bounds``: the
    probability of each bucket ``(bounds[i-1], bounds[i]]`` plus the one above the last bound,
    and the mean latency of a request in each (so a histogram's sum follows its counts)."""
    mu = math.log(median)
    mean = math.exp(mu + sigma * sigma / 2.0)
    edges = [*bounds, math.inf]
    probs: list[float] = []
    means: list[float] = []
    prev_cdf, prev_partial, lower = 0.0, 0.0, 0.0
    for upper in edges:
        if math.isinf(upper):
            cdf, partial = 1.0, 1.0
        else:
            z = (math.log(upper) - mu) / sigma
            cdf, partial = _phi(z), _phi(z - sigma)  # partial: share of the mean below `upper`
        p = max(0.0, cdf - prev_cdf)
        probs.append(p)
        # E[X | lower < X <= upper] from the lognormal's partial expectation; the midpoint when
        # the bucket is too unlikely for the difference to carry digits
        share = partial - prev_partial
        mid = (lower + upper) / 2.0 if math.isfinite(upper) else lower * 1.5
        means.append(mean * share / p if p > 1e-12 else mid)
        prev_cdf, prev_partial, lower = cdf, partial, upper
    return probs, means
