"""The canary state machine: pure, driven with an injected clock and in-memory data."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tmcd.canary.actions import action_applied
from tmcd.canary.control import control
from tmcd.canary.model import Applied, Env, reconcile
from tmcd.canary.samples import RunData
from tmcd.canary.schedule import run_key
from tmcd.resources.canary import (
    AnalysisMetric,
    AnalysisTemplate,
    AnalysisTemplateSpec,
    BackgroundAnalysis,
    CanaryRollout,
    CanaryRolloutSpec,
    CanaryStep,
    MetricCondition,
    MetricProvider,
    NatsProvider,
    PauseStep,
    SetClusters,
    StepAction,
    StepAnalysis,
    Threshold,
    TrafficRouting,
    WorkloadRef,
)
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.placement import LabelSelector
from tmcd.resources.synctarget import SyncTarget, SyncTargetStatus
from tmcd.rollback.model import RollbackEnv, advance, stage_applied

T0 = 1_800_000_000.0


def fleet(n: int = 6) -> list[SyncTarget]:
    out = []
    for i in range(n):
        labels = {"env": "prod", "region": f"r{i % 2}", "zone": f"z{i % 3}"}
        st = SyncTargetStatus(health="Healthy", connected=True)
        out.append(SyncTarget(metadata=ObjectMeta(name=f"c{i}", labels=labels), status=st))
    return out


def template(max_ratio: float = 0.01, count: int = 2, interval: float = 10.0) -> AnalysisTemplate:
    m = AnalysisMetric(
        name="errors",
        interval=interval,
        count=count,
        provider=MetricProvider(nats=NatsProvider(metric="error_ratio")),
        condition=MetricCondition(threshold=Threshold(max=max_ratio)),
    )
    return AnalysisTemplate(metadata=ObjectMeta(name="err", namespace="shop"), spec=AnalysisTemplateSpec(metrics=[m]))


def rollout(steps: list[CanaryStep], **spec: Any) -> CanaryRollout:
    s = CanaryRolloutSpec(
        workload_ref=WorkloadRef(name="checkout"),
        stable_version="v1",
        canary_version="v2",
        cluster_selector=LabelSelector(match_labels={"env": "prod"}),
        traffic_routing=TrafficRouting(route="checkout"),
        steps=steps,
        **spec,
    )
    return CanaryRollout(metadata=ObjectMeta(name="checkout", namespace="shop", generation=1), spec=s)


class Driver:
    """Plays the agent: reconcile, apply actions, report them applied by the router at once."""

    def __init__(self, r: CanaryRollout, templates: dict[str, AnalysisTemplate] | None = None) -> None:
        self.r = r
        self.now = T0
        self.templates = templates or {}
        self.pool = fleet()
        self.applied: Applied | None = None
        self.router_up = True
        self.data: dict[Any, RunData] = {}
        self.error_ratio = 0.0
        self.notes: list[Any] = []
        self.actions: list[Any] = []

    def feed(self, requests: int = 1000) -> None:
        """One window of traffic on every running run."""
        for run in self.r.status.analysis_runs:
            d = self.data.setdefault(run_key(run), RunData())
            for track in ("canary", "stable"):
                ratio = self.error_ratio if track == "canary" else 0.001
                d.add_window(track, "c0", self.now, 10.0, requests=requests, errors=round(requests * ratio))

    def env(self) -> Env:
        obs = {k: {"errors": d} for k, d in self.data.items()}
        return Env(
            now=self.now,
            templates=self.templates,
            pool=self.pool,
            applied=self.applied,
            observations=obs,
            next_generation=int(self.now * 1000),
        )

    def roll_back(self) -> bool:
        """Play the rollback engine for one step; False when it has nothing to do."""
        rb = self.r.status.rollback
        if self.r.status.phase != "RollingBack" or rb is None:
            return False
        if rb.phase in ("Reversing", "Restoring", "CleaningUp") and rb.stage_state == "Applying":
            if rb.phase == "Reversing":
                self.actions.append(StepAction(kind="stable", generation=rb.generation, state="Applied"))
                if self.router_up:
                    self.applied = Applied(rb.generation, {})
            st, _ = stage_applied(self.r, self.now)
        else:
            plan = advance(
                self.r, RollbackEnv(now=self.now, applied=self.applied, next_generation=int(self.now * 1000))
            )
            if plan.status == self.r.status:
                return False
            st = plan.status
        self.r = msgspec.structs.replace(self.r, status=st)
        return True

    def tick(self) -> None:
        for _ in range(40):
            if self.roll_back():
                continue
            out = reconcile(self.r, self.env())
            self.notes += out.notes
            self.r = msgspec.structs.replace(self.r, status=out.status)
            a = out.status.action
            if a is None or a.state != "Applying":
                return
            self.actions.append(a)
            st, note = action_applied(self.r, self.now)
            self.notes.append(note)
            self.r = msgspec.structs.replace(self.r, status=st)
            if self.router_up:
                self.applied = Applied(a.generation, {c: a.weight for c in a.clusters})

    def run(self, seconds: float, step: float = 10.0) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += step
            self.feed()
            self.tick()

    @property
    def phase(self) -> str:
        return self.r.status.phase


STEPS = [
    CanaryStep(set_clusters=SetClusters(count=2)),
    CanaryStep(set_weight=20),
    CanaryStep(analysis=StepAnalysis(templates=["err"])),
    CanaryStep(pause=PauseStep(duration=30.0)),
    CanaryStep(set_weight=50),
    CanaryStep(analysis=StepAnalysis(templates=["err"], intervals=1, interval=5.0)),
]


def test_a_healthy_canary_goes_through_every_step_and_succeeds() -> None:
    d = Driver(rollout(STEPS), {"err": template()})
    d.tick()
    st = d.r.status
    assert st.phase == "Progressing" and st.current_step_index == 2 and st.current_weight == 20
    assert len(st.canary_clusters) == 2 and {"r0", "r1"} == {f"r{int(c[1:]) % 2}" for c in st.canary_clusters}
    assert st.applied_weight is None or st.applied_weight == 20
    d.run(200)
    st = d.r.status
    assert st.phase == "Succeeded", st.message
    assert st.stable_version == "v2" and st.stable_revision == st.canary_revision == 2
    assert [a.kind for a in d.actions] == ["clusters", "weight", "weight", "promote", "finalize"]
    assert [a.weight for a in d.actions] == [0, 20, 50, 100, 0]
    gens = [a.generation for a in d.actions]
    assert gens == sorted(set(gens))  # every action has a newer traffic generation
    assert all(r.phase == "Successful" for r in st.analysis_runs)
    assert st.conditions[0].type == "Progressing" and st.conditions[0].status == "False"


def test_an_erroring_canary_is_rolled_back_and_traffic_returns_to_stable() -> None:
    d = Driver(rollout(STEPS), {"err": template()})
    d.error_ratio = 0.05
    d.tick()
    d.run(40)
    st = d.r.status
    assert st.phase == "RolledBack" and st.abort_reason == "AnalysisFailed"
    assert st.current_weight == 0 and st.canary_clusters == []
    assert d.actions[-1].kind == "stable" and d.applied is not None and not any(d.applied.canary.values())
    decisions = [n for n in d.notes if n.type == "decision"]
    assert decisions and "roll back" in decisions[-1].message


def test_a_step_waits_for_the_router_and_the_progress_deadline_rolls_back() -> None:
    d = Driver(rollout(STEPS, progress_deadline_seconds=60.0), {"err": template()})
    d.router_up = False
    d.tick()
    assert d.r.status.current_step_index == 1 and "waiting for the router" in d.r.status.message
    d.run(50)
    assert d.phase == "Progressing"
    d.run(20)
    assert d.phase == "RollingBack" and d.r.status.abort_reason == "ProgressDeadlineExceeded"
    rb = d.r.status.rollback
    assert rb is not None and rb.phase == "Reversing" and rb.stage_state == "Applied"  # sent, not acknowledged
    d.router_up = True
    d.applied = Applied(rb.generation, {})
    d.tick()
    assert d.phase == "RolledBack" and d.r.status.rollback is not None
    assert d.r.status.rollback.phase == "Completed" and d.r.status.rollback.trigger == "ProgressDeadlineExceeded"


def test_no_data_is_inconclusive_and_pauses_then_resume_measures_again() -> None:
    d = Driver(rollout(STEPS), {"err": template()})
    d.tick()
    d.now += 10
    d.data = {k: RunData() for k in (run_key(r) for r in d.r.status.analysis_runs)}
    d.tick()
    st = d.r.status
    assert st.phase == "Paused" and st.pause_reason == "InconclusiveAnalysis", st.message
    st2, code, _ = control(d.r, "resume", d.now)
    assert code == 200 and st2.phase == "Progressing"
    d.r = msgspec.structs.replace(d.r, status=st2)
    d.run(200)
    assert d.phase == "Succeeded"


def test_controls_and_their_refusals() -> None:
    d = Driver(rollout([CanaryStep(set_weight=10), CanaryStep(pause=PauseStep())]))
    d.tick()
    assert d.phase == "Paused" and d.r.status.pause_reason == "PauseStep"
    d.run(100)
    assert d.phase == "Paused"  # an indefinite pause waits for promote
    _, code, msg = control(d.r, "retry", d.now)
    assert code == 409 and "only RolledBack" in msg
    st, code, _ = control(d.r, "promote", d.now)
    d.r = msgspec.structs.replace(d.r, status=st)
    d.tick()
    assert d.phase == "Succeeded"
    _, code, _ = control(d.r, "abort", d.now)
    assert code == 409


def test_abort_then_retry_and_promote_full() -> None:
    d = Driver(rollout(STEPS), {"err": template()})
    d.tick()
    st, code, _ = control(d.r, "abort", d.now)
    assert code == 200 and st.phase == "RollingBack"
    d.r = msgspec.structs.replace(d.r, status=st)
    d.tick()
    assert d.phase == "RolledBack" and d.r.status.abort_reason == "Aborted"
    st, code, _ = control(d.r, "retry", d.now)
    d.r = msgspec.structs.replace(d.r, status=st)
    d.tick()
    assert code == 200 and d.phase == "Progressing" and d.r.status.current_step_index == 2
    st, code, _ = control(d.r, "promote", d.now, full=True)
    d.r = msgspec.structs.replace(d.r, status=st)
    d.tick()
    assert d.phase == "Succeeded" and d.actions[-2].kind == "promote" and len(d.actions[-2].clusters) == 6


def test_a_new_canary_version_restarts_from_step_one() -> None:
    d = Driver(rollout(STEPS), {"err": template()})
    d.tick()
    assert d.r.status.current_weight == 20
    spec = msgspec.structs.replace(d.r.spec, canary_version="v3")
    d.r = msgspec.structs.replace(d.r, spec=spec, metadata=msgspec.structs.replace(d.r.metadata, generation=2))
    d.tick()
    st = d.r.status
    assert st.canary_version == "v3" and st.canary_revision == 3 and st.observed_generation == 2
    assert "reset" in [a.kind for a in d.actions] and st.current_step_index == 2


def test_a_spec_that_cannot_run_is_degraded_naming_the_field() -> None:
    d = Driver(rollout(STEPS))
    d.tick()
    assert d.phase == "Degraded"
    assert "spec.steps[2].analysis.templates: AnalysisTemplate shop/err not found" in d.r.status.message
    d.templates = {"err": template()}
    d.r = msgspec.structs.replace(d.r, metadata=msgspec.structs.replace(d.r.metadata, generation=2))
    d.tick()
    assert d.phase == "Progressing"


def test_an_applying_action_is_left_for_the_agent() -> None:
    d = Driver(rollout(STEPS), {"err": template()})
    out = reconcile(d.r, d.env())
    assert out.status.action is not None and out.status.action.state == "Applying"
    crashed = msgspec.structs.replace(d.r, status=out.status)
    again = reconcile(crashed, d.env())
    assert again.status == out.status and not again.notes


def test_background_analysis_failure_rolls_back() -> None:
    bg = BackgroundAnalysis(templates=["err"], start_step=1)
    d = Driver(rollout([CanaryStep(set_weight=10), CanaryStep(pause=PauseStep())], analysis=bg), {"err": template()})
    d.tick()
    assert any(r.step_index is None for r in d.r.status.analysis_runs)
    d.error_ratio = 0.2
    d.run(30)
    assert d.phase == "RolledBack"


@pytest.mark.parametrize("router", ["gateway-api", "smi"])
def test_a_router_this_process_cannot_use_degrades(router: str) -> None:
    r = rollout(STEPS)
    env = Env(
        now=T0,
        router_error=f"traffic router {router!r} needs the Kubernetes adapters, which this process was started without",
    )
    out = reconcile(r, env)
    assert out.status.phase == "Degraded" and out.status.message.startswith("spec.trafficRouting.router:")
