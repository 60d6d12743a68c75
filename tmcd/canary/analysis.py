"""Measurements and verdicts of an analysis run: pure functions of (metric, run state, data, now).

The canary state machine calls, per metric of a running analysis:

* :func:`measure` at each scheduled measurement (every ``interval``, ``count`` times): the
  condition's judge on everything the run has pooled so far, then ``noData``, then the
  counters and limits exactly as Argo Rollouts counts them;
* :func:`peek` whenever a new window arrives: it records a measurement only when an
  anytime-valid test rejects *and* that failure ends the metric (failed > failureLimit), so
  continuous monitoring never raises the false-failure rate;
* :func:`run_phase` over all metrics of the run, for the run's verdict.

Argo Rollouts' counting: Successful, Failed and Inconclusive measurements increment ``count``
and reset ``consecutiveError``; an Error increments ``error`` and ``consecutiveError`` only.
A metric is Failed when failed > failureLimit, Inconclusive when inconclusive >
inconclusiveLimit, Error when consecutiveError > consecutiveErrorLimit (checked in that order,
a later one winning), Successful once ``count`` measurements were taken; the run is the worst of
its metrics (Successful < Running < Pending < Inconclusive < Error < Failed) once every metric
completed, or as soon as one is Failed, Error or Inconclusive (the run then terminates: metrics
still running count as Successful).  Argo retries an Error after 10 s rather than a full
interval (:data:`ERROR_RETRY_SECONDS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from tmcd.canary.judges import Judgement, anytime_rejects, judge_comparison, judge_scalar, judge_threshold
from tmcd.canary.measures import MEASURES
from tmcd.canary.samples import RunData, TrackName
from tmcd.resources.canary import AnalysisMetric, AnalysisPhase, MetricResult
from tmcd.resources.meta import rfc3339

__all__ = [
    "ERROR_RETRY_SECONDS",
    "Assessment",
    "Measurement",
    "MeasurementPhase",
    "Observation",
    "ProviderError",
    "ScalarValue",
    "judge",
    "measure",
    "measure_name",
    "metric_phase",
    "peek",
    "run_phase",
]

MeasurementPhase = Literal["Successful", "Failed", "Inconclusive", "Error"]
ERROR_RETRY_SECONDS = 10.0
"""After an Error, measure again this soon rather than after a full interval (as Argo Rollouts)."""
_COMPLETED = ("Successful", "Failed", "Inconclusive", "Error")
_ORDER: tuple[AnalysisPhase, ...] = ("Successful", "Running", "Pending", "Inconclusive", "Error", "Failed")
"""Best to worst, as Argo Rollouts ranks analysis phases."""


@dataclass(frozen=True, slots=True)
class ScalarValue:
    """One number from a provider that returns a single value (Prometheus); None: empty result."""

    value: float | None


@dataclass(frozen=True, slots=True)
class ProviderError:
    """The provider could not be read (the measurement is an Error)."""

    message: str


Observation = RunData | ScalarValue | ProviderError
"""What a measurement is taken on: pooled windows (nats, syncer), one number, or an error."""


class Measurement(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """One measurement of one metric, with the evidence behind its phase."""

    phase: MeasurementPhase
    time: str
    """When it was taken (RFC 3339)."""
    value: float | None = None
    message: str = ""
    evidence: dict[str, Any] = msgspec.field(default_factory=dict)
    early: bool = False
    """Taken between scheduled measurements because an anytime-valid test rejected."""


@dataclass(frozen=True, slots=True)
class Assessment:
    """A measurement and the metric's state after it."""

    measurement: Measurement
    result: MetricResult
    """Counters updated, ``phase`` assessed, value/evidence/message of this measurement."""

    @property
    def verdict(self) -> AnalysisPhase:
        """The metric's phase: Running until a limit or the count is reached."""
        return self.result.phase


def measure_name(metric: AnalysisMetric, default: str | None = None) -> str | None:
    """The pooled measure a metric reads (``provider.nats.metric`` or ``provider.syncer.metric``), else ``default``."""
    if metric.provider.nats is not None:
        return metric.provider.nats.metric
    if metric.provider.syncer is not None:
        return metric.provider.syncer.metric
    return default


def judge(metric: AnalysisMetric, observation: Observation, *, kind: str | None = None) -> Judgement:
    """The metric's condition on the observation, before noData and limits.

    ``kind`` names the measure for providers that do not (e.g. ``sync_error_ratio`` for the
    syncer provider).  Raises ValueError for a combination that cannot be judged.
    """
    cond = metric.condition
    if isinstance(observation, ProviderError):
        return Judgement("Error", observation.message, evidence={"error": observation.message})
    if isinstance(observation, ScalarValue):
        if cond.threshold is None:
            raise ValueError("a comparison needs windows per track (the nats or syncer provider), not one value")
        return judge_scalar(metric.name, observation.value, cond.threshold)
    name = measure_name(metric, kind)
    m = MEASURES.get(name or "")
    if m is None:
        raise ValueError(f"unknown measure {name!r} (expected one of {', '.join(MEASURES)})")
    if cond.comparison is not None:
        return judge_comparison(m, observation, cond.comparison)
    if cond.threshold is None:
        raise ValueError("the metric has neither a threshold nor a comparison")
    track = _track(metric)
    return judge_threshold(m, observation.tracks[track], track, cond.threshold)


def _track(metric: AnalysisMetric) -> TrackName:
    """The track a threshold measures: the provider's ``track``, the canary by default."""
    p = metric.provider
    return (p.nats.track if p.nats else p.syncer.track if p.syncer else None) or "canary"


_NO_DATA: dict[str, MeasurementPhase] = {"inconclusive": "Inconclusive", "fail": "Failed", "pass": "Successful"}


def _apply_no_data(metric: AnalysisMetric, j: Judgement) -> tuple[MeasurementPhase, str, dict[str, Any]]:
    if not j.no_data:
        return j.phase, j.message, {**j.evidence, "verdict": j.phase, "reason": j.message}
    phase = _NO_DATA[metric.no_data]
    message = f"{j.message} (noData: {metric.no_data})"
    return phase, message, {**j.evidence, "noData": metric.no_data, "verdict": phase, "reason": message}


def _count(result: MetricResult, phase: MeasurementPhase) -> dict[str, int]:
    """Argo Rollouts' counters after one more measurement."""
    c = {
        "count": result.count,
        "successful": result.successful,
        "failed": result.failed,
        "inconclusive": result.inconclusive,
        "error": result.error,
        "consecutive_error": result.consecutive_error,
    }
    if phase == "Error":
        c["error"] += 1
        c["consecutive_error"] += 1
        return c
    c["count"] += 1
    c["consecutive_error"] = 0
    c[phase.lower()] += 1
    return c


def _record(metric: AnalysisMetric, prior: MetricResult | None, j: Judgement, now: float, early: bool) -> Assessment:
    prior = prior or MetricResult(name=metric.name)
    if prior.phase in _COMPLETED:
        raise ValueError(f"metric {metric.name!r} already completed ({prior.phase}): no more measurements")
    phase, message, evidence = _apply_no_data(metric, j)
    m = Measurement(phase=phase, time=rfc3339(now), value=j.value, message=message, evidence=evidence, early=early)
    result = msgspec.structs.replace(prior, value=j.value, evidence=evidence, message=message, **_count(prior, phase))
    verdict, why = metric_phase(metric, result)
    if why:
        result = msgspec.structs.replace(result, message=f"{why}: {message}")
    return Assessment(m, msgspec.structs.replace(result, phase=verdict))


def measure(
    metric: AnalysisMetric,
    result: MetricResult | None,
    observation: Observation,
    now: float,
    *,
    kind: str | None = None,
) -> Assessment:
    """Take a scheduled measurement: judge, apply noData, count, assess the metric.

    ``result`` is the metric's state so far (None before the first measurement); ``now`` is
    only written into the measurement.  A combination that cannot be judged (an unknown
    measure, a comparison on one number, numeric failure) is an Error measurement.
    """
    try:
        j = judge(metric, observation, kind=kind)
    except (ValueError, ArithmeticError) as exc:
        j = Judgement("Error", f"cannot judge {metric.name}: {exc}", evidence={"error": str(exc)})
    return _record(metric, result, j, now, early=False)


def peek(
    metric: AnalysisMetric,
    result: MetricResult | None,
    observation: Observation,
    now: float,
    *,
    kind: str | None = None,
) -> Assessment | None:
    """Look between scheduled measurements; a measurement only if an anytime-valid test fails the metric.

    None means: nothing decided, wait for the schedule.  Only error-count measures have an
    anytime-valid test (threshold ``max`` and comparisons), and the early failure is recorded
    only when it ends the metric (failed + 1 > failureLimit), so it is never counted twice.
    """
    if not isinstance(observation, RunData) or (result is not None and result.phase in _COMPLETED):
        return None
    failed = result.failed if result is not None else 0
    if failed + 1 <= metric.failure_limit:
        return None
    m = MEASURES.get(measure_name(metric, kind) or "")
    if m is None or m.kind != "count":
        return None
    track = _track(metric)
    try:
        if not anytime_rejects(m, observation, track, metric.condition):
            return None
        j = judge(metric, observation, kind=kind)  # the full evidence, only when it decides
    except (ValueError, ArithmeticError):
        return None  # the scheduled measurement reports it
    return _record(metric, result, j, now, early=True)


def metric_phase(
    metric: AnalysisMetric, result: MetricResult, *, terminating: bool = False
) -> tuple[AnalysisPhase, str]:
    """A metric's phase from its counters, and why when a limit decided it (Argo's assessMetricStatus)."""
    if result.phase in _COMPLETED:
        return result.phase, ""
    if result.count + result.error == 0:
        return ("Successful" if terminating else "Pending"), ""
    phase: AnalysisPhase | None = None
    why = ""
    if result.failed > metric.failure_limit:
        phase, why = "Failed", f"failed ({result.failed}) > failureLimit ({metric.failure_limit})"
    if result.inconclusive > metric.inconclusive_limit:
        phase, why = (
            "Inconclusive",
            f"inconclusive ({result.inconclusive}) > inconclusiveLimit ({metric.inconclusive_limit})",
        )
    if result.consecutive_error > metric.consecutive_error_limit:
        phase = "Error"
        why = (
            f"consecutiveErrors ({result.consecutive_error}) > consecutiveErrorLimit ({metric.consecutive_error_limit})"
        )
    if phase is not None:
        return phase, why
    if result.count >= metric.count or terminating:
        return "Successful", ""
    return "Running", ""


def run_phase(
    metrics: Sequence[tuple[AnalysisMetric, MetricResult | None]], *, terminating: bool = False
) -> tuple[AnalysisPhase, str]:
    """An analysis run's phase from its metrics (Argo's assessRunStatus, without dry-run metrics).

    The run terminates as soon as one metric is Failed, Error or Inconclusive: metrics still
    measuring then count as Successful and the run takes the worst phase.
    """
    terminating = terminating or any(
        r is not None and r.phase in ("Failed", "Error", "Inconclusive") for _, r in metrics
    )
    worst: AnalysisPhase | None = None
    message = ""
    complete = True
    for metric, result in metrics:
        if result is None:
            if terminating:
                continue  # never measured: counts as Successful when terminating
            complete = False
            continue
        phase, why = metric_phase(metric, result, terminating=terminating)
        if phase not in _COMPLETED:
            complete = False
            continue
        if worst is None or _ORDER.index(phase) > _ORDER.index(worst):
            worst = phase
            # a metric completed by a limit carries the limit and its last measurement in its message
            detail = why or (result.message if result.phase in _COMPLETED else "")
            message = "" if phase == "Successful" else f'metric "{metric.name}" assessed {phase}'
            if message and detail:
                message += f": {detail}"
    if terminating:
        return worst or "Successful", message
    if not complete or worst is None:
        return "Running", ""
    return worst, message
