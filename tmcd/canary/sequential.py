"""Anytime-valid tests for error counts: mixture likelihood ratios checked at every window.

A fixed-horizon test looked at after every window fails a healthy canary far more often than
its nominal rate.  These tests may be looked at as often as one likes: each is a mixture of
likelihood ratios, a nonnegative supermartingale under the null hypothesis, so by Ville's
inequality the chance that it *ever* reaches 1/alpha is at most alpha (Robbins 1970; the
count tests follow Lindon & Malek, "Anytime-valid inference for multinomial count data",
NeurIPS 2022, which Netflix uses for canary error counts).  ``1 / ratio`` is the always-valid
p-value at that look.

* One sample (a ``threshold`` with ``max`` on an error ratio): H0 is p <= p0; each request is
  a Bernoulli trial, the alternative p = p0 * e^s, mixed over the grid of effects s.
* Two samples (``comparison`` of error ratios): H0 is that the canary's error rate is at most
  rho0 = 1 + maxIncrease times stable's.  Conditional on the E errors of a window, the canary's
  share is Binomial(E, pi) with pi = rho n_c / (rho n_c + n_s) for that window's requests
  n_c and n_s -- the traffic split may change between windows (setWeight), and the unknown
  common error rate cancels.  The log ratio of window k against rho0 is
  ``e_c log(rho / rho0) - E log((rho r_k + 1) / (rho0 r_k + 1))`` with r_k = n_c / n_s, summed
  over windows and mixed over rho = rho0 * e^s.  A window enters once, when it is sealed, so
  each factor is computed from the window's final counts.

The mixing distribution is uniform over :data:`EFFECTS` (log effect sizes from 5 % to 20x):
it is fixed before any data is seen, which is all the guarantee needs; its spread trades a
little power at any one effect size for power across all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["EFFECTS", "TwoSampleMixture", "log_mixture", "one_sample_log_ratio"]

EFFECTS: tuple[float, ...] = tuple(math.log(1.0 + 0.05 * 1.5**j) for j in range(15))
"""Log effect sizes of the mixture: ratios 1.05 to about 20 (uniform weights)."""


def log_mixture(log_ratios: Iterable[float]) -> float:
    """log of the mean of exp(log_ratios): the mixture's log likelihood ratio."""
    values = list(log_ratios)
    if not values:
        return 0.0
    top = max(values)
    if top == math.inf:
        return math.inf
    return top + math.log(math.fsum(math.exp(v - top) for v in values) / len(values))


def one_sample_log_ratio(errors: float, trials: float, p0: float) -> float:
    """log mixture likelihood ratio of 'error ratio > p0' after ``errors`` in ``trials``."""
    if trials <= 0:
        return 0.0
    if p0 <= 0.0:  # any error disproves p <= 0
        return math.inf if errors > 0 else 0.0
    if p0 >= 1.0:
        return -math.inf
    ok = trials - errors
    log_null = math.log(p0), math.log1p(-p0)
    out = []
    for s in EFFECTS:
        p = p0 * math.exp(s)
        if p >= 1.0:
            out.append(errors * (-log_null[0]) if ok == 0 else -math.inf)
            continue
        out.append(errors * (math.log(p) - log_null[0]) + ok * (math.log1p(-p) - log_null[1]))
    return log_mixture(out)


@dataclass(slots=True)
class TwoSampleMixture:
    """Running sums of the two-sample mixture for one null ratio ``rho0``.

    :meth:`add` takes each sealed window once (canary errors, total errors, n_c / n_s);
    :meth:`log_ratio` is O(len(EFFECTS)).
    """

    rho0: float
    canary_errors: float = 0.0
    windows: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0] * len(EFFECTS))

    def add(self, canary_errors: float, errors: float, exposure_ratio: float) -> None:
        """Fold in one sealed window: its canary errors, both tracks' errors, n_c / n_s."""
        self.windows += 1
        if errors <= 0 or exposure_ratio <= 0 or math.isinf(exposure_ratio):
            return  # no errors, or one track had no requests: no information about the ratio
        self.canary_errors += canary_errors
        base = math.log1p(self.rho0 * exposure_ratio)
        for j, s in enumerate(EFFECTS):
            self.sums[j] += errors * (math.log1p(self.rho0 * math.exp(s) * exposure_ratio) - base)

    def log_ratio(self) -> float:
        """log mixture likelihood ratio of 'the canary's error rate exceeds rho0 times stable's'."""
        return log_mixture(self.canary_errors * s - self.sums[j] for j, s in enumerate(EFFECTS))
