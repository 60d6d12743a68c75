"""The mock service mesh and the NATS traffic router on a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.helpers import wait_for
from tmcd.bus import Bus, Delivery, last_per_subject
from tmcd.canary.traffic import AppliedWeights, NatsRouter, RouteRef, UnsupportedRouter, router_for
from tmcd.config import NatsConfig, load_config
from tmcd.contracts import subjects
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import TrafficApplied, TrafficWeights, WorkloadStats
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.sim.mesh import MeshOptions
from tmcd.sim.mesh_runner import MeshStats, run_mesh

REF = RouteRef("shop", "web", "web-api")


async def connected(url: str) -> Bus:
    bus = Bus(NatsConfig(name="test"), SelfMetrics(), url=url)
    await bus.connect(retry=False)
    return bus


@contextlib.asynccontextmanager
async def provisioned(url: str) -> AsyncIterator[Bus]:
    bus = await connected(url)
    try:
        await bus.provision(load_config(None, env={}))
        yield bus
    finally:
        await bus.close()


class Mesh:
    """A mesh run as a task on its own connection, stopped on exit."""

    def __init__(self, url: str, opts: MeshOptions) -> None:
        self.url, self.opts = url, opts
        self.stop = asyncio.Event()
        self.task: asyncio.Task[MeshStats] | None = None
        self.bus: Bus | None = None

    async def __aenter__(self) -> Mesh:
        self.bus = await connected(self.url)
        self.task = asyncio.create_task(run_mesh(self.bus, self.opts, self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.finish()

    async def finish(self) -> MeshStats:
        assert self.task is not None and self.bus is not None
        self.stop.set()
        try:
            return await asyncio.wait_for(self.task, 10)
        finally:
            await self.bus.close()


class Collected:
    """WorkloadStats of one workload, as a subscriber sees them."""

    def __init__(self) -> None:
        self.stats: list[WorkloadStats] = []

    async def on(self, d: Delivery[Any]) -> None:
        self.stats.append(d.msg)


def opts(**kw: Any) -> MeshOptions:
    base: dict[str, Any] = {"clusters": 4, "rps": 2000.0, "seed": 1, "window": 0.2}
    base.update(kw)
    return MeshOptions(**base)


async def test_weights_applied_are_read_back_and_split_the_stats(nats_server: EmbeddedNats) -> None:
    async with provisioned(nats_server.url) as bus:
        info = await bus.js.stream_info(subjects.STREAM_TRAFFIC)
        assert info.config.max_msgs_per_subject == 1 and info.config.subjects == ["tmc.traffic.>"]
        seen = Collected()
        sub = await bus.subscribe("tmc.workload.*.shop.web-api.*", seen.on, channel=subjects.WORKLOAD_STATS)
        router = NatsRouter(bus)
        async with Mesh(nats_server.url, opts()):
            assert await router.applied(REF) is None
            await router.set_weights(REF, 20, ["sim-002", "sim-001"], generation=1)
            applied = await wait_for(lambda: router.applied(REF), what="applied report")
            assert applied.generation == 1 and applied.canary == {"sim-001": 20, "sim-002": 20}
            since = applied.timestamp

            def full_windows() -> list[WorkloadStats]:
                return [s for s in seen.stats if s.timestamp - s.window_seconds >= since]

            await wait_for(lambda: len({s.timestamp for s in full_windows()}) >= 15, what="15 windows", timeout=20)
        await sub.unsubscribe()
        stats = full_windows()
        for cluster in ("sim-001", "sim-002"):
            canary = sum(s.requests for s in stats if s.cluster == cluster and s.track == "canary")
            total = sum(s.requests for s in stats if s.cluster == cluster)
            assert canary / total == pytest.approx(0.20, abs=0.03), cluster
        others = [s for s in stats if s.cluster in ("sim-003", "sim-004")]
        assert others and all(s.track == "stable" for s in others)
        assert {s.cluster for s in stats} == {"sim-001", "sim-002", "sim-003", "sim-004"}

        # a router that starts later (a restarted tmcd) reads the last report from the stream
        fresh = NatsRouter(bus)
        try:
            again = await fresh.applied(REF)
            assert again is not None and (again.generation, again.canary) == (1, applied.canary)
        finally:
            await fresh.close()
            await router.close()


async def test_a_restarted_mesh_picks_up_the_current_weights(nats_server: EmbeddedNats) -> None:
    async with provisioned(nats_server.url) as bus:
        router = NatsRouter(bus)
        other = RouteRef("shop", "cart")
        # set while no mesh runs: the stream keeps them
        await router.set_weights(REF, 10, ["sim-001"], generation=1)
        await router.set_weights(REF, 30, ["sim-001", "sim-003"], generation=2)
        await router.set_weights(other, 50, ["sim-002"], generation=7)
        assert await router.applied(REF) is None
        async with Mesh(nats_server.url, opts()):
            got = await wait_for(lambda: router.applied(REF), what="report after start")
            assert got.generation == 2 and got.canary == {"sim-001": 30, "sim-003": 30}
            cart = await wait_for(lambda: router.applied(other), what="report of the other route")
            assert cart.canary == {"sim-002": 50} and cart.generation == 7
        # changed while the mesh is down; then a late, older generation arrives first
        await router.set_weights(REF, 100, ["sim-004"], generation=3)
        async with Mesh(nats_server.url, opts()) as mesh:
            done = await wait_for(lambda: _at(router, REF, 3), what="generation 3 applied after the restart")
            assert done.canary == {"sim-004": 100}
            await bus.publish(
                subjects.traffic_weights("shop", "web"),
                TrafficWeights(namespace="shop", route="web", timestamp=1.0, generation=2),
            )
            await bus.flush()
            stats = await mesh.finish()
        assert stats.dropped == 1
        assert (await router.applied(REF)) == done
        # the stream holds one desired and one applied message per route
        stored = await last_per_subject(bus, subjects.STREAM_TRAFFIC, "tmc.traffic.>", subjects.TRAFFIC_WEIGHTS)
        assert sorted(d.subject for d in stored if isinstance(d.msg, TrafficWeights)) == [
            "tmc.traffic.shop.cart",
            "tmc.traffic.shop.web",
        ]
        info = await bus.js.stream_info(subjects.STREAM_TRAFFIC)
        assert info.state.messages == 4
        await router.close()


async def _at(router: NatsRouter, ref: RouteRef, generation: int) -> AppliedWeights | None:
    got = await router.applied(ref)
    return got if got is not None and got.generation >= generation else None


async def test_weights_a_mesh_cannot_apply_are_dead_lettered_and_it_goes_on(nats_server: EmbeddedNats) -> None:
    async with provisioned(nats_server.url) as bus:
        dead: list[bytes] = []
        nc = bus.nc

        async def on_dead(msg: Any) -> None:
            dead.append(msg.data)

        dsub = await nc.subscribe("tmc.dead.tmc.traffic.>", cb=on_dead)
        router = NatsRouter(bus)
        # stored before the mesh starts: it is applied from the mesh's first read of the stream,
        # so that read is over before the bad weights are stored (it would dead-letter them too)
        await router.set_weights(REF, 5, ["sim-001"], generation=1)
        async with Mesh(nats_server.url, opts(clusters=1)):
            await wait_for(lambda: router.applied(REF), what="the mesh listening")
            bad = b'{"namespace":"shop","route":"web","timestamp":1,"weights":{"stable":50,"canary":40}}'
            await bus.publish_raw(subjects.traffic_weights("shop", "web"), bad)
            await router.set_weights(REF, 7, ["sim-001"], generation=2)
            got = await wait_for(lambda: _at(router, REF, 2), what="the valid weights applied")
            assert got.canary == {"sim-001": 7}
            await wait_for(lambda: dead, what="dead letter")
        assert dead == [bad]
        await dsub.unsubscribe()
        await router.close()


async def test_no_report_is_kept_for_routes_the_router_does_not_serve(nats_server: EmbeddedNats) -> None:
    async with provisioned(nats_server.url) as bus:
        router = NatsRouter(bus, max_routes=2)
        for i in range(3):
            await router.applied(RouteRef("shop", f"r{i}"))
        assert len(router._routes) == 2  # the least recently used one is forgotten
        for route in ("elsewhere", "r2"):  # reports arrive in order: once r2's is in, elsewhere's was seen
            report = TrafficApplied(
                namespace="shop", route=route, timestamp=1.0, generation=1, weights={"sim-001": {"canary": 3}}
            )
            await bus.publish(subjects.traffic_applied("shop", route), report)
        await wait_for(lambda: router._routes[("shop", "r2")].report, what="r2's report")
        assert ("shop", "elsewhere") not in router._routes
        served = await router.applied(RouteRef("shop", "r2"))
        assert served is not None and served.canary == {"sim-001": 3}
        await router.close()
        with pytest.raises(RuntimeError):
            await router.applied(REF)


async def test_router_rejects_bad_input_before_publishing(nats_server: EmbeddedNats) -> None:
    async with provisioned(nats_server.url) as bus:
        router = NatsRouter(bus)
        with pytest.raises(ValueError, match=r"0\.\.100"):
            await router.set_weights(REF, 101, ["sim-001"], generation=1)
        with pytest.raises(ValueError, match="cluster"):
            await router.set_weights(REF, 10, ["Sim 1"], generation=1)
        with pytest.raises(ValueError, match="route"):
            await router.set_weights(RouteRef("shop", "a.b"), 10, ["sim-001"], generation=1)
        # no cluster to run the canary on: the route is all stable everywhere
        await router.set_weights(RouteRef("shop", "none"), 40, [], generation=1)
        raw = await bus.js.get_last_msg(subjects.STREAM_TRAFFIC, subjects.traffic_weights("shop", "none"))
        assert raw.data is not None
        assert b'"weights":{"stable":100,"canary":0}' in raw.data and b'"clusters":[]' in raw.data
        assert (await bus.js.stream_info(subjects.STREAM_TRAFFIC)).state.messages == 1
        await router.close()


def test_router_names() -> None:
    bus = Bus(NatsConfig(), SelfMetrics())
    assert router_for("nats", bus).name == "nats"
    for name in ("gateway-api", "smi"):
        with pytest.raises(UnsupportedRouter, match=f"'{name}' needs the Kubernetes adapters"):
            router_for(name, bus)
    with pytest.raises(UnsupportedRouter, match="expected one of nats, gateway-api, smi"):
        router_for("istio", bus)


def test_encoded_weights_name_the_workload_only_when_it_differs() -> None:
    w = TrafficWeights(namespace="shop", route="web", timestamp=1.0, workload="web-api")
    assert b'"workload":"web-api"' in encode(w)


async def test_without_the_traffic_stream_routes_are_served_as_their_weights_arrive(
    nats_server: EmbeddedNats,
) -> None:
    """A mesh started before tmcd ever provisioned TMC_TRAFFIC: nothing to read, changes still obeyed."""
    bus = await connected(nats_server.url)
    try:
        reports: list[TrafficApplied] = []

        async def on(d: Delivery[Any]) -> None:
            reports.append(d.msg)

        sub = await bus.subscribe(subjects.TRAFFIC_APPLIED.wildcard, on, channel=subjects.TRAFFIC_APPLIED)
        async with Mesh(nats_server.url, opts(clusters=2)):
            w = TrafficWeights(
                namespace="shop", route="web", timestamp=1.0, weights={"stable": 60, "canary": 40}, generation=1
            )

            async def applied() -> bool:
                await bus.publish(subjects.traffic_weights("shop", "web"), w)  # until the mesh listens
                return bool(reports)

            await wait_for(applied, what="a report without the stream", step=0.05)
        await sub.unsubscribe()
        assert reports[0].weights == {"sim-001": {"stable": 60, "canary": 40}, "sim-002": {"stable": 60, "canary": 40}}
    finally:
        await bus.close()


async def test_weights_sent_while_the_mesh_was_disconnected_are_applied_when_it_is_back(
    nats_server: EmbeddedNats,
) -> None:
    async with provisioned(nats_server.url) as bus:
        router = NatsRouter(bus)
        await router.set_weights(REF, 10, ["sim-001"], generation=1)
        slow = Bus(NatsConfig(name="mesh", reconnect_wait_min=1.0, reconnect_wait_max=1.0), SelfMetrics(), url=bus.url)
        await slow.connect(retry=False)
        stop = asyncio.Event()
        task = asyncio.create_task(run_mesh(slow, opts(), stop))
        try:
            await wait_for(lambda: _at(router, REF, 1), what="generation 1 applied")
            port = int(nats_server.url.rsplit(":", 1)[1])
            await asyncio.to_thread(nats_server.stop)
            await wait_for(lambda: not bus.connected and not slow.connected, what="both disconnected")
            nats_server.port = port
            await asyncio.to_thread(nats_server.start)
            # the router is back first (its reconnect waits are short): the mesh's core
            # subscription misses this; the stream keeps it and the mesh reads it when back
            await wait_for(lambda: bus.connected, what="the router reconnected", timeout=15)
            await router.set_weights(REF, 40, ["sim-002"], generation=2)
            got = await wait_for(
                lambda: _at(router, REF, 2), what="generation 2 applied after the reconnect", timeout=15
            )
            assert got.canary == {"sim-002": 40}
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await slow.close()
            await router.close()
