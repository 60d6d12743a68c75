"""The canary agent against a real nats-server, on a fake clock, with an in-memory traffic router:
steps recorded before and after they are applied, analysis on the mesh's WorkloadStats, the
canary Placement and its decision, control requests, events, metrics, and a restart mid-way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.helpers import daemon_config, wait_for
from tests.test_canary_model import STEPS, template
from tmcd.bus import Bus, KvStore
from tmcd.canary.agent import CanaryAgent
from tmcd.canary.traffic import AppliedWeights, RouteRef
from tmcd.config import NatsConfig
from tmcd.contracts import subjects
from tmcd.contracts.codec import decode_as
from tmcd.contracts.messages import (
    CanaryControl,
    CanaryEvent,
    ControlReply,
    LatencyHistogram,
    RollbackEvent,
    WorkloadStats,
)
from tmcd.resources.canary import (
    AnalysisTemplate,
    CanaryRollout,
    CanaryRolloutSpec,
    TrafficRouting,
    WorkloadRef,
)
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.placement import LabelSelector, Placement
from tmcd.resources.synctarget import SyncTarget, SyncTargetStatus
from tmcd.rollback.agent import RollbackAgent
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics

T0 = 1_800_000_000.0


class Router:
    """Applies at once (unless down) and remembers every call."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[str, ...], int]] = []
        self.reports: dict[tuple[str, str], AppliedWeights] = {}
        self.up = True

    async def set_weights(self, ref: RouteRef, canary_weight: int, clusters: Sequence[str], generation: int) -> None:
        self.calls.append((canary_weight, tuple(clusters), generation))
        if self.up:
            self.reports[(ref.namespace, ref.route)] = AppliedWeights(generation, {c: canary_weight for c in clusters})

    async def applied(self, ref: RouteRef) -> AppliedWeights | None:
        return self.reports.get((ref.namespace, ref.route))

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Stack:
    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.cfg = daemon_config(url, tmp)
        self.clock = Clock()
        self.router = Router()
        self.bus = Bus(NatsConfig(), SelfMetrics(), url=url)
        self.agent: CanaryAgent | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.metrics = SelfMetrics()

    async def start(self) -> None:
        await self.bus.connect(retry=False)
        await self.bus.provision(self.cfg)
        self.canaries: KvStore[CanaryRollout] = await self.bus.kv("canaries", CanaryRollout)
        self.templates: KvStore[AnalysisTemplate] = await self.bus.kv("analysistemplates", AnalysisTemplate)
        self.clusters: KvStore[SyncTarget] = await self.bus.kv("clusters", SyncTarget)
        self.placements: KvStore[Placement] = await self.bus.kv("placements", Placement)
        for i in range(6):
            labels = {"env": "prod", "region": f"r{i % 2}", "zone": f"z{i % 3}"}
            st = SyncTargetStatus(health="Healthy", connected=True)
            await self.clusters.put(f"c{i}", SyncTarget(metadata=ObjectMeta(name=f"c{i}", labels=labels), status=st))
        await self.templates.put("shop.err", template(interval=10.0))

    async def start_agent(self) -> CanaryAgent:
        """The canary agent and the rollback engine, as one tmcd runs them."""
        self.metrics = SelfMetrics()
        return await self.run_agents(CanaryAgent(router=self.router), RollbackAgent(router=self.router))

    async def run_agents(self, agent: CanaryAgent, rollback: RollbackAgent) -> CanaryAgent:
        """Run ``agent`` and ``rollback`` (on this stack's bus, config, metrics and clock) until stopped."""
        self.agent, self.rollback = agent, rollback
        self._stop = asyncio.Event()
        ctx = AgentContext(bus=self.bus, config=self.cfg, metrics=self.metrics, stop=self._stop, clock=self.clock)
        ctx2 = AgentContext(bus=self.bus, config=self.cfg, metrics=self.metrics, stop=self._stop, clock=self.clock)
        self._task = asyncio.create_task(self.agent.run(ctx))
        self._task2 = asyncio.create_task(self.rollback.run(ctx2))
        await wait_for(lambda: ctx.started.is_set() and ctx2.started.is_set(), what="agents started")
        return self.agent

    async def stop_agent(self) -> None:
        assert self._stop is not None and self._task is not None
        self._stop.set()
        await self._task
        await self._task2

    async def rollout(self, name: str, steps: Any = STEPS, **spec: Any) -> None:
        s = CanaryRolloutSpec(
            workload_ref=WorkloadRef(name=name),
            stable_version="v1",
            canary_version="v2",
            cluster_selector=LabelSelector(match_labels={"env": "prod"}),
            traffic_routing=TrafficRouting(route=name),
            steps=steps,
            **spec,
        )
        r = CanaryRollout(metadata=ObjectMeta(name=name, namespace="shop", generation=1, uid=name), spec=s)
        await self.canaries.put(f"shop.{name}", r)

    async def get(self, name: str) -> CanaryRollout:
        e = await self.canaries.get(f"shop.{name}")
        assert e is not None
        return e.value

    async def phase_is(self, name: str, *phases: str, timeout: float = 10.0) -> CanaryRollout:
        async def check() -> CanaryRollout | None:
            r = await self.get(name)
            return r if r.status.phase in phases else None

        got = await wait_for(check, what=f"{name} in {phases}", timeout=timeout)
        assert got is not None
        return got

    async def window(self, name: str, canary_error_ratio: float = 0.0, requests: int = 1000) -> None:
        """One window of stats for every canary cluster, then the clock moves on by it."""
        r = await self.get(name)
        for c in r.status.canary_clusters:
            for track, ratio in (("canary", canary_error_ratio), ("stable", 0.001)):
                stats = WorkloadStats(
                    cluster=c,
                    namespace="shop",
                    workload=name,
                    track=track,  # type: ignore[arg-type]
                    timestamp=self.clock.now,
                    window_seconds=5.0,
                    requests=requests,
                    errors=round(requests * ratio),
                    latency=LatencyHistogram(bounds=[0.01, 0.1], counts=[requests // 2, requests]),
                )
                await self.bus.js_publish(subjects.workload_stats(c, "shop", name, track), stats)
        self.clock.now += 5.0
        assert self.agent is not None
        await asyncio.sleep(0.05)  # let the consumer deliver (bounded by the wait_for callers)
        self.agent.wake()

    async def events(self, name: str) -> list[CanaryEvent]:
        js = self.bus.nc.jetstream()
        sub = await js.subscribe(subjects.canary_event("shop", name), ordered_consumer=True)
        out: list[CanaryEvent] = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.3)
                except TimeoutError:
                    return out
                out.append(decode_as(CanaryEvent, msg.data))
        finally:
            await sub.unsubscribe()

    async def rollback_events(self, name: str) -> list[RollbackEvent]:
        js = self.bus.nc.jetstream()
        sub = await js.subscribe(subjects.rollback_event("shop", name), ordered_consumer=True)
        out: list[RollbackEvent] = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.3)
                except TimeoutError:
                    return out
                out.append(decode_as(RollbackEvent, msg.data))
        finally:
            await sub.unsubscribe()

    async def control(self, name: str, action: str, full: bool = False) -> ControlReply:
        req = CanaryControl(namespace="shop", name=name, action=action, timestamp=self.clock.now, full=full)  # type: ignore[arg-type]
        return await self.bus.request(subjects.ctl_canary("shop", name, action), req, ControlReply)


@contextlib.asynccontextmanager
async def open_stack(url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """A provisioned stack whose agents are stopped and connection closed at the end."""
    s = Stack(url, tmp_path)
    await s.start()
    try:
        yield s
    finally:
        if s._task is not None and not s._task.done():
            await s.stop_agent()
        await s.bus.close()


@pytest.fixture
async def stack(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(nats_server.url, tmp_path) as s:
        yield s


async def drive(s: Stack, name: str, until: tuple[str, ...], ratio: float = 0.0, windows: int = 80) -> CanaryRollout:
    for _ in range(windows):
        r = await s.get(name)
        if r.status.phase in until:
            return r
        await s.window(name, ratio)
    return await s.phase_is(name, *until, timeout=2.0)


async def test_a_healthy_rollout_runs_every_step_and_succeeds(stack: Stack) -> None:
    await stack.start_agent()
    await stack.rollout("checkout")
    r = await stack.phase_is("checkout", "Progressing")
    await wait_for(lambda: _at_weight(stack, "checkout", 20), what="weight 20")
    # the router's report is read at the next reconcile: appliedWeight follows the action's Applied
    r = await wait_for(lambda: _applied(stack, "checkout", 20), what="weight 20 reported applied")
    assert len(r.status.canary_clusters) == 2
    child = await stack.placements.get("checkout-canary")
    assert child is not None and child.value.metadata.owner_references[0].kind == "CanaryRollout"
    assert [c.cluster for c in child.value.status.selected_clusters] == r.status.canary_clusters
    r = await drive(stack, "checkout", ("Succeeded",))
    assert r.status.stable_version == "v2" and r.status.current_weight == 0
    assert [c[0] for c in stack.router.calls] == [0, 20, 50, 100, 0]
    events = await stack.events("checkout")
    applied = [e for e in events if e.type == "step" and e.message.split(": ", 1)[-1].startswith("applied")]
    gens = [e.evidence["generation"] for e in applied]
    assert len(gens) == len(set(gens)) == 5
    assert any(e.type == "analysis" and e.evidence.get("phase") == "Successful" for e in events)
    text = stack.metrics.registry.get_sample_value
    assert text("tmc_canary_phase", {"namespace": "shop", "name": "checkout", "phase": "Succeeded"}) == 1
    assert (
        text(
            "tmc_canary_analysis_total",
            {"namespace": "shop", "name": "checkout", "metric": "errors", "result": "Successful"},
        )
        or 0
    ) >= 2


async def _at_weight(s: Stack, name: str, weight: int) -> CanaryRollout | None:
    r = await s.get(name)
    ok = r.status.current_weight == weight and r.status.action is not None and r.status.action.state == "Applied"
    return r if ok else None


async def _applied(s: Stack, name: str, weight: int) -> CanaryRollout | None:
    r = await s.get(name)
    return r if r.status.applied_weight == weight else None


async def test_errors_roll_back_and_traffic_returns_to_stable(stack: Stack) -> None:
    await stack.start_agent()
    await stack.rollout("cart")
    await wait_for(lambda: _at_weight(stack, "cart", 20), what="weight 20")
    r = await drive(stack, "cart", ("RolledBack",), ratio=0.05, windows=10)
    assert r.status.abort_reason == "AnalysisFailed" and stack.router.calls[-1][:2] == (0, ())
    assert await stack.placements.get("cart-canary") is None  # cleaned up
    rb = r.status.rollback
    assert rb is not None and rb.phase == "Completed" and rb.trigger == "AnalysisFailed"
    assert list(rb.stage_times) == ["Reversing", "Restoring", "CleaningUp", "Completed"]
    assert [c.canary_weight for c in rb.clusters] == [0, 0] and rb.from_revision == 2 and rb.to_revision == 1
    stages = [e.stage for e in await stack.rollback_events("cart")]
    assert stages == ["started", "traffic", "placement", "cleanup", "completed"]
    reg = stack.metrics.registry
    labels = {"namespace": "shop", "name": "cart", "reason": "AnalysisFailed"}
    assert reg.get_sample_value("tmc_canary_rollbacks_total", labels) == 1
    done = {"namespace": "shop", "name": "cart", "trigger": "AnalysisFailed", "result": "Completed"}
    assert reg.get_sample_value("tmc_rollbacks_total", done) == 1


async def test_control_requests_over_nats(stack: Stack) -> None:
    await stack.start_agent()
    await stack.rollout("pay")
    await wait_for(lambda: _at_weight(stack, "pay", 20), what="weight 20")
    reply = await stack.control("pay", "retry")
    assert not reply.ok and reply.code == 409 and "only RolledBack" in reply.message
    assert (await stack.control("pay", "pause")).ok
    await stack.phase_is("pay", "Paused")
    assert (await stack.control("pay", "resume")).ok
    reply = await stack.control("pay", "promote", full=True)
    assert reply.ok and reply.state == "Promoting"
    await stack.phase_is("pay", "Succeeded")
    assert stack.router.calls[-2][0] == 100 and len(stack.router.calls[-2][1]) == 6
    missing = await stack.control("nope", "abort")
    assert missing.code == 404


async def test_a_restart_with_an_action_recorded_but_not_applied_applies_it_once(stack: Stack) -> None:
    await stack.start_agent()
    await stack.rollout("ship")
    await wait_for(lambda: _at_weight(stack, "ship", 20), what="weight 20")
    await stack.stop_agent()
    # as if tmcd died between recording the next action and applying it
    r = await stack.get("ship")
    a = msgspec.structs.replace(
        r.status.action,
        kind="weight",
        weight=50,
        state="Applying",
        generation=r.status.action.generation + 1,
        step_index=4,
    )  # type: ignore[union-attr]
    st = msgspec.structs.replace(r.status, action=a, current_step_index=4)
    await stack.canaries.put("shop.ship", msgspec.structs.replace(r, status=st))
    calls = len(stack.router.calls)
    await stack.start_agent()
    await wait_for(lambda: _at_weight(stack, "ship", 50), what="weight 50 after the restart")

    async def next_step() -> CanaryRollout | None:
        r = await stack.get("ship")
        return r if r.status.current_step_index == 5 else None

    await wait_for(next_step, what="the step after the re-applied one")
    assert [c[0] for c in stack.router.calls[calls:]] == [50]  # applied once more, nothing else


async def test_a_step_whose_event_cannot_be_stored_stays_applying_until_it_is(stack: Stack) -> None:
    """The event log is the record of applied steps: a step is Applied only once its event is in
    TMC_EVENTS (a NATS node lost mid-step made the publish fail and the step's event vanish)."""
    await stack.start_agent()
    await stack.rollout("told")
    await wait_for(lambda: _applied(stack, "told", 20), what="weight 20 applied")
    js = stack.bus.nc.jetstream()
    info = await js.stream_info("TMC_EVENTS")
    subjects_before = list(info.config.subjects or [])
    info.config.subjects = [s for s in subjects_before if s != "tmc.canary.>"]
    await js.update_stream(info.config)  # canary events have no stream now: their publish fails
    try:
        for _ in range(60):  # the analysis passes; weight 50 is applied, but cannot be told
            if sum(1 for c in stack.router.calls if c[0] == 50) >= 2:
                break  # applied again: the first time did not count
            await stack.window("told")
        assert sum(1 for c in stack.router.calls if c[0] == 50) >= 2, stack.router.calls
        r = await stack.get("told")
        assert r.status.action is not None and r.status.action.weight == 50
        assert r.status.action.state == "Applying"
    finally:
        info.config.subjects = subjects_before
        await js.update_stream(info.config)
    stack.agent.wake()  # type: ignore[union-attr]
    await wait_for(lambda: _applied(stack, "told", 50), timeout=15, what="weight 50 applied once told")
    steps = [e for e in await stack.events("told") if e.type == "step" and "generation" in e.evidence]
    gens = [e.evidence["generation"] for e in steps]
    assert len(gens) == len(set(gens)) and [e.evidence.get("weight") for e in steps][-1:] == [50], steps
