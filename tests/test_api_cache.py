"""The watch cache against a real nats-server: reads reflect every acknowledged write, requests open
nothing on the server, readiness waits for the load, and a lost feed or bucket is recovered."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.apiserver import api_server, consumers
from tests.helpers import new_object, wait_for
from tmcd.api import cache as cache_module
from tmcd.api.cache import KindCache
from tmcd.api.context import ApiContext
from tmcd.api.errors import ApiError
from tmcd.api.index import Expired
from tmcd.bus import Bus
from tmcd.config import ApiConfig, Config, NatsConfig
from tmcd.kubectl.client import Client
from tmcd.kubectl.endpoint import Endpoint
from tmcd.kubectl.getcore import get as kubectl_get
from tmcd.kubectl.kinds import resolve
from tmcd.resources.examples import example
from tmcd.resources.kinds import PLACEMENT, SYNC_TARGET
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics


def cluster(name: str) -> dict[str, Any]:
    obj = msgspec.to_builtins(example("SyncTarget"))
    obj["metadata"] = {"name": name, "labels": {"region": "eu-west-1"}}
    return {"object": obj}


async def test_a_read_returns_every_write_acknowledged_before_it(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with api_server(nats_server.url, tmp_path) as api:
        for i in range(100):
            name = f"p-{i}"
            # written over one transport, read at once over the other
            if i % 2:
                status, _ = await api.call("POST", "/api/v1/placements", json=new_object("Placement", name=name))
                assert status == 201
                code, got = await api.request("tmc.api.get.placements", {"name": name})
                assert code == "" and got["metadata"]["name"] == name
                code, listing = await api.request("tmc.api.list.placements", {})
            else:
                code, _ = await api.request("tmc.api.create.placements", {"object": new_object("Placement", name=name)})
                assert code == ""
                status, got = await api.call("GET", f"/api/v1/placements/{name}")
                assert status == 200, got
                status, listing = await api.call("GET", "/api/v1/placements")
            assert len(listing["items"]) == i + 1
        patch = {"metadata": {"labels": {"tier": "gold"}}}
        status, patched = await api.call("PATCH", "/api/v1/placements/p-7", json=patch)
        code, got = await api.request("tmc.api.get.placements", {"name": "p-7"})
        assert got["metadata"]["labels"]["tier"] == "gold"
        assert got["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
        code, _ = await api.request("tmc.api.delete.placements", {"name": "p-7"})
        assert (await api.call("GET", "/api/v1/placements/p-7"))[0] == 404
        status, gold = await api.call("GET", "/api/v1/placements", params={"labelSelector": "tier=gold"})
        assert status == 200 and gold["items"] == []


@pytest.mark.slow
async def test_ten_thousand_lists_open_no_consumer(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with api_server(nats_server.url, tmp_path) as api:
        for i in range(20):
            assert (await api.request("tmc.api.create.synctargets", cluster(f"c-{i:02d}")))[0] == ""
        before = await consumers(api.bus)
        assert before == 5  # the cache's one feed per kind

        async def http(n: int) -> None:
            for _ in range(n):
                status, listing = await api.call("GET", "/api/v1/synctargets", params={"limit": "100"})
                assert status == 200 and len(listing["items"]) == 20

        async def nats(n: int) -> None:
            for _ in range(n):
                code, listing = await api.request("tmc.api.list.synctargets", {"limit": 100})
                assert code == "" and len(listing["items"]) == 20

        # 10,000 lists, half over each transport, 16 clients at a time
        await asyncio.gather(*(http(625) for _ in range(8)), *(nats(625) for _ in range(8)))
        assert await consumers(api.bus) == before


async def test_readiness_fails_until_every_kind_has_loaded(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    bus = Bus(NatsConfig(), SelfMetrics(), url=nats_server.url)
    ctx = ApiContext(ApiConfig(), lambda: bus)
    assert ctx.cache_check() == "the API cache is not started"
    ctx.start_cache()  # the bus is not connected yet: no kind can load
    try:
        await wait_for(lambda: "ConnectionError" in (ctx.cache_check() or ""), what="the feeds' failures reported")
        problem = ctx.cache_check() or ""
        assert problem.startswith("not loaded yet: synctargets, placements, canaryrollouts")
        with pytest.raises(ApiError) as info:
            await ctx.reads().list(PLACEMENT)  # a read waits, boundedly, then answers 503: never an empty list
        assert info.value.code == 503
        await bus.connect(retry=False)
        await bus.provision(Config())
        await wait_for(lambda: ctx.cache_check() is None, what="every kind loaded")
        assert (await ctx.reads().list(PLACEMENT)).items == []
    finally:
        await ctx.close_cache()
        await bus.close()


async def test_a_read_fails_rather_than_answer_stale(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = Bus(NatsConfig(), SelfMetrics(), url=nats_server.url)
    await bus.connect(retry=False)
    await bus.provision(Config())
    kc = KindCache(PLACEMENT, lambda: bus)
    try:
        with pytest.raises(ApiError) as info:
            await kc.fresh(timeout=0.05)
        assert info.value.code == 503 and "still loading" in info.value.message
        stop = asyncio.Event()
        feed = asyncio.create_task(kc.run(stop))
        await wait_for(lambda: kc.loaded, what="loaded")
        assert await kc.fresh() == 0
        stop.set()  # the feed stops: the cache falls behind the next write
        await feed
        store = await bus.kv(PLACEMENT.bucket, PLACEMENT.type)
        await store.put("p", example("Placement"))  # type: ignore[arg-type]
        with pytest.raises(ApiError) as info:
            await kc.fresh(timeout=0.2)
        assert info.value.code == 504 and info.value.reason == "Timeout"
    finally:
        await kc.close()
        await bus.close()


async def test_a_lost_feed_is_restarted(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "STALL_AFTER", 0.1)
    async with api_server(nats_server.url, tmp_path) as api:
        assert (await api.request("tmc.api.create.placements", {"object": new_object("Placement", name="a")}))[0] == ""
        # the server loses the cache's consumer (as after a restart of a nats-server without its store)
        stream = f"KV_{PLACEMENT.bucket}"
        for name in await api.bus.js.consumers_info(stream):
            await api.bus.js.delete_consumer(stream, name.name)
        assert (await api.request("tmc.api.create.placements", {"object": new_object("Placement", name="b")}))[0] == ""

        async def both() -> bool:
            status, listing = await api.call("GET", "/api/v1/placements")
            return status == 200 and len(listing["items"]) == 2

        await wait_for(both, what="the write after the loss")
        assert await consumers(api.bus) == 5


async def test_the_cache_survives_a_nats_server_restart(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with api_server(nats_server.url, tmp_path) as api:
        assert (await api.request("tmc.api.create.placements", {"object": new_object("Placement", name="a")}))[0] == ""
        port = int(nats_server.url.rsplit(":", 1)[1])
        await asyncio.to_thread(nats_server.stop)
        await wait_for(lambda: not api.bus.connected, what="the bus saw the server go")
        nats_server.port = port  # the same port, as tmcd's embedded server comes back
        await asyncio.to_thread(nats_server.start)
        await wait_for(lambda: api.bus.connected, timeout=20, what="the bus reconnected")

        async def written() -> bool:
            status, _ = await api.call("POST", "/api/v1/placements", json=new_object("Placement", name="b"))
            return status in (201, 409)

        await wait_for(written, timeout=20, what="a write after the restart")

        async def both() -> bool:
            status, listing = await api.call("GET", "/api/v1/placements")
            return status == 200 and [i["metadata"]["name"] for i in listing["items"]] == ["a", "b"]

        await wait_for(both, timeout=20, what="both placements listed")


async def test_a_re_created_bucket_is_loaded_again(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with api_server(nats_server.url, tmp_path) as api:
        for name in ("a", "b", "c"):
            assert (await api.request("tmc.api.create.placements", {"object": new_object("Placement", name=name)}))[
                0
            ] == ""
        reads = api.ctx.reads()
        watch = await reads.watch(PLACEMENT, "", selector=None, name="", resource_version="")
        try:
            await api.bus.js.delete_key_value(PLACEMENT.bucket)
            await api.bus.provision(Config())  # back, empty, its revisions starting again at 1
            assert (await api.request("tmc.api.create.placements", {"object": new_object("Placement", name="z")}))[
                0
            ] == ""

            async def only_z() -> bool:
                status, listing = await api.call("GET", "/api/v1/placements")
                return status == 200 and [i["metadata"]["name"] for i in listing["items"]] == ["z"]

            await wait_for(only_z, what="the new bucket's only placement")
            with pytest.raises(Expired, match="loaded again"):  # a watch of the old bucket cannot go on
                watch.take()
        finally:
            watch.close()


async def test_a_watch_that_falls_behind_the_window_is_expired(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with api_server(nats_server.url, tmp_path, window=4) as api:
        reads = api.ctx.reads()
        watch = await reads.watch(SYNC_TARGET, "", selector=None, name="", resource_version="")
        try:
            for i in range(6):  # more than the window while the watcher takes nothing
                assert (await api.request("tmc.api.create.synctargets", cluster(f"c-{i}")))[0] == ""
            await reads.list(SYNC_TARGET)  # caught up
            with pytest.raises(Expired, match="more than 4 events behind"):
                watch.take()
        finally:
            watch.close()
        assert reads.watching == 0


@pytest.mark.slow
async def test_get_clusters_never_prints_an_empty_fleet(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with api_server(nats_server.url, tmp_path) as api:
        for i in range(20):
            assert (await api.request("tmc.api.create.synctargets", cluster(f"sim-{i + 1:03d}")))[0] == ""
        kind = resolve("clusters")
        assert kind is not None

        def thousand_gets() -> list[int]:
            rows = []
            for _ in range(1000):  # each as the plugin runs it: a connection of its own
                client = Client(Endpoint("nats", nats_server.url))
                try:
                    result = kubectl_get(client, kind, [], namespace="default", all_namespaces=False)
                finally:
                    client.close()
                rows.append(len(result.out.splitlines()) - 1)  # the header
            return rows

        rows = await asyncio.to_thread(thousand_gets)
        assert rows == [20] * 1000
        for _ in range(10):  # and as real processes
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from tmcd.kubectl.main import main; main()",
                "get", "clusters", "-o", "json", "--nats-url", nats_server.url,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            assert proc.returncode == 0, err
            assert len(json.loads(out)["items"]) == 20
