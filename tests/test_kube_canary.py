"""End to end: the canary agent (real nats-server, fake clock) shifts traffic with the ``gateway-api``
router, through kubernetes-asyncio, on the HTTPRoutes of six fake Kubernetes API servers; the
factory comes from the runtime as ``tmcd run`` wires it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakekube import HTTPROUTE, FakeKube, serve, write_kubeconfig
from tests.helpers import wait_for
from tests.test_canary_agent import STEPS, Stack
from tests.test_kube_routers import httproute
from tmcd.canary.agent import CanaryAgent
from tmcd.config import KubeConfig
from tmcd.kube.routers import GENERATION_ANNOTATION
from tmcd.resources.canary import CanaryRollout, CanaryRolloutSpec, TrafficRouting, WorkloadRef
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.placement import LabelSelector
from tmcd.rollback.agent import RollbackAgent
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.registry import build_agents

CLUSTERS = [f"c{i}" for i in range(6)]


class KubeStack(Stack):
    """The canary stack of test_canary_agent with the agents the runtime builds (no injected router)."""

    fakes: list[FakeKube]

    async def start_agent(self) -> CanaryAgent:
        agents = build_agents(["canary", "rollback"], self.cfg)
        assert isinstance(agents[0], CanaryAgent) and isinstance(agents[1], RollbackAgent)
        return await self.run_agents(agents[0], agents[1])

    async def gateway_rollout(self, name: str, steps: Any = STEPS) -> None:
        s = CanaryRolloutSpec(
            workload_ref=WorkloadRef(name=name),
            stable_version="v1",
            canary_version="v2",
            cluster_selector=LabelSelector(match_labels={"env": "prod"}),
            traffic_routing=TrafficRouting(
                router="gateway-api", route=name, stable_service="web-stable", canary_service="web-canary"
            ),
            steps=steps,
        )
        r = CanaryRollout(metadata=ObjectMeta(name=name, namespace="shop", generation=1, uid=name), spec=s)
        await self.canaries.put(f"shop.{name}", r)


@pytest.fixture
async def kstack(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[KubeStack]:
    async for fakes in serve(len(CLUSTERS)):
        path = write_kubeconfig(
            tmp_path / "kubeconfig", {f"ctx-{c}": f.url for c, f in zip(CLUSTERS, fakes, strict=True)}
        )
        s = KubeStack(nats_server.url, tmp_path)
        s.cfg.kube = KubeConfig(kubeconfig=str(path), contexts={c: f"ctx-{c}" for c in CLUSTERS})
        s.fakes = fakes
        for f in fakes:
            route = httproute("checkout")
            route["metadata"]["namespace"] = "shop"
            f.put(HTTPROUTE, route)
        await s.start()
        try:
            yield s
        finally:
            if s._task is not None and not s._task.done():
                await s.stop_agent()
            await s.bus.close()


def route_weights(s: KubeStack) -> dict[str, tuple[int, int, str]]:
    out = {}
    for c, f in zip(CLUSTERS, s.fakes, strict=True):
        obj = f.obj(HTTPROUTE, "shop", "checkout")
        refs = obj["spec"]["rules"][0]["backendRefs"]
        gen = (obj["metadata"].get("annotations") or {}).get(GENERATION_ANNOTATION, "")
        out[c] = (refs[0]["weight"], refs[1]["weight"], gen)
    return out


async def test_a_gateway_api_rollout_reaches_weight_20_on_its_canary_clusters(kstack: KubeStack) -> None:
    await kstack.start_agent()
    await kstack.gateway_rollout("checkout")

    async def at_20() -> CanaryRollout | None:
        r = await kstack.get("checkout")
        return r if r.status.applied_weight == 20 else None

    r = await wait_for(at_20, what="weight 20 read back from the HTTPRoutes")
    assert r is not None and r.status.phase == "Progressing" and len(r.status.canary_clusters) == 2
    weights = route_weights(kstack)
    gen = str(r.status.action.generation if r.status.action else "")
    for c in CLUSTERS:
        want = (80, 20) if c in r.status.canary_clusters else (100, 0)
        assert weights[c] == (*want, gen), c
    patches = [q for f in kstack.fakes for q in f.of("PATCH")]
    assert patches and {q.content_type for q in patches} == {"application/json-patch+json"}


async def test_a_missing_httproute_shows_in_the_status(kstack: KubeStack) -> None:
    for f in kstack.fakes:
        f.objects.clear()  # no HTTPRoute anywhere
    await kstack.start_agent()
    await kstack.gateway_rollout("checkout")

    async def stuck() -> CanaryRollout | None:
        r = await kstack.get("checkout")
        return r if r.status.message.startswith("traffic router: HTTPRoute shop/checkout on cluster") else None

    r = await wait_for(stuck, what="the router's error in the status")
    assert r is not None and "not found" in r.status.message
    assert r.status.action is not None and r.status.action.state == "Applying"  # tried again, not skipped
