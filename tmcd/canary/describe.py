"""Words and checks about a rollout's spec: a step in a few words, why a spec cannot run, conditions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tmcd.resources.canary import CanaryRollout, CanaryRolloutStatus, CanaryStep
from tmcd.resources.meta import Condition, rfc3339

if TYPE_CHECKING:
    from tmcd.canary.model import Env

__all__ = ["conditions", "problems", "step_text"]


def step_text(step: CanaryStep) -> str:
    """A step in a few words, e.g. ``setWeight 20``."""
    if step.set_clusters is not None:
        sc = step.set_clusters
        return f"setClusters {sc.count}" if sc.count is not None else f"setClusters {sc.percent}%"
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.pause is not None:
        return "pause" if step.pause.duration is None else f"pause {step.pause.duration:g}s"
    if step.analysis is not None:
        return "analysis " + ",".join(step.analysis.templates)
    return "(no action)"


def problems(r: CanaryRollout, env: Env) -> list[str]:
    """Why the rollout cannot run, each naming the field; empty when it can."""
    out: list[str] = []
    if env.router_error:
        out.append(f"spec.trafficRouting.router: {env.router_error}")
    if env.workload_error:
        out.append(f"spec.workloadRef.canaryImage: {env.workload_error}")
    if env.pool_error:
        out.append(env.pool_error)
    ns = r.metadata.namespace
    refs: list[tuple[str, list[str]]] = [
        (f"spec.steps[{i}].analysis.templates", s.analysis.templates)
        for i, s in enumerate(r.spec.steps)
        if s.analysis is not None
    ]
    if r.spec.analysis is not None:
        refs.append(("spec.analysis.templates", r.spec.analysis.templates))
    for path, names in refs:
        for name in names:
            t = env.templates.get(name)
            if t is None:
                out.append(f"{path}: AnalysisTemplate {ns}/{name} not found")
                continue
            for m in t.spec.metrics:
                if m.condition.comparison is not None and m.provider.prometheus is not None:
                    out.append(
                        f"AnalysisTemplate {ns}/{name} metric {m.name}: a comparison needs the nats provider "
                        "(both tracks), not prometheus"
                    )
    return out


def conditions(st: CanaryRolloutStatus, now: float) -> list[Condition]:
    """Progressing and Paused conditions from the phase, keeping transition times while unchanged."""
    running = st.phase in ("Pending", "Progressing", "Paused", "Promoting")
    wanted_: list[tuple[str, str, str]] = [
        ("Progressing", "True" if running else "False", st.abort_reason or st.phase),
        ("Paused", "True" if st.phase == "Paused" else "False", st.pause_reason if st.phase == "Paused" else ""),
    ]
    before = {c.type: c for c in st.conditions}
    out: list[Condition] = []
    for type_, status, reason in wanted_:
        prev = before.get(type_)
        since = prev.last_transition_time if prev is not None and prev.status == status else rfc3339(now)
        out.append(Condition(type=type_, status=status, reason=reason, message="", last_transition_time=since))
    return out
