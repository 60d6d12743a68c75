"""The resource API over real HTTP against a daemon on a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.helpers import daemon_config, nats_connect, new_object, running_daemon, wait_for
from tmcd.api.auth import authorize
from tmcd.api.errors import ApiError
from tmcd.config import ApiConfig, ApiToken
from tmcd.contracts.codec import decode_as
from tmcd.contracts.messages import PlacementDecision
from tmcd.resources.examples import example
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import EmbeddedNats

RW = "rw-token-0123456789abcdef"
RO = "ro-token-0123456789abcdef"
TOKENS = [{"name": "ci", "token": RW, "access": "read-write"}, {"name": "viewer", "token": RO, "access": "read-only"}]


body = new_object
JSON_TYPE = {"Content-Type": "application/json"}


@pytest.fixture
async def api(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[tuple[Daemon, aiohttp.ClientSession]]:
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics,placement", **{"api.tokens": TOKENS})
    async with (
        running_daemon(cfg) as d,
        aiohttp.ClientSession(base_url=d.http.base_url, headers={"Authorization": f"Bearer {RW}"}) as s,
    ):
        yield d, s


async def call(s: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with s.request(method, path, **kw) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else None


async def decided(s: aiohttp.ClientSession, name: str) -> dict[str, Any]:
    """The Placement once the placement agent has decided its current spec."""

    async def read() -> dict[str, Any] | None:
        status, obj = await call(s, "GET", f"/api/v1/placements/{name}")
        assert status == 200, obj
        st = obj.get("status", {})
        done = st.get("lastDecisionTime") and st.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if done else None

    return await wait_for(read, what=f"placement {name} decided")


async def test_crud_conflict_patch_delete(api: tuple[Daemon, aiohttp.ClientSession]) -> None:
    _, s = api
    path = "/api/v1/namespaces/shop/canaryrollouts"
    status, created = await call(s, "POST", path, json=body("CanaryRollout", name="checkout", namespace="shop"))
    assert status == 201, created
    meta = created["metadata"]
    assert (
        meta["uid"] and meta["generation"] == 1 and meta["resourceVersion"] and meta["creationTimestamp"].endswith("Z")
    )
    status, dup = await call(s, "POST", path, json=body("CanaryRollout", name="checkout", namespace="shop"))
    assert status == 409 and dup["reason"] == "AlreadyExists" and dup["kind"] == "Status"

    status, got = await call(s, "GET", f"{path}/checkout")
    assert status == 200 and got["spec"] == created["spec"]
    stale = copy.deepcopy(got)
    got["spec"]["canaryVersion"] = "v2.0.1"
    status, replaced = await call(s, "PUT", f"{path}/checkout", json=got)
    assert status == 200 and replaced["metadata"]["generation"] == 2
    status, conflict = await call(s, "PUT", f"{path}/checkout", json=stale)  # stale resourceVersion
    assert status == 409 and conflict["reason"] == "Conflict"

    patch = {"metadata": {"labels": {"team": "payments"}}, "spec": {"canaryVersion": "v2.0.2"}}
    status, patched = await call(
        s, "PATCH", f"{path}/checkout", data=json.dumps(patch), headers={"Content-Type": "application/merge-patch+json"}
    )
    assert status == 200 and patched["metadata"]["labels"]["team"] == "payments"
    assert patched["spec"]["canaryVersion"] == "v2.0.2" and patched["metadata"]["generation"] == 3

    status, everywhere = await call(s, "GET", "/api/v1/canaryrollouts")
    assert status == 200 and everywhere["kind"] == "CanaryRolloutList" and len(everywhere["items"]) == 1

    status, deleted = await call(s, "DELETE", f"{path}/checkout")
    assert status == 200 and deleted["metadata"]["name"] == "checkout"
    status, missing = await call(s, "GET", f"{path}/checkout")
    assert status == 404 and missing["reason"] == "NotFound" and missing["code"] == 404


async def test_validation_names_the_field(api: tuple[Daemon, aiohttp.ClientSession]) -> None:
    _, s = api
    bad = body("Placement", name="Bad.Name")
    status, st = await call(s, "POST", "/api/v1/placements", json=bad)
    assert status == 422 and st["reason"] == "Invalid"
    assert any(c["field"] == "metadata.name" for c in st["details"]["causes"])
    wrong_type = body("Placement", name="typed")
    wrong_type["spec"]["numberOfClusters"] = "two"
    status, st = await call(s, "POST", "/api/v1/placements", json=wrong_type)
    assert status == 422 and st["details"]["causes"][0]["field"] == "spec.numberOfClusters"
    status, st = await call(s, "POST", "/api/v1/placements", data=b"{not json", headers=JSON_TYPE)
    assert status == 400 and st["reason"] == "BadRequest"


async def test_list_selectors_and_pages(api: tuple[Daemon, aiohttp.ClientSession]) -> None:
    _, s = api
    for i in range(5):
        b = body("AnalysisTemplate", name=f"tpl-{i}", namespace="shop", labels={"tier": "gold" if i % 2 else "silver"})
        assert (await call(s, "POST", "/api/v1/namespaces/shop/analysistemplates", json=b))[0] == 201
    base = "/api/v1/namespaces/shop/analysistemplates"
    _, gold = await call(s, "GET", base, params={"labelSelector": "tier=gold"})
    assert [i["metadata"]["name"] for i in gold["items"]] == ["tpl-1", "tpl-3"]
    _, notgold = await call(s, "GET", base, params={"labelSelector": "tier in (silver),tier!=gold"})
    assert [i["metadata"]["name"] for i in notgold["items"]] == ["tpl-0", "tpl-2", "tpl-4"]
    _, one = await call(s, "GET", base, params={"fieldSelector": "metadata.name=tpl-2"})
    assert [i["metadata"]["name"] for i in one["items"]] == ["tpl-2"]
    names, token = [], ""
    for _ in range(5):
        _, page = await call(s, "GET", base, params={"limit": "2", **({"continue": token} if token else {})})
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert names == [f"tpl-{i}" for i in range(5)]
    status, st = await call(s, "GET", base, params={"labelSelector": "tier in (gold"})
    assert status == 400 and "labelSelector" in st["message"]


async def test_auth(api: tuple[Daemon, aiohttp.ClientSession], nats_server: EmbeddedNats) -> None:
    d, _ = api
    async with aiohttp.ClientSession(base_url=d.http.base_url) as anon:
        assert (await call(anon, "GET", "/api/v1/placements"))[0] == 200  # reads are open
        status, st = await call(anon, "POST", "/api/v1/placements", json=body("Placement", name="p1"))
        assert status == 401 and st["reason"] == "Unauthorized"
    async with aiohttp.ClientSession(base_url=d.http.base_url, headers={"Authorization": f"Bearer {RO}"}) as ro:
        status, st = await call(ro, "POST", "/api/v1/placements", json=body("Placement", name="p1"))
        assert status == 403 and "read-only" in st["message"]
    async with aiohttp.ClientSession(base_url=d.http.base_url, headers={"Authorization": "Bearer nope"}) as bad:
        assert (await call(bad, "GET", "/api/v1/placements"))[0] == 401


def test_authorize_rules() -> None:
    open_cfg = ApiConfig()
    assert authorize(open_cfg, None, write=True, remote="127.0.0.1").can_write
    assert authorize(open_cfg, None, write=True, remote="::1").can_write
    with pytest.raises(ApiError) as info:
        authorize(open_cfg, None, write=True, remote="192.0.2.10")  # documentation address: never contacted
    assert info.value.code == 403
    strict = ApiConfig(tokens=[ApiToken(name="ci", token=RW, access="read-write")], require_auth_for_reads=True)
    with pytest.raises(ApiError) as info:
        authorize(strict, None, write=False, remote="127.0.0.1")
    assert info.value.code == 401
    assert authorize(strict, f"Bearer {RW}", write=True, remote="192.0.2.10").name == "ci"
    with pytest.raises(ApiError):
        authorize(strict, "Basic abc", write=False, remote="127.0.0.1")


async def test_watch_streams_and_resumes(api: tuple[Daemon, aiohttp.ClientSession]) -> None:
    _, s = api
    await call(s, "POST", "/api/v1/placements", json=body("Placement", name="w-1"))
    events: list[tuple[str, str, str]] = []

    async def read(params: dict[str, str], want: int) -> None:
        async with s.get("/api/v1/placements", params={"watch": "1", **params}) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            event, rv = "", ""
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("id: "):
                    rv = line[4:]
                elif line.startswith("data: "):
                    obj = json.loads(line[6:])["object"]
                    events.append((event, obj["metadata"]["name"], rv))
                    if len(events) >= want:
                        return

    reader = asyncio.create_task(read({}, 4))

    async def first() -> bool:
        return len(events) >= 1

    await wait_for(first, what="initial ADDED")
    await call(s, "POST", "/api/v1/placements", json=body("Placement", name="w-2"))
    await call(s, "PATCH", "/api/v1/placements/w-2", json={"metadata": {"labels": {"x": "y"}}})
    await asyncio.wait_for(reader, 10)
    await decided(s, "w-1")  # the placement agent's status writes are done before the listing below
    await decided(s, "w-2")
    kinds = [(e, n) for e, n, _ in events]
    assert kinds[0] == ("ADDED", "w-1") and ("ADDED", "w-2") in kinds and ("MODIFIED", "w-2") in kinds
    # resume after the last event seen: only what happened since, up to the deletion
    last_rv = int(events[-1][2])
    await call(s, "DELETE", "/api/v1/placements/w-1")
    _, listing = await call(s, "GET", "/api/v1/placements")
    events.clear()
    reader = asyncio.create_task(read({"resourceVersion": str(last_rv)}, 99))

    async def deleted() -> bool:
        return any(e == ("DELETED", "w-1") for e, *_ in [((ev, n),) for ev, n, _ in events])

    await wait_for(deleted, what="DELETED w-1 after resuming")
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    assert all(int(rv) > last_rv for _, _, rv in events)
    assert int(listing["metadata"]["resourceVersion"]) >= int(events[-1][2])


async def test_saved_placement_is_decided_and_published(
    api: tuple[Daemon, aiohttp.ClientSession], nats_server: EmbeddedNats
) -> None:
    _, s = api
    nc = await nats_connect(nats_server.url)
    got: list[PlacementDecision] = []

    async def on_decision(msg: Any) -> None:
        got.append(decode_as(PlacementDecision, msg.data))

    sub = await nc.subscribe("tmc.placement.*.decision", cb=on_decision)
    await nc.flush()  # the server knows the subscription before the decision is published
    try:
        for st in (example("SyncTarget"),):
            obj = msgspec.to_builtins(st)
            assert (await call(s, "POST", "/api/v1/synctargets", json=obj))[0] == 201
        status, saved = await call(s, "POST", "/api/v1/placements", json=body("Placement", name="web"))
        assert status == 201
        assert saved["status"]["phase"] == "Pending"  # as stored: the placement agent decides it next
        decision = await decided(s, "web")
        assert decision["status"]["phase"] in ("Bound", "Unbound")
        assert {c["cluster"] for c in decision["status"]["candidates"]} == {"sim-001"}

        async def published() -> bool:
            return bool(got)

        await wait_for(published, what="PlacementDecision")
        assert got[0].placement == "web"
        assert [c.cluster for c in got[0].candidates] == ["sim-001"]
        status, sim = await call(s, "POST", "/api/v1/placement-simulations", json=body("Placement", name="what-if"))
        assert status == 200 and {c["cluster"] for c in sim["candidates"]} == {"sim-001"}
        assert (await call(s, "GET", "/api/v1/placements/what-if"))[0] == 404  # nothing saved
    finally:
        await sub.unsubscribe()
        await nc.close()


async def save_cluster(s: aiohttp.ClientSession) -> dict[str, Any]:
    """The example SyncTarget, created and then given its (healthy) status through /status."""
    obj = msgspec.to_builtins(example("SyncTarget"))
    status, created = await call(s, "POST", "/api/v1/synctargets", json=obj)
    assert status == 201 and created["status"]["health"] == "Unknown", created  # a create stores no status
    created["status"] = obj["status"]
    status, written = await call(s, "PUT", "/api/v1/synctargets/sim-001/status", json=created)
    assert status == 200 and written["status"]["health"] == "Healthy", written
    return written  # type: ignore[no-any-return]


async def test_replace_and_patch_keep_the_agents_status(api: tuple[Daemon, aiohttp.ClientSession]) -> None:
    _, s = api
    await save_cluster(s)
    forged = body("Placement", name="owned")
    forged["status"] = {"phase": "Bound", "selectedClusters": [{"cluster": "forged"}]}
    status, created = await call(s, "POST", "/api/v1/placements", json=forged)
    assert status == 201 and created["status"]["phase"] == "Pending" and not created["status"]["selectedClusters"]
    first = await decided(s, "owned")
    assert [c["cluster"] for c in first["status"]["selectedClusters"]] == ["sim-001"]

    first["metadata"]["labels"] = {"team": "web"}  # no spec change: nothing to decide again
    first["status"] = {"phase": "Unbound"}
    status, replaced = await call(s, "PUT", "/api/v1/placements/owned", json=first)
    assert status == 200 and replaced["metadata"]["generation"] == 1
    assert replaced["status"]["phase"] == "Bound" and replaced["status"]["selectedClusters"][0]["cluster"] == "sim-001"
    patch = {"status": {"phase": "Unbound"}, "spec": {"policy": "Binpack"}}
    status, patched = await call(s, "PATCH", "/api/v1/placements/owned", json=patch)
    assert status == 200 and patched["spec"]["policy"] == "Binpack" and patched["metadata"]["generation"] == 2
    assert patched["status"]["phase"] == "Bound" and patched["status"]["observedGeneration"] == 1
    again = await decided(s, "owned")
    assert again["status"]["observedGeneration"] == 2 and again["status"]["phase"] == "Bound"


async def test_cors_is_off_by_default_and_on_for_listed_origins(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    origin = "https://console.example"
    for origins, expect in (([], None), ([origin], origin)):
        cfg = daemon_config(nats_server.url, tmp_path, agents="metrics", **{"api.cors_origins": origins})
        async with running_daemon(cfg) as d, aiohttp.ClientSession(base_url=d.http.base_url) as s:
            async with s.get("/api/v1/placements", headers={"Origin": origin}) as r:
                assert r.status == 200 and r.headers.get("Access-Control-Allow-Origin") == expect
            preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
            async with s.options("/api/v1/placements", headers=preflight) as r:
                assert (r.headers.get("Access-Control-Allow-Origin") == origin) == bool(origins)
