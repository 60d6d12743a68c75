"""The canary-image test stack: Deployments on fake API servers (or a real cluster), the canary and
rollback agents setting images through the workloads factory (tests/test_kube_workloads.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.fakekube import DEPLOYMENT, FakeKube, serve, write_kubeconfig
from tests.kubetarget import current_context
from tests.test_canary_agent import Stack
from tmcd.canary.agent import CanaryAgent
from tmcd.config import KubeConfig
from tmcd.contracts import subjects
from tmcd.contracts.codec import decode_as
from tmcd.contracts.messages import CanaryControl, ControlReply
from tmcd.contracts.workloads import WorkloadsFactory
from tmcd.kube.client import Clients, NotFound
from tmcd.kube.workloads import DEPLOYMENT as DEPLOYMENT_RES
from tmcd.kube.workloads import KubeWorkloads, workloads_factory
from tmcd.resources.canary import (
    CanaryRollout,
    CanaryRolloutSpec,
    CanaryStep,
    PauseStep,
    SetClusters,
    TrafficRouting,
    WorkloadRef,
)
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.placement import LabelSelector
from tmcd.rollback.agent import RollbackAgent
from tmcd.runtime.registry import build_agents
from tmcd.runtime.selfmetrics import SelfMetrics

STABLE, CANARY, PROXY = "reg.example/web:1.0", "reg.example/web:2.0", "reg.example/proxy:1"
PATH = "/apis/apps/v1/namespaces/default/deployments/web"
REAL = os.environ.get("TMCD_TEST_KUBECONFIG", "")
CLUSTERS = [f"c{i}" for i in range(6)]


def deployment(name: str = "web", ns: str = "default", image: str = STABLE, web: bool = True) -> dict[str, Any]:
    """A Deployment whose container ``web`` (second, after a proxy) runs ``image``; no replicas."""
    containers = [{"name": "proxy", "image": PROXY}] + ([{"name": "web", "image": image}] if web else [])
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}},
        },
    }


def images(fake: FakeKube, ns: str = "default", name: str = "web") -> dict[str, str]:
    obj = fake.obj(DEPLOYMENT, ns, name)
    return {c["name"]: c["image"] for c in obj["spec"]["template"]["spec"]["containers"]}


def with_image(image: str) -> Any:
    """Someone else's write: the ``web`` container gets ``image``."""

    def change(obj: dict[str, Any]) -> dict[str, Any]:
        obj["spec"]["template"]["spec"]["containers"][1]["image"] = image
        return obj

    return change


class ImageStack(Stack):
    """test_canary_agent's stack (in-memory router, fake clock) whose agents set images through
    ``factory``; rollouts live in ``ns`` and select ``selector``."""

    ns = "shop"
    selector: dict[str, str] = {"env": "prod"}
    factory: WorkloadsFactory | None = None
    runtime = False
    """Build the agents as ``tmcd run`` does (the runtime's factories) instead of with ``router`` and ``factory``."""
    settings: KubeConfig
    observer: KubeWorkloads
    """A second adapter that reads (and changes) the Deployments as the tests see them."""
    fakes: dict[str, FakeKube]

    async def start_agent(self) -> CanaryAgent:
        agent = CanaryAgent(router=self.router, workloads_factory=self.factory)
        rollback = RollbackAgent(router=self.router, workloads_factory=self.factory)
        if self.runtime:
            self.cfg.kube = self.settings
            agents = build_agents(["canary", "rollback"], self.cfg)
            assert isinstance(agents[0], CanaryAgent) and isinstance(agents[1], RollbackAgent)
            agent, rollback = agents[0], agents[1]
        self.metrics = SelfMetrics()
        return await self.run_agents(agent, rollback)

    async def put_rollout(self, steps: list[CanaryStep], name: str = "web", router: str = "nats") -> None:
        spec = CanaryRolloutSpec(
            workload_ref=WorkloadRef(name="web", container="web", canary_image=CANARY),
            stable_version="v1",
            canary_version="v2",
            cluster_selector=LabelSelector(match_labels=self.selector),
            traffic_routing=TrafficRouting(route=name)
            if router == "nats"
            else TrafficRouting(router=router, route=name, stable_service="web-stable", canary_service="web-canary"),  # type: ignore[arg-type]
            steps=steps,
        )
        meta = ObjectMeta(name=name, namespace=self.ns, generation=1, uid=name)
        await self.canaries.put(f"{self.ns}.{name}", CanaryRollout(metadata=meta, spec=spec))

    async def get(self, name: str) -> CanaryRollout:
        e = await self.canaries.get(f"{self.ns}.{name}")
        assert e is not None
        return e.value

    async def control(self, name: str, action: str, full: bool = False) -> ControlReply:
        req = CanaryControl(namespace=self.ns, name=name, action=action, timestamp=self.clock.now, full=full)  # type: ignore[arg-type]
        return await self.bus.request(subjects.ctl_canary(self.ns, name, action), req, ControlReply)

    async def image(self, cluster: str, container: str = "web") -> str:
        return await self.observer.image(cluster, self.ns, "web", container)

    async def read(self, subject: str, cls: Any) -> list[Any]:
        sub = await self.bus.nc.jetstream().subscribe(subject, ordered_consumer=True)
        out: list[Any] = []
        try:
            while True:
                try:
                    out.append(decode_as(cls, (await sub.next_msg(timeout=0.3)).data))
                except TimeoutError:
                    return out
        finally:
            await sub.unsubscribe()


@contextlib.asynccontextmanager
async def image_stack(url: str, tmp_path: Path, where: str) -> AsyncIterator[ImageStack]:
    """Six fake API servers, one per cluster, each with the Deployment ``web`` in ``shop``; or
    (``real``) the real cluster as c0, with ``web`` in ``default`` and rollouts selecting only c0."""
    s = ImageStack(url, tmp_path)
    s.fakes = {}
    async with contextlib.AsyncExitStack() as stack:
        if where == "real":
            s.ns, s.selector = "default", {"env": "prod", "region": "r0", "zone": "z0"}
            settings = KubeConfig(kubeconfig=REAL, contexts={"c0": await _real_context()})
        else:
            fakes = await stack.enter_async_context(contextlib.asynccontextmanager(serve)(len(CLUSTERS)))
            s.fakes = dict(zip(CLUSTERS, fakes, strict=True))
            for f in fakes:
                f.put(DEPLOYMENT, deployment(ns="shop"))
            path = write_kubeconfig(tmp_path / "kubeconfig", {f"ctx-{c}": f.url for c, f in s.fakes.items()})
            settings = KubeConfig(kubeconfig=str(path), contexts={c: f"ctx-{c}" for c in CLUSTERS})
        s.settings, s.factory = settings, workloads_factory(settings)
        s.observer = KubeWorkloads(settings)
        stack.push_async_callback(s.observer.close)
        await s.start()
        stack.push_async_callback(s.bus.close)
        try:
            if where == "real":
                await s.observer.set_image("c0", "default", "web", "web", STABLE)  # a clean start
            yield s
        finally:
            if s._task is not None and not s._task.done():
                await s.stop_agent()


async def _real_context() -> str:
    """The real cluster's current context; the Deployment ``web`` in ``default`` is created once."""
    clients = Clients(KubeConfig(kubeconfig=REAL))
    try:
        kube = await clients.get("")
        try:
            await kube.get(DEPLOYMENT_RES, "default", "web")
        except NotFound:
            await kube.create(DEPLOYMENT_RES, "default", deployment())
        return kube.context or current_context(REAL)
    finally:
        await clients.close()


PAUSE = CanaryStep(pause=PauseStep())


def steps(*counts: int) -> list[CanaryStep]:
    """A setClusters step per count, each followed by a pause until promoted."""
    out: list[CanaryStep] = []
    for n in counts:
        out += [CanaryStep(set_clusters=SetClusters(count=n)), PAUSE]
    return out
