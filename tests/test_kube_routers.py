"""The gateway-api and smi routers against the fake Kubernetes API server (real sockets, kubernetes-asyncio).

The scenarios that take ``target`` also run against a real cluster when ``TMCD_TEST_KUBECONFIG`` is
set (tests/kubetarget.py: its current context, a namespace of their own); otherwise their ``real``
case is skipped -- the one skip this suite allows, since a real cluster cannot be assumed on a
developer's machine or in CI.  The tests that check the exact requests run on the fake only.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakekube import HTTPROUTE, TRAFFICSPLIT, FakeKube, Kind, serve, write_kubeconfig
from tests.kubetarget import ROUTE_CRDS, TARGETS, Target, open_target
from tmcd.config import KubeConfig
from tmcd.contracts.traffic import RouteRef, TrafficError
from tmcd.kube.client import Clients, Conflict, Kube, Resource
from tmcd.kube.routers import CONTEXT_ANNOTATION, GENERATION_ANNOTATION, GatewayApiRouter, KubeRouter, SmiRouter

GW = RouteRef("default", "web", "web", router="gateway-api", stable_service="web-stable", canary_service="web-canary")
SMI = RouteRef("default", "web", "web", router="smi", stable_service="web-stable", canary_service="web-canary")


def httproute(name: str = "web", stable: int = 100, canary: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "web-stable", "port": 80, "weight": stable},
                        {"name": "web-canary", "port": 80, "weight": canary},
                    ]
                }
            ],
        },
    }


def trafficsplit(name: str = "web") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "service": "web",
            "backends": [{"service": "web-stable", "weight": 100}, {"service": "web-canary", "weight": 0}],
        },
    }


@dataclass
class Fleet:
    east: FakeKube
    west: FakeKube
    settings: KubeConfig

    def router(self, cls: type[KubeRouter], **annotations: dict[str, str]) -> KubeRouter:
        return cls(self.settings, lambda: annotations)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async for servers in serve(2):
        east, west = servers
        path = write_kubeconfig(tmp_path / "kubeconfig", {"east": east.url, "west": west.url})
        yield Fleet(east, west, KubeConfig(kubeconfig=str(path), contexts={"east": "east", "west": "west"}))


def weights(fake: FakeKube, kind: Kind = HTTPROUTE) -> list[int]:
    obj = fake.obj(kind, "default", "web")
    if kind == HTTPROUTE:
        return [b["weight"] for b in obj["spec"]["rules"][0]["backendRefs"]]
    return [b["weight"] for b in obj["spec"]["backends"]]


async def test_gateway_api_patches_each_cluster_with_a_guarded_json_patch(fleet: Fleet) -> None:
    for fake in (fleet.east, fleet.west):
        fake.put(HTTPROUTE, httproute())
    rv = fleet.east.obj(HTTPROUTE, "default", "web")["metadata"]["resourceVersion"]
    router = fleet.router(GatewayApiRouter)
    try:
        await router.set_weights(GW, 20, ["east"], generation=3)
        assert weights(fleet.east) == [80, 20] and weights(fleet.west) == [100, 0]
        patch = fleet.east.of("PATCH")[-1]
        assert (patch.path, patch.content_type) == (
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/web",
            "application/json-patch+json",
        )
        assert patch.body == [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/spec/rules/0/backendRefs/0/weight", "value": 80},
            {"op": "add", "path": "/spec/rules/0/backendRefs/1/weight", "value": 20},
            {"op": "add", "path": "/metadata/annotations", "value": {GENERATION_ANNOTATION: "3"}},
        ]
        assert patch.authorization == "Bearer token-east"
        ann = fleet.west.obj(HTTPROUTE, "default", "web")["metadata"]["annotations"]
        assert ann == {GENERATION_ANNOTATION: "3"}  # the stable-only cluster records the generation too
        applied = await router.applied(GW)
        assert applied is not None and (applied.generation, applied.canary) == (3, {"east": 20})
        # the same generation again: nothing to patch; an older one: ignored
        before = len(fleet.east.of("PATCH"))
        await router.set_weights(GW, 20, ["east"], generation=3)
        await router.set_weights(GW, 50, ["east"], generation=2)
        assert len(fleet.east.of("PATCH")) == before and weights(fleet.east) == [80, 20]
    finally:
        await router.close()


async def test_applied_reads_the_objects_back(fleet: Fleet) -> None:
    fleet.east.put(HTTPROUTE, httproute(stable=3, canary=1))
    fleet.east.obj(HTTPROUTE, "default", "web")["metadata"]["annotations"] = {GENERATION_ANNOTATION: "7"}
    fleet.west.put(HTTPROUTE, httproute())
    router = fleet.router(GatewayApiRouter)
    try:
        applied = await router.applied(GW)
        assert applied is not None
        assert (applied.generation, applied.canary) == (-1, {"east": 25})  # west has no generation yet
        assert fleet.east.of("GET", "/httproutes/web")
    finally:
        await router.close()


async def test_a_conflict_is_retried_on_a_fresh_read(fleet: Fleet) -> None:
    fleet.east.put(HTTPROUTE, httproute())
    fleet.east.conflicts = 2  # someone else writes the route before each of our first two patches
    router = fleet.router(GatewayApiRouter)
    try:
        await router.set_weights(GW, 10, ["east"], generation=1)
        assert weights(fleet.east) == [90, 10]
        methods = [r.method for r in fleet.east.requests if r.path.endswith("/web")]
        assert methods == ["GET", "PATCH", "GET", "PATCH", "GET", "PATCH"]
    finally:
        await router.close()


async def test_a_409_on_the_test_op_is_retried_too(tmp_path: Path) -> None:
    async for (fake,) in serve(1, test_failure_status=409):
        fake.put(HTTPROUTE, httproute())
        fake.conflicts = 1
        path = write_kubeconfig(tmp_path / "kc", {"east": fake.url})
        router = GatewayApiRouter(KubeConfig(kubeconfig=str(path), contexts={"east": "east"}))
        try:
            await router.set_weights(GW, 30, ["east"], generation=1)
            assert weights(fake) == [70, 30]
        finally:
            await router.close()


async def test_a_missing_route_is_a_clear_error_on_a_canary_cluster(fleet: Fleet) -> None:
    fleet.west.put(HTTPROUTE, httproute())
    router = fleet.router(GatewayApiRouter)
    try:
        with pytest.raises(TrafficError, match=r"HTTPRoute default/web on cluster east not found \(context east\)"):
            await router.set_weights(GW, 10, ["east"], generation=1)
        assert weights(fleet.west) == [100, 0]  # the other cluster is still set
        applied = await router.applied(GW)
        assert applied is not None and applied.unknown_clusters == ("east",)
    finally:
        await router.close()


async def test_an_unreachable_cluster_is_reported(fleet: Fleet) -> None:
    fleet.east.put(HTTPROUTE, httproute())
    await fleet.west.stop()  # west's API server is gone
    router = fleet.router(GatewayApiRouter, lost={CONTEXT_ANNOTATION: ""})
    try:
        await router.set_weights(GW, 0, [], generation=4)  # a reversal: west failing does not stop it
        assert weights(fleet.east) == [100, 0]
        router._routes.clear()  # read again now
        applied = await router.applied(GW)
        assert applied is not None and applied.generation == 4
        assert set(applied.unreachable) == {"west"} and "context west" in applied.unreachable["west"]
        with pytest.raises(TrafficError, match="cluster west"):
            await router.set_weights(GW, 10, ["west"], generation=5)
        with pytest.raises(TrafficError, match="cluster nowhere: no kubeconfig context"):
            await router.set_weights(GW, 10, ["nowhere"], generation=6)
    finally:
        await router.close()


async def test_a_syncTarget_annotation_names_the_context(fleet: Fleet, tmp_path: Path) -> None:
    fleet.west.put(HTTPROUTE, httproute())
    settings = KubeConfig(kubeconfig=fleet.settings.kubeconfig, contexts={"east": "east"})
    router = GatewayApiRouter(settings, lambda: {"prod-1": {CONTEXT_ANNOTATION: "west"}})
    try:
        assert router.targets() == ["east", "prod-1"]
        await router.set_weights(GW, 40, ["prod-1"], generation=1)
        assert weights(fleet.west) == [60, 40]
    finally:
        await router.close()


async def test_smi_patches_the_trafficsplit_backends(fleet: Fleet) -> None:
    for fake in (fleet.east, fleet.west):
        fake.put(TRAFFICSPLIT, trafficsplit())
    router = fleet.router(SmiRouter)
    try:
        await router.set_weights(SMI, 20, ["west"], generation=2)
        assert weights(fleet.west, TRAFFICSPLIT) == [80, 20] and weights(fleet.east, TRAFFICSPLIT) == [100, 0]
        patch = fleet.west.of("PATCH")[-1]
        assert patch.path == "/apis/split.smi-spec.io/v1alpha4/namespaces/default/trafficsplits/web"
        assert patch.body[1:3] == [
            {"op": "add", "path": "/spec/backends/0/weight", "value": 80},
            {"op": "add", "path": "/spec/backends/1/weight", "value": 20},
        ]
        applied = await router.applied(SMI)
        assert applied is not None and (applied.generation, applied.canary) == (2, {"west": 20})
    finally:
        await router.close()


async def test_clients_are_cached_per_context_bounded_and_closed(fleet: Fleet) -> None:
    clients = Clients(fleet.settings, limit=1)
    try:
        east = await clients.get("east")
        assert await clients.get("east") is east
        await clients.get("west")
        assert clients.contexts() == ["west"]
    finally:
        await clients.close()
    assert clients.contexts() == []
    assert Conflict.__mro__[1].__name__ == "KubeError"


# -- the same scenarios on the fake and on a real cluster --------------------------------------------


@pytest.fixture(params=TARGETS)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    async with open_target(request.param, tmp_path, crds=ROUTE_CRDS) as t:
        yield t


def ref_in(target: Target, router: str = "gateway-api", route: str = "web") -> RouteRef:
    return RouteRef(
        target.namespace, route, route, router=router, stable_service="web-stable", canary_service="web-canary"
    )


def router_on(target: Target, cls: type[KubeRouter], clients: Clients | None = None) -> KubeRouter:
    settings = target.settings(contexts={"east": target.context})
    return cls(settings, clients=clients or Clients(settings))


def target_weights(obj: dict[str, Any] | None) -> tuple[list[int], str]:
    """(the weights, the generation annotation) of an HTTPRoute's first rule or a TrafficSplit."""
    assert obj is not None
    spec = obj["spec"]
    refs = spec["rules"][0]["backendRefs"] if "rules" in spec else spec["backends"]
    return [b["weight"] for b in refs], (obj["metadata"].get("annotations") or {}).get(GENERATION_ANNOTATION, "")


@pytest.mark.parametrize(
    ("cls", "kind", "make"),
    [(GatewayApiRouter, HTTPROUTE, httproute), (SmiRouter, TRAFFICSPLIT, trafficsplit)],
    ids=["gateway-api", "smi"],
)
async def test_a_router_sets_weights_and_reads_them_back(
    target: Target, cls: type[KubeRouter], kind: Kind, make: Any
) -> None:
    await target.put(kind, make())
    router = router_on(target, cls)
    ref = ref_in(target, cls.name)
    try:
        await router.set_weights(ref, 20, ["east"], generation=3)
        obj = await target.get(kind, "web")
        assert target_weights(obj) == ([80, 20], "3")
        rv = obj["metadata"]["resourceVersion"] if obj else ""
        router._routes.clear()  # read the object again now
        applied = await router.applied(ref)
        assert applied is not None and (applied.generation, applied.canary) == (3, {"east": 20})
        # the same generation again, then an older one: the object is not written
        await router.set_weights(ref, 20, ["east"], generation=3)
        await router.set_weights(ref, 50, ["east"], generation=2)
        after = await target.get(kind, "web")
        assert after is not None and after["metadata"]["resourceVersion"] == rv
        await router.set_weights(ref, 0, [], generation=4)  # a reversal: all on stable
        assert target_weights(await target.get(kind, "web")) == ([100, 0], "4")
    finally:
        await router.close()


@dataclass
class Meddler(Kube):
    """A client after whose reads of an object someone else writes it (while ``owner.times`` > 0)."""

    owner: MeddlingClients | None = None

    async def get(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        obj = await super().get(res, namespace, name)
        if self.owner is not None and self.owner.times > 0:
            self.owner.times -= 1
            touch = {"metadata": {"annotations": {"example.com/touched": str(self.owner.times)}}}
            await self.merge_patch(res, namespace, name, touch)
        return obj


@dataclass
class MeddlingClients(Clients):
    """Clients whose objects another writer changes after each of the next ``times`` reads."""

    times: int = 0

    async def get(self, context: str = "") -> Kube:
        kube = await super().get(context)
        return Meddler(kube.api, kube.context, owner=self)


async def test_a_concurrent_writer_makes_the_router_read_again(target: Target) -> None:
    """The patch's ``test`` op on the resourceVersion fails on any API server when someone else
    wrote in between; the router reads again and patches on top of the other write."""
    await target.put(HTTPROUTE, httproute())
    settings = target.settings(contexts={"east": target.context})
    clients = MeddlingClients(settings, times=2)
    router = router_on(target, GatewayApiRouter, clients)
    try:
        await router.set_weights(ref_in(target), 10, ["east"], generation=1)
        obj = await target.get(HTTPROUTE, "web")
        assert target_weights(obj) == ([90, 10], "1") and clients.times == 0
        assert obj is not None and obj["metadata"]["annotations"]["example.com/touched"] == "0"  # theirs kept
        clients.times = 100  # a writer that never stops: a clear error after five tries
        with pytest.raises(
            TrafficError, match=f"HTTPRoute {target.namespace}/web on cluster east: still changing after 5"
        ):
            await router.set_weights(ref_in(target), 30, ["east"], generation=2)
        assert target_weights(await target.get(HTTPROUTE, "web"))[0] == [90, 10]
    finally:
        await router.close()


async def test_a_missing_or_unusable_route_is_a_clear_error(target: Target) -> None:
    router = router_on(target, GatewayApiRouter)
    ns = target.namespace
    try:
        missing = rf"HTTPRoute {ns}/web on cluster east not found \(context {re.escape(target.context)}\)"
        with pytest.raises(TrafficError, match=missing):
            await router.set_weights(ref_in(target), 10, ["east"], generation=1)
        router._routes.clear()
        applied = await router.applied(ref_in(target))
        assert applied is None  # nothing read anywhere
        obj = httproute()
        obj["spec"]["rules"][0]["backendRefs"].pop()
        await target.put(HTTPROUTE, obj)
        with pytest.raises(
            TrafficError, match=f"HTTPRoute {ns}/web on cluster east does not route to both web-stable and web-canary"
        ):
            await router.set_weights(ref_in(target), 10, ["east"], generation=1)
        assert target_weights(await target.get(HTTPROUTE, "web")) == ([100], "")  # untouched
    finally:
        await router.close()


def test_the_shipped_role_grants_exactly_what_the_routers_and_the_image_setter_use() -> None:
    import yaml

    role = yaml.safe_load((Path(__file__).parent.parent / "config" / "kubernetes" / "traffic-role.yaml").read_text())
    assert role["kind"] == "Role" and role["apiVersion"] == "rbac.authorization.k8s.io/v1"
    grants = {
        (g, r): sorted(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert grants == {
        ("gateway.networking.k8s.io", "httproutes"): ["get", "patch"],
        ("split.smi-spec.io", "trafficsplits"): ["get", "patch"],
        ("apps", "deployments"): ["get", "patch"],  # tmcd/kube/workloads.py: read the image, patch it
    }
