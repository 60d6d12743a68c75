"""`tmcd demo`: the daemon on an embedded NATS plus a simulated fleet, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

from tmcd.bus import Bus
from tmcd.config import Config
from tmcd.runtime.daemon import Daemon

log = logging.getLogger("tmcd.demo")

DEMO_NAMESPACE = "demo"
DEMO_ROLLOUT = "checkout"


def demo_objects() -> list[Any]:
    """The example AnalysisTemplate and CanaryRollout the demo creates (docs/canary.md, Worked example)."""
    from tmcd.resources.canary import (
        AnalysisMetric,
        AnalysisTemplate,
        AnalysisTemplateSpec,
        CanaryRollout,
        CanaryRolloutSpec,
        CanaryStep,
        Comparison,
        MetricCondition,
        MetricProvider,
        NatsProvider,
        PauseStep,
        SetClusters,
        StepAnalysis,
        TrafficRouting,
        WorkloadRef,
    )
    from tmcd.resources.meta import ObjectMeta
    from tmcd.resources.placement import LabelSelector

    errors = AnalysisMetric(
        name="error-ratio",
        interval=10.0,
        count=3,
        inconclusive_limit=2,
        provider=MetricProvider(nats=NatsProvider(metric="error_ratio")),
        condition=MetricCondition(comparison=Comparison(test="proportion", max_increase=1.0, max_difference=0.005)),
    )
    latency = AnalysisMetric(
        name="p99-vs-stable",
        interval=10.0,
        count=3,
        inconclusive_limit=2,
        provider=MetricProvider(nats=NatsProvider(metric="latency_p99")),
        condition=MetricCondition(comparison=Comparison(test="ratio", max_increase=0.2)),
    )
    template = AnalysisTemplate(
        metadata=ObjectMeta(name="checkout-health", namespace=DEMO_NAMESPACE),
        spec=AnalysisTemplateSpec(metrics=[errors, latency]),
    )
    rollout = CanaryRollout(
        metadata=ObjectMeta(name=DEMO_ROLLOUT, namespace=DEMO_NAMESPACE),
        spec=CanaryRolloutSpec(
            workload_ref=WorkloadRef(name=DEMO_ROLLOUT),
            stable_version="v1.4.0",
            canary_version="v1.5.0",
            cluster_selector=LabelSelector(),
            traffic_routing=TrafficRouting(route=DEMO_ROLLOUT),
            steps=[
                CanaryStep(set_clusters=SetClusters(count=3)),
                CanaryStep(set_weight=10),
                CanaryStep(pause=PauseStep(duration=20.0)),
                CanaryStep(analysis=StepAnalysis(templates=["checkout-health"])),
                CanaryStep(set_weight=50),
                CanaryStep(pause=PauseStep(duration=20.0)),
                CanaryStep(analysis=StepAnalysis(templates=["checkout-health"])),
            ],
        ),
    )
    return [template, rollout]


def banner(daemon: Daemon, nats_url: str, clusters: int, rate: float) -> str:
    """What the demo prints once everything is up."""
    base = daemon.http.base_url
    return "\n".join(
        [
            "",
            f"tmcd demo is running: {clusters} simulated clusters, {rate:g} sync events/s",
            f"  metrics    {base}/metrics",
            f"  readiness  {base}/readyz?verbose",
            f"  health     {base}/healthz?verbose",
            f"  NATS       {nats_url}",
            "",
            "Try:",
            f"  curl -s {base}/metrics | grep tmc_events_processed_total",
            f'  PATH="{Path(sys.executable).parent}:$PATH" kubectl tmc version --client',
            f"  kubectl tmc get canaries -n {DEMO_NAMESPACE} -w     # the example rollout, step by step",
            f"  kubectl tmc describe canary {DEMO_ROLLOUT} -n {DEMO_NAMESPACE}",
            "",
            "Press Ctrl-C to stop.",
            "",
        ]
    )


async def run_demo(cfg: Config, *, clusters: int, rate: float, seed: int) -> int:
    """Run until Ctrl-C; returns the exit code."""
    from tmcd.sim.mesh import MeshOptions
    from tmcd.sim.mesh_runner import run_mesh
    from tmcd.sim.model import SimOptions
    from tmcd.sim.runner import close_bus, run_sim

    daemon = Daemon(cfg)
    sim_task: asyncio.Task[object] | None = None
    sim_bus: Bus | None = None

    def started(d: Daemon) -> None:
        nonlocal sim_task
        assert d.bus is not None
        sim_task = asyncio.create_task(_sim(d, d.bus.url), name="demo-sim")
        print(banner(d, d.bus.display_url, clusters, rate), flush=True)

    async def _sim(d: Daemon, url: str) -> object:
        nonlocal sim_bus
        sim_bus = Bus(cfg.nats, d.metrics, url=url)
        await sim_bus.connect(retry=True, stop=d.stop_event)
        try:
            await _create_example(sim_bus)
            mesh = MeshOptions(clusters=clusters, rps=500.0, seed=seed, window=5.0)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(run_mesh(sim_bus, mesh, d.stop_event), name="demo-mesh")
                sim = tg.create_task(
                    run_sim(sim_bus, SimOptions(clusters=clusters, rate=rate, seed=seed), d.stop_event)
                )
            return sim.result()
        finally:
            await close_bus(sim_bus)

    async def stop_sim_first() -> None:
        await daemon.stop_event.wait()
        if sim_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sim_task, 5)

    async def _create_example(bus: Bus) -> None:
        """The example rollout, unless it exists (a demo restarted on the same data keeps it)."""
        from tmcd.api.store import ResourceStore
        from tmcd.resources.kinds import of

        store = ResourceStore(bus)
        for obj in demo_objects():
            try:
                await store.create(of(obj), obj, DEMO_NAMESPACE)
            except Exception as exc:  # AlreadyExists and the like: the demo goes on
                log.info("example %s not created: %s", obj.metadata.name, exc)

    waiter = asyncio.create_task(stop_sim_first())
    code = await daemon.run(on_started=started)
    await waiter
    return code
