"""The canary rollout state machine: pure, fed by the rollout, its environment and a clock.

Phases: ``Pending -> Progressing <-> Paused -> Promoting -> Succeeded``, ``-> RollingBack ->
RolledBack``, and ``Degraded`` for a spec that cannot run.  :func:`reconcile` decides the next
status from the current one; a data-plane effect is never applied here but recorded as
``status.action`` in state ``Applying``: the agent writes that status (compare-and-set), applies
the action (idempotently), then writes the status of
:func:`tmcd.canary.actions.action_applied`.  A crash between the two writes leaves an Applying
action, which the agent applies again, so no step is skipped or applied twice.  Control
requests (promote, abort, pause, resume, retry) are :func:`tmcd.canary.control.control`.
See docs/canary.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tmcd.canary.analysis import Observation
from tmcd.canary.clusters import choose, wanted
from tmcd.canary.describe import conditions, problems, step_text
from tmcd.canary.handoff import handoff
from tmcd.canary.schedule import (
    RunKey,
    effective_metrics,
    next_due,
    parse_time,
    run_key,
    start_runs,
    terminate,
    update_run,
)
from tmcd.contracts.messages import CanaryEventType
from tmcd.placement.model import Decision
from tmcd.resources.canary import (
    AnalysisRunSummary,
    AnalysisTemplate,
    CanaryRollout,
    CanaryRolloutStatus,
    CanaryStep,
    StepAction,
    StepAnalysis,
)
from tmcd.resources.meta import rfc3339
from tmcd.resources.synctarget import SyncTarget

__all__ = ["ACTIVE", "Applied", "Env", "Note", "Outcome", "Run", "handoff", "reconcile"]

_MAX_TRANSITIONS = 64
"""Bound on transitions taken in one reconcile (steps that complete at once, e.g. pause 0)."""
ACTIVE = ("Progressing", "Paused", "Promoting", "RollingBack")


@dataclass(frozen=True, slots=True)
class Applied:
    """What the traffic router reports as applied: the generation and the canary percent per cluster."""

    generation: int
    canary: Mapping[str, int]


@dataclass(frozen=True)
class Env:
    """Everything :func:`reconcile` may look at besides the rollout."""

    now: float
    templates: Mapping[str, AnalysisTemplate] = field(default_factory=dict)
    pool: Sequence[SyncTarget] = ()
    """The eligible clusters (see :func:`tmcd.canary.clusters.eligible_pool`)."""
    pool_error: str = ""
    router_error: str = ""
    """Why the rollout's traffic router cannot be used; empty when it can."""
    workload_error: str = ""
    """Why the rollout's canary image cannot be set (spec.workloadRef.canaryImage); empty when it can."""
    applied: Applied | None = None
    observations: Mapping[RunKey, Mapping[str, Observation]] = field(default_factory=dict)
    next_generation: int = 1
    """The traffic generation a new action gets (the agent keeps it increasing)."""


@dataclass(frozen=True, slots=True)
class Note:
    """An event to publish as a CanaryEvent."""

    type: CanaryEventType
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """The status after a reconcile, the events to publish and when to look again."""

    status: CanaryRolloutStatus
    notes: list[Note] = field(default_factory=list)
    wake_at: float | None = None
    placement: Decision | None = None
    """The canary Placement decision, when the new action changes the canary clusters."""

    def wake(self, at: float | None) -> None:
        """Look again no later than ``at``."""
        if at is not None and (self.wake_at is None or at < self.wake_at):
            self.wake_at = at


class Run:
    """One reconcile in progress: the status being built, its notes, and the environment."""

    def __init__(self, r: CanaryRollout, env: Env) -> None:
        self.r = r
        self.env = env
        self.now = env.now
        self.st = r.status
        self.out = Outcome(status=r.status)

    # --- helpers ---------------------------------------------------------------------------------

    def set(self, **changes: Any) -> None:
        self.st = msgspec.structs.replace(self.st, **changes)

    def note(self, type_: CanaryEventType, message: str, **evidence: Any) -> None:
        self.out.notes.append(Note(type_, message, evidence))

    def phase(self, phase: str, message: str, **changes: Any) -> None:
        before = self.st.phase
        self.set(phase=phase, message=message, **changes)
        if before != phase:
            self.note("phase", f"{before} -> {phase}: {message}", **{"from": before, "to": phase})

    def steps_text(self) -> str:
        i, n = self.st.current_step_index, len(self.r.spec.steps)
        if i >= n:
            return f"all {n} steps done"
        return f"step {i + 1}/{n}: {step_text(self.r.spec.steps[i])}"

    def record(self, kind: str, *, weight: int, clusters: list[str], reason: str = "") -> None:
        """Record an action to apply (the agent applies it after writing this status)."""
        gen = max(self.env.next_generation, (self.st.action.generation + 1) if self.st.action else 1)
        action = StepAction(
            kind=kind,  # type: ignore[arg-type]
            step_index=self.st.current_step_index if kind in ("clusters", "weight") else -1,
            weight=weight,
            clusters=clusters,
            generation=gen,
            state="Applying",
            reason=reason,
        )
        self.set(action=action)

    def action_done(self, kind: str, step_index: int | None = None) -> bool:
        a = self.st.action
        return (
            a is not None
            and a.kind == kind
            and a.state == "Applied"
            and (step_index is None or a.step_index == step_index)
        )

    def router_caught_up(self) -> bool:
        """The router reports the last action's generation (or a newer one) as applied."""
        a, applied = self.st.action, self.env.applied
        return a is None or (applied is not None and applied.generation >= a.generation)

    def advance(self, why: str = "") -> None:
        i = self.st.current_step_index + 1
        now = rfc3339(self.now)
        self.set(current_step_index=i, step_start_time=now, progress_time=now, pause_start_time="", pause_reason="")
        self.set(message=self.steps_text())
        self.note("step", f"{self.steps_text()}{f' ({why})' if why else ''}", stepIndex=i)

    def templates_of(self, run: AnalysisRunSummary) -> list[Any]:
        t = self.env.templates.get(run.template)
        if t is None:
            return []
        step: StepAnalysis | None = None
        if run.step_index is not None and run.step_index < len(self.r.spec.steps):
            step = self.r.spec.steps[run.step_index].analysis
        return effective_metrics(t, step) if run.step_index is not None else effective_metrics(t, None)

    def terminate_runs(self, keep: int | None = None) -> None:
        """End every running analysis run (``keep``: a step index whose runs stay, -1 background)."""
        runs = []
        for run in self.st.analysis_runs:
            idx = -1 if run.step_index is None else run.step_index
            runs.append(run if idx == keep else terminate(run, self.templates_of(run), self.now))
        self.set(analysis_runs=runs)

    # --- analysis ---------------------------------------------------------------------------------

    def measure(self, run: AnalysisRunSummary) -> AnalysisRunSummary:
        metrics = self.templates_of(run)
        obs = self.env.observations.get(run_key(run), {})
        after, taken = update_run(run, metrics, obs, self.now)
        for a in taken:
            m = a.measurement
            self.note(
                "analysis",
                f"{run.template}/{a.result.name}: {m.phase}{' (early)' if m.early else ''}: {m.message}",
                template=run.template,
                metric=a.result.name,
                phase=m.phase,
                value=m.value,
                early=m.early,
                stepIndex=-1 if run.step_index is None else run.step_index,
                **{"measurement": m.evidence},
            )
        if taken:
            self.set(progress_time=rfc3339(self.now))
        self.out.wake(next_due(after, metrics))
        return after

    def analyse(self, step_index: int | None) -> str:
        """Measure the runs of a step (None: background); their combined phase."""
        since = parse_time(self.st.step_start_time) or self.now
        runs: list[AnalysisRunSummary] = []
        phases: list[str] = []
        for run in self.st.analysis_runs:
            if run.step_index == step_index and (step_index is None or (parse_time(run.start_time) or 0) >= since):
                run = self.measure(run)
                phases.append(run.phase)
            runs.append(run)
        self.set(analysis_runs=runs)
        for worst in ("Failed", "Error", "Inconclusive", "Running", "Pending"):
            if worst in phases:
                return worst
        return "Successful" if phases else "None"

    def verdict(self, phase: str, what: str) -> bool:
        """Act on a failed or inconclusive analysis; True when it stopped progress."""
        runs = [r for r in self.st.analysis_runs if r.phase == phase]
        detail = runs[-1].message if runs else ""
        if phase in ("Failed", "Error"):
            self.abort("AnalysisFailed", f"{what} {phase}: {detail}", runs=[r.template for r in runs])
            return True
        if phase == "Inconclusive":
            self.note("decision", f"pause: {what} Inconclusive: {detail}", decision="pause")
            self.phase(
                "Paused",
                f"{what} Inconclusive: {detail}; resume to measure again, promote or abort",
                pause_reason="InconclusiveAnalysis",
                pause_start_time=rfc3339(self.now),
            )
            return True
        return False

    def background(self) -> bool:
        """Background analysis from startStep; True when it stopped progress."""
        bg = self.r.spec.analysis
        if bg is None or self.st.current_step_index < bg.start_step:
            return False
        if not any(r.step_index is None for r in self.st.analysis_runs):
            self.set(analysis_runs=[*self.st.analysis_runs, *start_runs(bg.templates, None, self.now)])
            self.note("analysis", f"background analysis started: {', '.join(bg.templates)}")
        return self.verdict(self.analyse(None), "background analysis")

    # --- phases -------------------------------------------------------------------------------------

    def abort(self, reason: str, message: str, **evidence: Any) -> None:
        """Hand the rollout to the rollback engine: RollingBack with a Pending rollback record."""
        self.terminate_runs()
        self.note("decision", f"roll back: {message}", decision="rollback", reason=reason, **evidence)
        before = self.st.phase
        self.st = handoff(self.st, self.now, trigger=reason, reason=message)
        self.note("phase", f"{before} -> RollingBack: {message}", **{"from": before, "to": "RollingBack"})

    def start(self) -> bool:
        st = self.st
        stable_rev = st.stable_revision or 1
        now = rfc3339(self.now)
        self.set(
            stable_version=st.stable_version or self.r.spec.stable_version,
            canary_version=self.r.spec.canary_version,
            stable_revision=stable_rev,
            canary_revision=max(st.canary_revision, stable_rev) + 1,
            current_step_index=0,
            current_weight=0,
            start_time=now,
            step_start_time=now,
            progress_time=now,
            pause_start_time="",
            pause_reason="",
            abort_reason="",
            analysis_runs=[],
        )
        self.phase("Progressing", self.steps_text())
        return True

    def progressing(self) -> bool:
        spec, st = self.r.spec, self.st
        progress = parse_time(st.progress_time) or self.now
        deadline = progress + spec.progress_deadline_seconds
        if self.now >= deadline:
            self.abort(
                "ProgressDeadlineExceeded",
                f"no progress for {spec.progress_deadline_seconds:g}s at {self.steps_text()}",
                deadline=spec.progress_deadline_seconds,
            )
            return True
        if self.background():
            return True
        i = self.st.current_step_index
        if i >= len(spec.steps):
            self.note("decision", "promote: every step passed", decision="promote")
            self.phase("Promoting", f"all {len(spec.steps)} steps done: promoting to every eligible cluster")
            return True
        step = spec.steps[i]
        moved = self.step(i, step)
        if not moved:
            self.out.wake((parse_time(self.st.progress_time) or self.now) + spec.progress_deadline_seconds)
        return moved

    def step(self, i: int, step: CanaryStep) -> bool:
        if step.set_clusters is not None:
            if self.action_done("clusters", i):
                if self.st.current_weight and not self.router_caught_up():
                    return False
                self.advance()
                return True
            count = wanted(step.set_clusters, len(self.env.pool))
            return self.choose_clusters(count, self.st.current_weight, "clusters")
        if step.set_weight is not None:
            if self.action_done("weight", i):
                if not self.router_caught_up():
                    self.set(message=f"{self.steps_text()}: waiting for the router to apply it")
                    return False
                self.advance()
                return True
            if not self.st.canary_clusters:
                return self.choose_clusters(None, step.set_weight, "weight")
            self.record("weight", weight=step.set_weight, clusters=list(self.st.canary_clusters))
            return True
        if step.pause is not None:
            self.phase("Paused", self.steps_text(), pause_reason="PauseStep", pause_start_time=rfc3339(self.now))
            return True
        if step.analysis is not None:
            since = parse_time(self.st.step_start_time) or self.now
            mine = [r for r in self.st.analysis_runs if r.step_index == i and (parse_time(r.start_time) or 0) >= since]
            if not mine:
                runs = start_runs(step.analysis.templates, i, self.now)
                self.set(analysis_runs=[*self.st.analysis_runs, *runs])
                self.note("analysis", f"{self.steps_text()}: started", stepIndex=i)
            phase = self.analyse(i)
            if self.verdict(phase, f"{self.steps_text()}:"):
                return True
            if phase == "Successful":
                self.advance("analysis Successful")
                return True
            return False
        self.advance("no action")
        return True

    def choose_clusters(self, count: int | None, weight: int, kind: str) -> bool:
        decision = choose(self.r, self.env.pool, count, self.st.canary_clusters, self.now)
        if not decision.selected:
            self.set(message=f"{self.steps_text()}: no cluster can run the canary ({decision.message})")
            self.out.wake(self.now + 5.0)
            return False
        self.out.placement = decision
        self.record(kind, weight=weight, clusters=list(decision.selected))
        return True

    def paused(self) -> bool:
        if self.background():
            return True
        if self.st.pause_reason != "PauseStep":
            return False
        i = self.st.current_step_index
        pause = self.r.spec.steps[i].pause if i < len(self.r.spec.steps) else None
        if pause is None or pause.duration is None:
            return False
        end = (parse_time(self.st.pause_start_time) or self.now) + pause.duration
        if self.now >= end:
            self.set(phase="Progressing")
            self.note("phase", "Paused -> Progressing: pause ended", **{"from": "Paused", "to": "Progressing"})
            self.advance("pause ended")
            return True
        self.out.wake(end)
        return False

    def promoting(self) -> bool:
        if self.action_done("finalize"):
            self.terminate_runs()
            self.phase(
                "Succeeded",
                f"{self.st.canary_version} is stable on every eligible cluster",
                stable_version=self.st.canary_version,
                stable_revision=self.st.canary_revision,
                current_weight=0,
                canary_clusters=[],
            )
            return True
        if self.action_done("promote"):
            if not self.router_caught_up():
                return False
            self.record("finalize", weight=0, clusters=[], reason="the canary version becomes stable")
            return True
        return self.choose_clusters(None, 100, "promote")

    def rolling_back(self) -> bool:
        return False  # the rollback engine (tmcd/rollback) drives it from here

    def degraded(self) -> bool:
        if (self.st.current_weight or self.st.canary_clusters) and not self.action_done("stable"):
            self.record("stable", weight=0, clusters=[], reason="the spec cannot run")
            return True
        return False

    def spec_changed(self) -> None:
        r, st = self.r, self.st
        self.set(observed_generation=r.metadata.generation)
        issues = problems(r, self.env)
        if issues:
            self.terminate_runs()
            self.phase("Degraded", "; ".join(issues))
            return
        if st.phase == "Degraded":
            self.phase("Pending", "spec fixed")
            return
        if st.canary_version and r.spec.canary_version != st.canary_version and st.phase != "Pending":
            old = st.canary_version
            if st.phase == "Succeeded":
                self.set(stable_version=st.canary_version)
            self.terminate_runs()
            had_traffic = bool(st.current_weight or st.canary_clusters)
            self.start()
            self.note("decision", f"canaryVersion {old} -> {r.spec.canary_version}: restart from step 1")
            if had_traffic:
                self.record("reset", weight=0, clusters=[], reason="canaryVersion changed")

    def run(self) -> Outcome:
        st = self.st
        if st.action is not None and st.action.state == "Applying":
            return self.out  # the agent applies it first
        self.applied_weight()
        if self.r.metadata.generation != st.observed_generation:
            self.spec_changed()
        handlers = {
            "Progressing": self.progressing,
            "Paused": self.paused,
            "Promoting": self.promoting,
            "RollingBack": self.rolling_back,
            "Degraded": self.degraded,
        }
        for _ in range(_MAX_TRANSITIONS):
            if self.st.action is not None and self.st.action.state == "Applying":
                break
            if self.st.phase == "Pending":
                issues = problems(self.r, self.env)
                if issues:
                    self.phase("Degraded", "; ".join(issues))
                    break
                self.start()
                continue
            handler = handlers.get(self.st.phase)
            if handler is None or not handler():
                break
        self.set(conditions=conditions(self.st, self.now))
        self.out.status = self.st
        return self.out

    def applied_weight(self) -> None:
        applied, clusters = self.env.applied, self.st.canary_clusters
        if applied is None:
            return
        weight = min((applied.canary.get(c, 0) for c in clusters), default=0)
        if weight != self.st.applied_weight:
            self.set(applied_weight=weight)


def reconcile(r: CanaryRollout, env: Env) -> Outcome:
    """The next status of a rollout, the events to publish and when to look again (pure)."""
    return Run(r, env).run()
