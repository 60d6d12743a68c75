"""OpenTelemetry spans of a rollout: one per step and one per analysis run, with their real times.

A step or an analysis run can outlive the process (minutes, a restart), so each span is
emitted when it ends, with the start time recorded in status.
"""

from __future__ import annotations

from opentelemetry.trace import Tracer

from tmcd.canary.schedule import parse_time
from tmcd.resources.canary import CanaryRollout, CanaryRolloutStatus

__all__ = ["emit_spans"]


def _ns(ts: float) -> int:
    return int(ts * 1e9)


def emit_spans(tracer: Tracer, r: CanaryRollout, after: CanaryRolloutStatus, now: float) -> int:
    """Spans for the steps and analysis runs that ended between ``r.status`` and ``after``; how many."""
    before = r.status
    ns, name = r.metadata.namespace, r.metadata.name
    emitted = 0
    started = parse_time(before.step_start_time)
    if started is not None and after.current_step_index != before.current_step_index:
        i = before.current_step_index
        span = tracer.start_span(
            f"canary step {i + 1}",
            start_time=_ns(started),
            attributes={
                "tmc.namespace": ns,
                "tmc.rollout": name,
                "tmc.canary.step": i + 1,
                "tmc.canary.revision": before.canary_revision,
                "tmc.canary.phase": after.phase,
            },
        )
        span.end(end_time=_ns(now))
        emitted += 1
    open_before = {(x.template, x.step_index, x.start_time) for x in before.analysis_runs if x.phase == "Running"}
    for run in after.analysis_runs:
        key = (run.template, run.step_index, run.start_time)
        run_start = parse_time(run.start_time)
        if key not in open_before or run.phase in ("Running", "Pending") or run_start is None:
            continue
        span = tracer.start_span(
            f"canary analysis {run.template}",
            start_time=_ns(run_start),
            attributes={
                "tmc.namespace": ns,
                "tmc.rollout": name,
                "tmc.canary.template": run.template,
                "tmc.canary.step": -1 if run.step_index is None else run.step_index + 1,
                "tmc.canary.analysis.phase": run.phase,
                "tmc.canary.analysis.message": run.message,
            },
        )
        span.end(end_time=_ns(now))
        emitted += 1
    return emitted
