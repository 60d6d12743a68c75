"""Judges: a condition applied to the pooled data of a run gives a verdict and its evidence.

Every judge works from a two-sided confidence interval at the metric's ``confidence`` and says

* **Failed** when the whole interval is on the wrong side of what is allowed,
* **Successful** when the whole interval is on the right side,
* **Inconclusive** otherwise -- too little data to tell, which pooling cures with time.

So sparse data never passes (Kayenta passes whatever it cannot tell apart), and a verdict
in either direction is wrong with probability at most (1 - confidence) / 2 at the edge of
what is allowed.  For comparisons, "allowed" is the canary being worse than stable by at
most ``maxIncrease`` (relative) or, when set, by at most ``maxDifference`` (absolute, in the
measure's unit) -- whichever allows more; the absolute slack is what lets a canary pass
against a stable with no errors at all.

Error-count measures also run the anytime-valid mixture test (:mod:`tmcd.canary.sequential`),
which may fail the canary at any window; fixed-horizon tests decide at scheduled measurements.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tmcd.canary.effects import Phase, fmt, newcombe, proportion, ratio, shift, shift_of, verdict
from tmcd.canary.measures import Direction, Measure, jsonable, num
from tmcd.canary.ranks import summary
from tmcd.canary.samples import RunData, Track, TrackName
from tmcd.canary.sequential import one_sample_log_ratio
from tmcd.canary.stats import clopper_pearson
from tmcd.resources.canary import Comparison, MetricCondition, Threshold

__all__ = [
    "THRESHOLD_CONFIDENCE",
    "Judgement",
    "Sequential",
    "anytime_rejects",
    "judge_comparison",
    "judge_samples",
    "judge_scalar",
    "judge_threshold",
]

THRESHOLD_CONFIDENCE = 0.95
"""Confidence of the intervals a threshold is judged on (error ratios and quantiles)."""


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verdict on the data so far, with its evidence (plain JSON-able data)."""

    phase: Phase
    message: str
    value: float | None = None
    """The measured value: the canary's (or the configured track's) pooled value."""
    evidence: dict[str, Any] = field(default_factory=dict)
    no_data: bool = False
    """Nothing to judge: the metric's noData policy decides."""
    early: bool = False
    """The anytime-valid test rejected: valid to act on between scheduled measurements."""


# --- thresholds ----------------------------------------------------------------------------------


def judge_threshold(measure: Measure, track: Track, track_name: str, threshold: Threshold) -> Judgement:
    """min <= value <= max, judged on the value's confidence interval (a point for request rates)."""
    conf = THRESHOLD_CONFIDENCE
    if not measure.has_data(track):
        missing: dict[str, Any] = {"measure": measure.name, "condition": "threshold", "missing": [track_name]}
        return Judgement("Inconclusive", f"no {measure.name} data for {track_name}", evidence=missing, no_data=True)
    value = measure.value(track)
    if measure.kind == "count":
        lo, hi = clopper_pearson(track.errors, track.requests, conf)
        method = "clopper-pearson"
    elif measure.kind == "quantile":
        lo, hi = measure.quantile_interval(track, conf)
        method = "order-statistics"
    else:
        lo = hi = value
        method = "point"
    tmin, tmax = threshold.min, threshold.max
    fail = (tmax is not None and lo > tmax) or (tmin is not None and hi < tmin)
    ok = (tmax is None or hi <= tmax) and (tmin is None or lo >= tmin)
    phase = verdict(fail, ok)
    bounds = " and ".join(f"{k} {fmt(v)}" for k, v in (("min", tmin), ("max", tmax)) if v is not None)
    shown = f"{measure.name} {fmt(value)}" + (
        "" if method == "point" else f" ({conf:.0%} interval {fmt(lo)}..{fmt(hi)})"
    )
    message = {
        "Successful": f"{shown} is within {bounds}",
        "Failed": f"{shown} is outside {bounds}",
        "Inconclusive": f"{shown} straddles {bounds}: not enough data yet to tell",
    }[phase]
    evidence: dict[str, Any] = {
        "measure": measure.name,
        "condition": "threshold",
        "method": method,
        "track": track_name,
        "tracks": {track_name: measure.track_evidence(track, samples=True)},
        "threshold": {k: v for k, v in (("min", tmin), ("max", tmax)) if v is not None},
        "confidence": conf,
        "interval": jsonable(lo, hi),
    }
    seq = _threshold_sequential(measure, track, threshold)
    early = seq is not None and seq.rejected
    if seq is not None:
        evidence["sequential"] = seq.evidence
        llr = seq.log_ratio
        if early and phase != "Failed":
            phase = "Failed"
            message = (
                f"anytime-valid test: {measure.name} {fmt(value)} exceeds max {threshold.max:g} "
                f"(always-valid p {fmt(math.exp(-llr))})"
            )
    evidence.update(verdict=phase, reason=message)
    return Judgement(phase, message, num(value), evidence, early=early)


def judge_scalar(name: str, value: float | None, threshold: Threshold) -> Judgement:
    """A threshold on one number from a provider such as Prometheus (no interval to be had)."""
    if value is None or math.isnan(value):
        return Judgement("Inconclusive", f"{name}: the query returned no value", no_data=True)
    tmin, tmax = threshold.min, threshold.max
    ok = (tmin is None or value >= tmin) and (tmax is None or value <= tmax)
    bounds = " and ".join(f"{k} {fmt(v)}" for k, v in (("min", tmin), ("max", tmax)) if v is not None)
    phase: Phase = "Successful" if ok else "Failed"
    message = f"{name} {fmt(value)} is {'within' if ok else 'outside'} {bounds}"
    evidence = {
        "measure": name,
        "condition": "threshold",
        "method": "point",
        "value": num(value),
        "threshold": {k: v for k, v in (("min", tmin), ("max", tmax)) if v is not None},
        "verdict": phase,
        "reason": message,
    }
    return Judgement(phase, message, num(value), evidence)


# --- comparisons ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sequential:
    """The anytime-valid test at this look."""

    rejected: bool
    log_ratio: float
    evidence: dict[str, Any]


def _sequential(llr: float, alpha: float, null: str, rejected: bool, **extra: Any) -> Sequential:
    evidence = {
        "test": "mixture-sprt",
        "null": null,
        "alpha": num(alpha),
        "likelihoodRatio": num(math.exp(min(llr, 700.0))),
        "threshold": num(1.0 / alpha),
        "alwaysValidP": num(min(1.0, math.exp(-llr)) if llr > -700 else 1.0),
        "rejected": rejected,
        **extra,
    }
    return Sequential(rejected, llr, evidence)


def _threshold_sequential(measure: Measure, track: Track, threshold: Threshold) -> Sequential | None:
    """The one-sample test of 'error ratio <= max', for an error-count threshold with a max."""
    if measure.kind != "count" or threshold.max is None or track.requests <= 0:
        return None
    alpha = 1.0 - THRESHOLD_CONFIDENCE
    llr = one_sample_log_ratio(track.errors, track.requests, threshold.max)
    return _sequential(llr, alpha, f"error ratio <= {threshold.max:g}", llr >= math.log(1.0 / alpha))


def _comparison_sequential(measure: Measure, data: RunData, cmp: Comparison) -> Sequential | None:
    """The two-sample test of 'canary's error rate <= (1 + maxIncrease) x stable's'."""
    if measure.kind != "count" or (cmp.direction or measure.worse) == "decrease":
        return None
    c, s = data.tracks["canary"], data.tracks["stable"]
    mix = data.mixture(1.0 + cmp.max_increase)
    llr = mix.log_ratio()
    alpha = 1.0 - cmp.confidence
    rejected = llr >= math.log(1.0 / alpha)
    eps = cmp.max_difference or 0.0
    if rejected and eps > 0.0:  # an absolute slack: the difference must also exceed it
        rejected = (
            c.requests > 0
            and s.requests > 0
            and newcombe(c.errors, c.requests, s.errors, s.requests, cmp.confidence)[0] > eps
        )
    null = f"canary error rate <= {1.0 + cmp.max_increase:g} x stable's"
    return _sequential(llr, alpha, null, rejected, windows=mix.windows, late=data.late)


def anytime_rejects(measure: Measure, data: RunData, track_name: TrackName, cond: MetricCondition) -> bool:
    """Whether the condition's anytime-valid test rejects now (cheap: no fixed-horizon test is run).

    Only error-count measures have one: a threshold with ``max``, or a comparison whose
    regression direction includes an increase.
    """
    if cond.comparison is not None:
        seq = _comparison_sequential(measure, data, cond.comparison)
    elif cond.threshold is not None:
        seq = _threshold_sequential(measure, data.tracks[track_name], cond.threshold)
    else:
        seq = None
    return seq is not None and seq.rejected


def judge_comparison(measure: Measure, data: RunData, cmp: Comparison) -> Judgement:
    """The canary against stable over the same windows, with the comparison's test."""
    c, s = data.tracks["canary"], data.tracks["stable"]
    direction: Direction = cmp.direction or measure.worse
    eps = cmp.max_difference or 0.0
    if cmp.test == "proportion" and measure.kind != "count":
        raise ValueError(f"the proportion test compares counts (error ratios), not {measure.name}")
    missing = [n for n, t in (("canary", c), ("stable", s)) if not measure.has_data(t)]
    if missing:
        what: dict[str, Any] = {
            "measure": measure.name,
            "condition": "comparison",
            "test": cmp.test,
            "missing": missing,
        }
        return Judgement(
            "Inconclusive", f"no {measure.name} data for {' and '.join(missing)}", evidence=what, no_data=True
        )
    if cmp.test == "proportion":
        eff = proportion(c, s, cmp, eps, direction)
    elif cmp.test == "ratio":
        eff = ratio(measure, c, s, cmp, eps, direction)
    else:
        eff = shift(measure, c, s, cmp, eps, direction)
    phase, message = eff.phase, eff.reason
    per_window = cmp.test in ("mann-whitney", "t-test")
    evidence: dict[str, Any] = {
        "measure": measure.name,
        "condition": "comparison",
        "test": cmp.test,
        **eff.evidence,
        "direction": direction,
        "confidence": cmp.confidence,
        "tolerance": {"maxIncrease": cmp.max_increase, "maxDifference": eps},
        "tracks": {"canary": measure.track_evidence(c, per_window), "stable": measure.track_evidence(s, per_window)},
    }
    seq = _comparison_sequential(measure, data, cmp)
    early = seq is not None and seq.rejected
    if seq is not None:
        evidence["sequential"] = seq.evidence
        llr = seq.log_ratio
        if early and phase != "Failed":
            phase = "Failed"
            message = (
                f"anytime-valid test: the canary's error rate exceeds {1.0 + cmp.max_increase:g} x stable's "
                f"(always-valid p {fmt(math.exp(-llr))})"
            )
    if not eps and phase == "Inconclusive" and measure.kind == "count" and s.errors == 0 and c.requests > 0:
        message += "; stable has no errors, so a relative tolerance cannot be shown: set maxDifference"
    evidence.update(verdict=phase, reason=message)
    return Judgement(phase, message, num(measure.value(c)), evidence, early=early)


def judge_samples(name: str, canary: Sequence[float], stable: Sequence[float], cmp: Comparison) -> Judgement:
    """A comparison of two plain series (one value per window), e.g. from a metrics query.

    Only the per-window tests apply (mann-whitney, t-test).  There are no pooled counts behind
    such values, so the pooled check of :func:`judge_comparison` cannot be made: a pass rests
    on the samples alone.
    """
    if cmp.test not in ("mann-whitney", "t-test"):
        raise ValueError(f"{cmp.test} needs pooled counts; plain series take mann-whitney or t-test")
    xs = [v for v in canary if not math.isnan(v)]
    ys = [v for v in stable if not math.isnan(v)]
    missing = [n for n, v in (("canary", xs), ("stable", ys)) if not v]
    if missing:
        return Judgement("Inconclusive", f"no {name} samples for {' and '.join(missing)}", no_data=True)
    direction: Direction = cmp.direction or "increase"
    eff = shift_of(xs, ys, cmp, cmp.max_difference or 0.0, direction)
    evidence = {
        "measure": name,
        "condition": "comparison",
        "test": cmp.test,
        **eff.evidence,
        "direction": direction,
        "confidence": cmp.confidence,
        "tolerance": {"maxIncrease": cmp.max_increase, "maxDifference": cmp.max_difference or 0.0},
        "tracks": {
            "canary": {"samples": {k: num(v) for k, v in summary(xs).items()}},
            "stable": {"samples": {k: num(v) for k, v in summary(ys).items()}},
        },
        "verdict": eff.phase,
        "reason": eff.reason,
    }
    return Judgement(eff.phase, eff.reason, num(statistics.median(xs)), evidence)
