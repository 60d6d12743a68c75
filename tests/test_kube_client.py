"""tmcd/kube/client.py against the fake API server: get, merge patch, the status subresource, 404 and
409 Status answers, list pages, watch with bookmarks and 410 Gone; and the [kube] config section."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakekube import CANARYROLLOUT, FakeKube, serve, write_kubeconfig
from tmcd.config import ConfigError, KubeConfig, load_config
from tmcd.kube.client import Conflict, Gone, Kube, NotFound, Resource, Unreachable, connect

CR = Resource("tmc.kcp.io", "v1alpha1", "canaryrollouts")


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[tuple[FakeKube, Kube]]:
    async for (fake,) in serve(1):
        path = write_kubeconfig(tmp_path / "kc", {"one": fake.url})
        k = await connect(KubeConfig(kubeconfig=str(path)))
        try:
            yield fake, k
        finally:
            await k.close()


def cr(name: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "shop"}, "spec": {"route": name}, "status": {"phase": "Pending"}}


async def test_get_merge_patch_status_and_errors(kube: tuple[FakeKube, Kube]) -> None:
    fake, k = kube
    fake.put(CANARYROLLOUT, cr("web"))
    got = await k.get(CR, "shop", "web")
    assert got["spec"] == {"route": "web"}
    rv = got["metadata"]["resourceVersion"]
    patched = await k.merge_patch(CR, "shop", "web", {"status": {"phase": "Progressing"}}, status=True)
    assert patched["status"] == {"phase": "Progressing"} and patched["spec"] == {"route": "web"}
    req = fake.requests[-1]
    assert (req.method, req.path, req.content_type) == (
        "PATCH",
        "/apis/tmc.kcp.io/v1alpha1/namespaces/shop/canaryrollouts/web/status",
        "application/merge-patch+json",
    )
    # the main resource ignores status; a stale resourceVersion in a merge patch is a 409
    after = await k.merge_patch(CR, "shop", "web", {"spec": {"route": "x"}, "status": {"phase": "Lost"}})
    assert after["spec"] == {"route": "x"} and after["status"] == {"phase": "Progressing"}
    with pytest.raises(Conflict, match="the object has been modified"):
        await k.merge_patch(CR, "shop", "web", {"metadata": {"resourceVersion": rv}, "spec": {"route": "y"}})
    with pytest.raises(NotFound, match=r'canaryrollouts\.tmc\.kcp\.io "nope" not found'):
        await k.get(CR, "shop", "nope")
    with pytest.raises(NotFound):
        await k.get(Resource("nope.io", "v1", "things"), "shop", "x")


async def test_list_pages_and_watch_with_bookmarks(kube: tuple[FakeKube, Kube]) -> None:
    fake, k = kube
    for n in ("a", "b", "c"):
        fake.put(CANARYROLLOUT, cr(n))
    page = await k.list(CR, "shop", limit=2)
    assert [o["metadata"]["name"] for o in page.items] == ["a", "b"] and page.continue_token
    rest = await k.list(CR, "shop", limit=2, continue_token=page.continue_token)
    assert [o["metadata"]["name"] for o in rest.items] == ["c"] and not rest.continue_token
    assert fake.requests[-1].query == {"limit": "2", "continue": page.continue_token}

    seen: list[tuple[str, str]] = []
    watch = k.watch(CR, "shop", page.resource_version)
    fake.put(CANARYROLLOUT, cr("d"))
    async for ev in watch:
        seen.append((ev.type, ev.object["metadata"].get("name", "")))
        if ev.type == "ADDED":
            fake.bookmark()
        elif ev.type == "BOOKMARK":
            assert ev.resource_version == str(fake.rv)
            fake.end_watches()
    assert seen == [("ADDED", "d"), ("BOOKMARK", "")]
    q = fake.of("GET", "/canaryrollouts")[-1].query
    assert q["watch"] == "true" and q["allowWatchBookmarks"] == "true"
    assert q["resourceVersion"] == page.resource_version


async def test_a_too_old_resource_version_is_gone(kube: tuple[FakeKube, Kube]) -> None:
    fake, k = kube
    fake.put(CANARYROLLOUT, cr("a"))
    old = str(fake.rv)
    fake.put(CANARYROLLOUT, cr("b"))
    fake.compact()
    with pytest.raises(Gone, match="too old resource version"):
        async for _ in k.watch(CR, "shop", old):
            pass


async def test_unreachable_and_unknown_context(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kc", {"dead": "http://127.0.0.1:9"})
    with pytest.raises(Unreachable, match="context nope"):
        await connect(KubeConfig(kubeconfig=str(path)), "nope")
    k = await connect(KubeConfig(kubeconfig=str(path)), "dead")
    try:
        with pytest.raises(Unreachable, match="context dead"):
            await k.get(CR, "shop", "x")
    finally:
        await k.close()


# -- the [kube] config section -------------------------------------------------------------------


def test_kube_section_loads(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text('[kube]\nkubeconfig = "/k"\ncontexts = { east = "kind-east" }\n')
    cfg = load_config(str(f), env={})
    assert cfg.kube == KubeConfig(kubeconfig="/k", contexts={"east": "kind-east"})
    assert load_config(env={"TMCD_KUBE_IN_CLUSTER": "true"}).kube.in_cluster


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[kube]\ncontexts = { "East_1" = "x" }', "kube.contexts.East_1 = 'x': expected a cluster name"),
        ('[kube]\ncontexts = { east = " " }', "kube.contexts.east = ' ': expected a kubeconfig context name"),
        ("[kube]\ncontexts = { east = 3 }", "kube.contexts = "),
        ('[kube]\nin_cluster = true\ncontext = "x"', "kube.context = 'x': expected empty when kube.in_cluster"),
        ("[kube]\nkubeconfg = 1", "kube.kubeconfg: unknown key (did you mean kube.kubeconfig?)"),
    ],
)
def test_kube_section_errors(tmp_path: Path, toml: str, message: str) -> None:
    f = tmp_path / "t.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(str(f), env={})
    assert message in str(info.value) and "\n" not in str(info.value)


# -- trafficRouting's Services (validated where every write is) ---------------------------------


@pytest.mark.parametrize(
    ("routing", "field", "message"),
    [
        ({"router": "gateway-api", "route": "web"}, "stableService", "is required by the gateway-api router"),
        ({"router": "smi", "route": "web", "stableService": "a"}, "canaryService", "is required by the smi router"),
        ({"router": "smi", "route": "web", "stableService": "a", "canaryService": "a"}, "canaryService", "must differ"),
        ({"router": "nats", "route": "web", "stableService": "a"}, "stableService", "used only by the gateway-api"),
        ({"router": "gateway-api", "route": "web", "stableService": "A_b", "canaryService": "c"}, "stableService", ""),
    ],
)
def test_traffic_routing_services_are_validated(routing: dict[str, str], field: str, message: str) -> None:
    import msgspec

    from tmcd.resources.canary import CanaryRollout
    from tmcd.resources.validate import validate

    r = msgspec.convert(
        {
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "workloadRef": {"kind": "Deployment", "name": "web"},
                "stableVersion": "v1",
                "canaryVersion": "v2",
                "placementRef": "p",
                "trafficRouting": routing,
            },
        },
        CanaryRollout,
    )
    causes = [c for c in validate(r) if c.field.startswith("spec.trafficRouting.")]
    assert causes and causes[0].field == f"spec.trafficRouting.{field}" and message in causes[0].message
    ok = {**routing, "stableService": "web-stable", "canaryService": "web-canary"}
    if routing["router"] == "nats":
        ok = {"router": "nats", "route": "web"}
    assert msgspec.json.encode(msgspec.convert(ok, type(r.spec.traffic_routing))).count(b"Service") == (
        0 if routing["router"] == "nats" else 2
    )
