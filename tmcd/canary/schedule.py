"""When an analysis run measures, and what it has decided: pure functions of (run, templates, now).

A step analysis measures each metric every ``interval`` seconds, ``count`` times; the step's
``interval``/``intervals``, when set, win over every metric's own (documented in
docs/canary.md).  Background analysis (``spec.analysis``) measures every metric at its own
interval until the rollout ends: ``count`` does not end it, the limits do.  The first
measurement is taken one interval after the run starts (never on an empty window), and after
an Error the next one is due :data:`ERROR_RETRY_SECONDS` later, as Argo Rollouts retries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from tmcd.canary.analysis import ERROR_RETRY_SECONDS, Assessment, Observation, measure, peek, run_phase
from tmcd.resources.canary import (
    AnalysisMetric,
    AnalysisPhase,
    AnalysisRunSummary,
    AnalysisTemplate,
    MetricResult,
    StepAnalysis,
)
from tmcd.resources.meta import rfc3339

__all__ = [
    "BACKGROUND",
    "RunKey",
    "due_at",
    "effective_metrics",
    "parse_time",
    "run_key",
    "start_runs",
    "update_run",
]

BACKGROUND = -1
"""The step index a background analysis run is keyed by."""
_ENDLESS = 2**31 - 1


@dataclass(frozen=True, slots=True)
class RunKey:
    """Identifies one analysis run of a rollout: template, step (-1 background) and start time."""

    template: str
    step_index: int
    start_time: str


def run_key(run: AnalysisRunSummary) -> RunKey:
    """The key of a run as stored in status."""
    return RunKey(run.template, BACKGROUND if run.step_index is None else run.step_index, run.start_time)


def parse_time(text: str) -> float | None:
    """RFC 3339 (as :func:`rfc3339` writes it) to Unix seconds; None for an empty or bad value."""
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def effective_metrics(template: AnalysisTemplate, step: StepAnalysis | None) -> list[AnalysisMetric]:
    """The template's metrics with the step's overrides; background runs (step None) never end by count."""
    out: list[AnalysisMetric] = []
    for m in template.spec.metrics:
        if step is None:
            out.append(msgspec.structs.replace(m, count=_ENDLESS))
            continue
        changes: dict[str, object] = {}
        if step.intervals is not None:
            changes["count"] = step.intervals
        if step.interval is not None:
            changes["interval"] = step.interval
        out.append(msgspec.structs.replace(m, **changes) if changes else m)
    return out


def start_runs(templates: Sequence[str], step_index: int | None, now: float) -> list[AnalysisRunSummary]:
    """New Running runs, one per template, started now."""
    return [
        AnalysisRunSummary(template=t, phase="Running", step_index=step_index, start_time=rfc3339(now))
        for t in templates
    ]


def due_at(metric: AnalysisMetric, result: MetricResult | None, started: float) -> float | None:
    """When the metric's next scheduled measurement is due; None once it has completed."""
    if result is None or not result.measured_at:
        return started + metric.interval
    if result.phase not in ("Running", "Pending"):
        return None
    last = parse_time(result.measured_at) or started
    return last + (ERROR_RETRY_SECONDS if result.consecutive_error > 0 else metric.interval)


def update_run(
    run: AnalysisRunSummary,
    metrics: Sequence[AnalysisMetric],
    observations: Mapping[str, Observation],
    now: float,
) -> tuple[AnalysisRunSummary, list[Assessment]]:
    """Take every due measurement (and early failures) of a Running run; the run after them.

    ``observations`` holds, per metric name, what the agent fetched for it (pooled windows for
    the nats and syncer providers, a value or an error for prometheus).  A metric with no
    observation is not measured this time.
    """
    if run.phase not in ("Running", "Pending"):
        return run, []
    started = parse_time(run.start_time) or now
    results = {r.name: r for r in run.metrics}
    taken: list[Assessment] = []
    for metric in metrics:
        obs = observations.get(metric.name)
        if obs is None:
            continue
        prior = results.get(metric.name)
        due = due_at(metric, prior, started)
        if due is None:
            continue
        a: Assessment | None
        a = measure(metric, prior, obs, now) if now >= due else peek(metric, prior, obs, now)
        if a is None:
            continue
        results[metric.name] = msgspec.structs.replace(a.result, measured_at=rfc3339(now))
        taken.append(a)
    pairs = [(m, results.get(m.name)) for m in metrics]
    phase, message = run_phase(pairs)
    ordered = [results[m.name] for m in metrics if m.name in results]
    end = rfc3339(now) if phase not in ("Running", "Pending") else ""
    return msgspec.structs.replace(run, metrics=ordered, phase=phase, message=message, end_time=end), taken


def next_due(run: AnalysisRunSummary, metrics: Sequence[AnalysisMetric]) -> float | None:
    """The earliest due time of a Running run's metrics (None when nothing is scheduled)."""
    if run.phase not in ("Running", "Pending"):
        return None
    started = parse_time(run.start_time)
    if started is None:
        return None
    results = {r.name: r for r in run.metrics}
    times = [t for m in metrics if (t := due_at(m, results.get(m.name), started)) is not None]
    return min(times) if times else None


def terminate(run: AnalysisRunSummary, metrics: Sequence[AnalysisMetric], now: float) -> AnalysisRunSummary:
    """End a run early (its step was promoted or the rollout ended): metrics still measuring count as passed."""
    if run.phase not in ("Running", "Pending"):
        return run
    pairs = [(m, next((r for r in run.metrics if r.name == m.name), None)) for m in metrics]
    phase: AnalysisPhase
    phase, message = run_phase(pairs, terminating=True)
    return msgspec.structs.replace(run, phase=phase, message=message or "terminated", end_time=rfc3339(now))
