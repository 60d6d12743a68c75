"""The gateway-api and smi routers against the fake Kubernetes API server (real sockets, kubernetes-asyncio).

When ``TMCD_TEST_KUBECONFIG`` is set, the scenarios marked ``real`` also run against that cluster
(its current context, namespace ``default``); otherwise they are skipped -- the one skip this suite
allows, since a real cluster cannot be assumed on a developer's machine or in CI.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakekube import HTTPROUTE, TRAFFICSPLIT, FakeKube, Kind, serve, write_kubeconfig
from tmcd.config import KubeConfig
from tmcd.contracts.traffic import RouteRef, TrafficError
from tmcd.kube.client import Clients, Conflict
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


async def test_endless_conflicts_end_in_a_clear_error(fleet: Fleet) -> None:
    fleet.east.put(HTTPROUTE, httproute())
    fleet.east.conflicts = 100
    router = fleet.router(GatewayApiRouter)
    try:
        with pytest.raises(TrafficError, match="HTTPRoute default/web on cluster east: still changing after 5"):
            await router.set_weights(GW, 10, ["east"], generation=1)
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


async def test_a_route_without_both_services_is_a_clear_error(fleet: Fleet) -> None:
    obj = httproute()
    obj["spec"]["rules"][0]["backendRefs"].pop()
    fleet.east.put(HTTPROUTE, obj)
    router = fleet.router(GatewayApiRouter)
    try:
        with pytest.raises(TrafficError, match="does not route to both web-stable and web-canary"):
            await router.set_weights(GW, 10, ["east"], generation=1)
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


# -- the same scenarios on a real cluster ------------------------------------------------------------

REAL = os.environ.get("TMCD_TEST_KUBECONFIG", "")


@pytest.mark.skipif(not REAL, reason="TMCD_TEST_KUBECONFIG is not set (no real cluster to run against)")
async def test_gateway_api_on_a_real_cluster() -> None:
    from tmcd.kube.client import Clients, NotFound

    settings = KubeConfig(kubeconfig=REAL)
    clients = Clients(settings)
    kube = await clients.get("")
    try:
        try:
            await kube.get(HTTPROUTE_RES, "default", "tmcd-test-web")
        except NotFound:
            await kube.create(
                HTTPROUTE_RES,
                "default",
                {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", **httproute("tmcd-test-web")},
            )
        ctx = kube.context or _current_context(REAL)
        router = GatewayApiRouter(KubeConfig(kubeconfig=REAL, contexts={"real": ctx}))
        ref = RouteRef(
            "default", "tmcd-test-web", router="gateway-api", stable_service="web-stable", canary_service="web-canary"
        )
        try:
            gen = int(await _generation(kube)) + 1
            await router.set_weights(ref, 20, ["real"], gen)
            router._routes.clear()
            applied = await router.applied(ref)
            assert applied is not None and applied.canary == {"real": 20} and applied.generation == gen
        finally:
            await router.close()
    finally:
        await clients.close()


HTTPROUTE_RES = GatewayApiRouter.resource


def _current_context(path: str) -> str:
    import yaml

    return str(yaml.safe_load(Path(path).read_text())["current-context"])


async def _generation(kube: Any) -> str:
    obj = await kube.get(HTTPROUTE_RES, "default", "tmcd-test-web")
    return str((obj["metadata"].get("annotations") or {}).get(GENERATION_ANNOTATION, "0"))


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
