"""The resource API over NATS: the `tmc` micro service, same types and errors as HTTP."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client

from tests.helpers import daemon_config, nats_connect, new_object, running_daemon, wait_for
from tmcd.resources.examples import example
from tmcd.runtime.embedded import EmbeddedNats

obj = new_object


@pytest.fixture
async def nc(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Client]:
    async with running_daemon(daemon_config(nats_server.url, tmp_path, agents="metrics,placement")):
        client = await nats_connect(nats_server.url)
        try:
            yield client
        finally:
            await client.close()


async def call(nc: Client, subject: str, body: dict[str, Any]) -> tuple[str, Any]:
    rep = await nc.request(subject, json.dumps(body).encode(), timeout=5)
    code = (rep.headers or {}).get("Nats-Service-Error-Code", "")
    return code, json.loads(rep.data) if rep.data else None


async def test_service_discovery(nc: Client) -> None:
    rep = await nc.request("$SRV.PING.tmc", b"", timeout=5)
    assert json.loads(rep.data)["name"] == "tmc"
    info = json.loads((await nc.request("$SRV.INFO.tmc", b"", timeout=5)).data)
    subjects = {e["subject"] for e in info["endpoints"]}
    assert {"tmc.api.list.placements", "tmc.api.create.canaryrollouts", "tmc.api.simulate.placements"} <= subjects
    lister = next(e for e in info["endpoints"] if e["subject"] == "tmc.api.list.placements")
    assert lister["metadata"] == {"kind": "Placement", "watch": "tmc.api.watch.placements", "bucket": "tmc-placements"}
    watcher = next(e for e in info["endpoints"] if e["subject"] == "tmc.api.watch.placements")
    assert watcher["metadata"]["kind"] == "Placement" and float(watcher["metadata"]["heartbeatSeconds"]) > 0
    await call(nc, "tmc.api.list.placements", {})
    stats = json.loads((await nc.request("$SRV.STATS.tmc", b"", timeout=5)).data)
    listed = next(e for e in stats["endpoints"] if e["subject"] == "tmc.api.list.placements")
    assert listed["num_requests"] >= 1


async def test_every_verb_and_errors(nc: Client) -> None:
    code, created = await call(
        nc,
        "tmc.api.create.canaryrollouts",
        {"namespace": "shop", "object": obj("CanaryRollout", name="co", namespace="shop")},
    )
    assert code == "" and created["metadata"]["generation"] == 1
    code, st = await call(
        nc,
        "tmc.api.create.canaryrollouts",
        {"namespace": "shop", "object": obj("CanaryRollout", name="co", namespace="shop")},
    )
    assert code == "409" and st["reason"] == "AlreadyExists"
    code, got = await call(nc, "tmc.api.get.canaryrollouts", {"namespace": "shop", "name": "co"})
    assert code == "" and got["metadata"]["name"] == "co"
    stale = copy.deepcopy(got)
    got["spec"]["canaryVersion"] = "v9"
    code, replaced = await call(
        nc, "tmc.api.replace.canaryrollouts", {"namespace": "shop", "name": "co", "object": got}
    )
    assert code == "" and replaced["metadata"]["generation"] == 2
    code, st = await call(nc, "tmc.api.replace.canaryrollouts", {"namespace": "shop", "name": "co", "object": stale})
    assert code == "409" and st["reason"] == "Conflict"
    code, patched = await call(
        nc,
        "tmc.api.patch.canaryrollouts",
        {"namespace": "shop", "name": "co", "patch": {"metadata": {"labels": {"a": "b"}}}},
    )
    assert code == "" and patched["metadata"]["labels"]["a"] == "b"
    code, listing = await call(nc, "tmc.api.list.canaryrollouts", {"labelSelector": "a=b"})
    assert code == "" and listing["kind"] == "CanaryRolloutList" and len(listing["items"]) == 1
    code, _ = await call(nc, "tmc.api.delete.canaryrollouts", {"namespace": "shop", "name": "co"})
    assert code == ""
    code, st = await call(nc, "tmc.api.get.canaryrollouts", {"namespace": "shop", "name": "co"})
    assert code == "404" and st["kind"] == "Status" and st["reason"] == "NotFound"
    code, st = await call(nc, "tmc.api.create.placements", {"object": obj("Placement", name="Bad_Name")})
    assert code == "422" and st["details"]["causes"][0]["field"] == "metadata.name"
    code, st = await call(nc, "tmc.api.get.canaryrollouts", {"name": "x"})
    assert code == "400" and "namespace" in st["message"]
    rep = await nc.request("tmc.api.list.placements", b"\x00garbage", timeout=5)
    assert rep.headers and rep.headers["Nats-Service-Error-Code"] == "400"


async def test_placement_over_nats_is_decided(nc: Client) -> None:
    code, _ = await call(nc, "tmc.api.create.synctargets", {"object": msgspec.to_builtins(example("SyncTarget"))})
    assert code == ""
    code, saved = await call(nc, "tmc.api.create.placements", {"object": obj("Placement", name="nats-web")})
    assert code == "" and saved["status"]["phase"] == "Pending"  # as stored; the placement agent decides it

    async def decided() -> dict[str, Any] | None:
        code, got = await call(nc, "tmc.api.get.placements", {"name": "nats-web"})
        assert code == "", got
        return got if got["status"].get("observedGeneration") == 1 else None

    got = await wait_for(decided, what="nats-web decided")
    assert {c["cluster"] for c in got["status"]["candidates"]} == {"sim-001"}
    code, patched = await call(
        nc, "tmc.api.patch.placements", {"name": "nats-web", "patch": {"status": {"phase": "Unbound"}}}
    )
    assert code == "" and patched["status"] == got["status"]  # status belongs to the placement agent
    code, sim = await call(nc, "tmc.api.simulate.placements", {"object": obj("Placement", name="nats-what-if")})
    assert code == "" and sim["candidates"]
    code, _ = await call(nc, "tmc.api.get.placements", {"name": "nats-what-if"})
    assert code == "404"
