"""kube-apiserver conventions of the resource API, over real HTTP and NATS against a daemon on a real
nats-server: status only through /status, generation and creationTimestamp, media types, size limits,
Status bodies for every error, one authorization model on both transports, canary control."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from nats.aio.client import Client

from tests.helpers import daemon_config, nats_connect, new_object, running_daemon, wait_for
from tmcd.contracts.codec import decode_as, encode
from tmcd.contracts.messages import CanaryControl, ControlReply
from tmcd.resources.examples import example
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import EmbeddedNats

RW = "rw-token-0123456789abcdef"
RO = "ro-token-0123456789abcdef"
TOKENS = [{"name": "ci", "token": RW, "access": "read-write"}, {"name": "viewer", "token": RO, "access": "read-only"}]
CR = "/api/v1/namespaces/shop/canaryrollouts"
JSON = {"Content-Type": "application/json"}
MAX = 64 * 1024


@pytest.fixture
async def api(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[tuple[Daemon, aiohttp.ClientSession, Client]]:
    cfg = daemon_config(
        nats_server.url, tmp_path, agents="metrics", **{"api.tokens": TOKENS, "api.max_object_bytes": MAX}
    )
    async with (
        running_daemon(cfg) as d,
        aiohttp.ClientSession(base_url=d.http.base_url, headers={"Authorization": f"Bearer {RW}"}) as s,
    ):
        nc = await nats_connect(nats_server.url)
        try:
            yield d, s, nc
        finally:
            await nc.close()


async def call(s: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with s.request(method, path, **kw) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else None


async def nats(nc: Client, subject: str, body: dict[str, Any], token: str | None = RW) -> tuple[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    rep = await nc.request(subject, json.dumps(body).encode(), timeout=5, headers=headers)
    code = (rep.headers or {}).get("Nats-Service-Error-Code", "")
    return code, json.loads(rep.data) if rep.data else None


def forged_rollout() -> dict[str, Any]:
    """The documented CanaryRollout example as a user would apply it: its status included."""
    obj = msgspec.to_builtins(example("CanaryRollout"))
    for k in ("resourceVersion", "uid", "creationTimestamp", "generation"):
        obj["metadata"].pop(k, None)
    assert obj["status"]["phase"] == "Progressing"
    return obj  # type: ignore[no-any-return]


def is_status(body: Any, code: int) -> bool:
    return (
        isinstance(body, dict)
        and body.get("kind") == "Status"
        and body.get("apiVersion") == "v1"
        and body.get("code") == code
        and bool(body.get("reason"))
        and bool(body.get("message"))
    )


async def test_status_is_ignored_on_create_and_update_over_both_transports(
    api: tuple[Daemon, aiohttp.ClientSession, Client],
) -> None:
    _, s, nc = api
    status, created = await call(s, "POST", CR, json=forged_rollout())
    assert status == 201, created
    assert created["status"]["phase"] == "Pending" and not created["status"].get("currentAnalysisRun")
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    forged = forged_rollout()
    forged["metadata"]["resourceVersion"] = meta["resourceVersion"]
    forged["metadata"]["labels"]["team"] = "payments"  # metadata only: generation stays
    status, replaced = await call(s, "PUT", f"{CR}/checkout", json=forged)
    assert status == 200 and replaced["status"]["phase"] == "Pending" and replaced["metadata"]["generation"] == 1
    assert replaced["metadata"]["creationTimestamp"] == meta["creationTimestamp"]
    patch = {"status": {"phase": "Succeeded"}, "metadata": {"labels": {"tier": "gold"}}}
    status, patched = await call(s, "PATCH", f"{CR}/checkout", json=patch)
    assert status == 200 and patched["status"]["phase"] == "Pending" and patched["metadata"]["generation"] == 1
    json_patch = [{"op": "replace", "path": "/spec/canaryVersion", "value": "v2.0.9"}]
    headers = {"Content-Type": "application/json-patch+json"}
    status, spec_changed = await call(s, "PATCH", f"{CR}/checkout", data=json.dumps(json_patch), headers=headers)
    assert status == 200 and spec_changed["spec"]["canaryVersion"] == "v2.0.9"
    assert spec_changed["metadata"]["generation"] == 2

    # NATS: the same rules
    code, over_nats = await nats(nc, "tmc.api.create.canaryrollouts", {"namespace": "shop", "object": {
        **forged_rollout(), "metadata": {"name": "other"}}})  # fmt: skip
    assert code == "", over_nats
    assert over_nats["status"]["phase"] == "Pending" and over_nats["metadata"]["namespace"] == "shop"
    code, kept = await nats(nc, "tmc.api.patch.canaryrollouts", {
        "namespace": "shop", "name": "other", "patch": {"status": {"phase": "Failed"}}})  # fmt: skip
    assert code == "" and kept["status"]["phase"] == "Pending" and kept["metadata"]["generation"] == 1


async def test_the_status_subresource(api: tuple[Daemon, aiohttp.ClientSession, Client]) -> None:
    _, s, nc = api
    _, created = await call(s, "POST", CR, json=forged_rollout())
    body = copy.deepcopy(created)
    body["status"] = {"phase": "Progressing", "currentStepIndex": 1}
    body["spec"]["canaryVersion"] = "v9"  # ignored: only the status is written
    body["metadata"]["labels"] = {"ignored": "yes"}
    status, written = await call(s, "PUT", f"{CR}/checkout/status", json=body)
    assert status == 200, written
    assert written["status"]["phase"] == "Progressing" and written["status"]["currentStepIndex"] == 1
    assert written["spec"] == created["spec"] and written["metadata"]["labels"] == created["metadata"]["labels"]
    assert written["metadata"]["generation"] == 1
    status, stale = await call(s, "PUT", f"{CR}/checkout/status", json=body)  # body's resourceVersion is old now
    assert status == 409 and is_status(stale, 409) and stale["reason"] == "Conflict"

    merge = {"status": {"phase": "Paused"}, "spec": {"canaryVersion": "v9"}}
    headers = {"Content-Type": "application/merge-patch+json"}
    status, paused = await call(s, "PATCH", f"{CR}/checkout/status", data=json.dumps(merge), headers=headers)
    assert status == 200 and paused["status"]["phase"] == "Paused" and paused["spec"] == created["spec"]
    pinned = [
        {"op": "test", "path": "/status/phase", "value": "Paused"},
        {"op": "replace", "path": "/status/phase", "value": "Progressing"},
        {"op": "replace", "path": "/metadata/resourceVersion", "value": written["metadata"]["resourceVersion"]},
    ]
    headers = {"Content-Type": "application/json-patch+json"}
    status, conflict = await call(s, "PATCH", f"{CR}/checkout/status", data=json.dumps(pinned), headers=headers)
    assert status == 409 and is_status(conflict, 409)
    failing = [pinned[0], {"op": "test", "path": "/status/phase", "value": "Nope"}]
    status, failed = await call(s, "PATCH", f"{CR}/checkout/status", data=json.dumps(failing), headers=headers)
    assert status == 422 and is_status(failed, 422)
    status, missing = await call(s, "PUT", "/api/v1/namespaces/shop/analysistemplates/x/status", json=body)
    assert status in (404, 405) and is_status(missing, status)  # a kind without status has no subresource

    # NATS: tmc.api.replacestatus / patchstatus, with the same optimistic concurrency
    code, got = await nats(nc, "tmc.api.get.canaryrollouts", {"namespace": "shop", "name": "checkout"})
    got["status"] = {"phase": "Succeeded"}
    got["spec"]["canaryVersion"] = "v10"
    req = {"namespace": "shop", "name": "checkout", "object": got}
    code, done = await nats(nc, "tmc.api.replacestatus.canaryrollouts", req)
    assert code == "" and done["status"]["phase"] == "Succeeded" and done["spec"] == created["spec"]
    code, conflict = await nats(nc, "tmc.api.replacestatus.canaryrollouts", req)
    assert code == "409" and conflict["reason"] == "Conflict"
    ops = [{"op": "replace", "path": "/status/phase", "value": "RolledBack"}]
    req = {"namespace": "shop", "name": "checkout", "patch": ops, "patchType": "json"}
    code, rolled = await nats(nc, "tmc.api.patchstatus.canaryrollouts", req)
    assert code == "" and rolled["status"]["phase"] == "RolledBack"
    code, denied = await nats(nc, "tmc.api.patchstatus.canaryrollouts", req, token=RO)
    assert code == "403" and denied["reason"] == "Forbidden"


async def test_names_and_namespaces_as_kube_apiserver(api: tuple[Daemon, aiohttp.ClientSession, Client]) -> None:
    _, s, _ = api
    obj = new_object("AnalysisTemplate", name="tpl")
    obj["metadata"].pop("namespace")
    status, created = await call(s, "POST", "/api/v1/namespaces/shop/analysistemplates", json=obj)
    assert status == 201 and created["metadata"]["namespace"] == "shop"  # filled from the URL
    other = new_object("AnalysisTemplate", name="tpl2", namespace="elsewhere")
    status, st = await call(s, "POST", "/api/v1/namespaces/shop/analysistemplates", json=other)
    assert status == 400 and is_status(st, 400) and "namespace" in st["message"]
    created["metadata"]["name"] = "renamed"
    status, st = await call(s, "PUT", "/api/v1/namespaces/shop/analysistemplates/tpl", json=created)
    assert status == 400 and st["reason"] == "BadRequest" and "does not match the name on the URL" in st["message"]
    cluster = new_object("SyncTarget", name="c1", namespace="shop")  # cluster-scoped: the namespace is cleared
    status, st = await call(s, "POST", "/api/v1/synctargets", json=cluster)
    assert status == 201 and not st["metadata"].get("namespace") and st["metadata"]["creationTimestamp"]


async def test_media_types(api: tuple[Daemon, aiohttp.ClientSession, Client]) -> None:
    _, s, _ = api
    raw = json.dumps(new_object("Placement", name="typed"))
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/yaml"):
        status, st = await call(s, "POST", "/api/v1/placements", data=raw, headers={"Content-Type": ctype})
        assert status == 415 and is_status(st, 415) and ctype in st["message"], (ctype, st)
    status, st = await call(s, "POST", "/api/v1/placements", data=raw.encode())  # no Content-Type at all
    assert status == 415 and is_status(st, 415)
    status, _ = await call(
        s, "POST", "/api/v1/placements", data=raw, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 201
    patch = json.dumps({"metadata": {"labels": {"a": "b"}}})
    for ctype, want in (("application/json", 200), ("application/merge-patch+json", 200), ("text/plain", 415),
                        ("application/strategic-merge-patch+json", 415)):  # fmt: skip
        status, st = await call(s, "PATCH", "/api/v1/placements/typed", data=patch, headers={"Content-Type": ctype})
        assert status == want, (ctype, st)
    status, st = await call(s, "PATCH", "/api/v1/placements/typed", data=patch,
                            headers={"Content-Type": "application/json-patch+json"})  # fmt: skip
    assert status == 400 and is_status(st, 400) and "array" in st["message"]


async def test_size_limits_over_both_transports(api: tuple[Daemon, aiohttp.ClientSession, Client]) -> None:
    _, s, nc = api
    big = new_object("Placement", name="big", annotations={"blob": "x" * (MAX + 10)})
    status, st = await call(s, "POST", "/api/v1/placements", json=big)
    assert status == 413 and is_status(st, 413), st
    code, st = await nats(nc, "tmc.api.create.placements", {"object": big})
    assert code == "413" and st["reason"] == "RequestEntityTooLarge"
    # a merge patch that makes an object too large (each request small)
    assert (await call(s, "POST", "/api/v1/placements", json=new_object("Placement", name="grows")))[0] == 201
    half = {"metadata": {"annotations": {"a": "y" * (MAX // 2 + 100)}}}
    assert (await call(s, "PATCH", "/api/v1/placements/grows", json=half))[0] == 200
    half = {"metadata": {"annotations": {"b": "z" * (MAX // 2 + 100)}}}
    status, st = await call(s, "PATCH", "/api/v1/placements/grows", json=half)
    assert status == 413 and is_status(st, 413)
    code, st = await nats(nc, "tmc.api.patch.placements", {"name": "grows", "patch": half})
    assert code == "413"


async def test_annotations_are_capped_at_256k(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics")  # default max_object_bytes (768 KiB)
    async with running_daemon(cfg) as d, aiohttp.ClientSession(base_url=d.http.base_url) as s:
        big = new_object("Placement", name="annotated", annotations={"note": "n" * (256 * 1024)})
        status, st = await call(s, "POST", "/api/v1/placements", json=big)
        assert status == 422 and is_status(st, 422)
        assert [c["field"] for c in st["details"]["causes"]] == ["metadata.annotations"]
        huge = new_object("Placement", name="huge", annotations={"a": "n" * 200_000, "b": "n" * 200_000,
                                                                 "c": "n" * 200_000, "d": "n" * 200_000})  # fmt: skip
        status, st = await call(s, "POST", "/api/v1/placements", json=huge)
        assert status == 413 and is_status(st, 413)


async def test_every_error_is_a_status(
    api: tuple[Daemon, aiohttp.ClientSession, Client], caplog: pytest.LogCaptureFixture
) -> None:
    d, s, _ = api
    status, st = await call(s, "GET", "/api/v1/nothing-here")
    assert status == 404 and is_status(st, 404)
    status, st = await call(s, "DELETE", "/api/v1/placements")
    assert status == 405 and is_status(st, 405) and st["reason"] == "MethodNotAllowed"
    status, st = await call(s, "PUT", "/api/v1/placements", data=b"x" * (MAX + 1), headers=JSON)
    assert status in (405, 413) and is_status(st, status)
    status, st = await call(s, "POST", "/api/v1/placements", data=b"x" * (MAX + 1), headers=JSON)
    assert status == 413 and is_status(st, 413)
    async with s.get("/docs/", allow_redirects=False) as r:
        assert r.status in (301, 308) and r.headers["Location"] == "/docs"

    # an over-long URL: aiohttp's parser refuses it before any handler; a Status, and no traceback logged
    host, port = d.http.base_url.removeprefix("http://").rsplit(":", 1)
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /api/v1/placements?x=" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        body = await asyncio.wait_for(reader.read(), 5)  # the server closes the connection
    finally:
        writer.close()
        await writer.wait_closed()
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"414", head
    assert is_status(json.loads(body), 414)
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "aiohttp" in r.name]


async def test_health_is_camel_case_over_http(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics,health")
    async with running_daemon(cfg) as d, aiohttp.ClientSession(base_url=d.http.base_url) as s:
        status, tree = await call(s, "GET", "/api/v1/health")
        assert status == 200 and "locationLabel" in tree and "location_label" not in tree
        nc = await nats_connect(nats_server.url)
        try:
            rep = await nc.request("tmc.api.get.health", b"{}", timeout=5)
            assert "location_label" in json.loads(rep.data)  # the NATS contract stays snake_case
        finally:
            await nc.close()


@pytest.mark.parametrize("transport", ["http", "nats"])
async def test_one_authorization_model(api: tuple[Daemon, aiohttp.ClientSession, Client], transport: str) -> None:
    d, _, nc = api
    obj = new_object("Placement", name=f"auth-{transport}")

    async def write(token: str | None) -> int:
        if transport == "nats":
            code, st = await nats(nc, "tmc.api.create.placements", {"object": obj}, token=token)
            assert code == "" or st["kind"] == "Status"
            return int(code or 201)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession(base_url=d.http.base_url) as anon:
            status, st = await call(anon, "POST", "/api/v1/placements", json=obj, headers=headers)
            assert status == 201 or is_status(st, status)
            return status

    assert await write(None) == 401  # missing
    assert await write("not-a-token-at-all-000") == 401
    assert await write(RO) == 403  # read-only
    assert await write(RW) == 201  # allowed
    if transport == "nats":
        code, _ = await nats(nc, "tmc.api.delete.placements", {"name": obj["metadata"]["name"]}, token=None)
        assert code == "401"  # `kubectl tmc delete` without a token no longer deletes
        code, _ = await nats(nc, "tmc.api.list.placements", {}, token=None)
        assert code == ""  # reads stay open (api.require_auth_for_reads is off)


async def test_canary_control_over_http(api: tuple[Daemon, aiohttp.ClientSession, Client]) -> None:
    d, s, nc = api
    got: list[tuple[str, CanaryControl]] = []

    async def controller(msg: Any) -> None:
        req = decode_as(CanaryControl, msg.data)
        got.append((msg.subject, req))
        code = 409 if req.action == "resume" else 200
        reply = ControlReply(ok=code == 200, target=f"{req.namespace}/{req.name}", code=code, state=req.action)
        await msg.respond(encode(reply))

    sub = await nc.subscribe("tmc.ctl.canary.shop.*.*", cb=controller)
    await nc.flush()
    try:
        status, rep = await call(s, "POST", f"{CR}/checkout/promote", json={"full": True, "reason": "looks good"})
        assert status == 200 and rep["ok"] and rep["state"] == "promote", rep
        subject, req = got[-1]
        assert subject == "tmc.ctl.canary.shop.checkout.promote" and req.full and req.reason == "looks good"
        assert req.requested_by == "ci"  # the token's name
        status, rep = await call(s, "POST", f"{CR}/checkout/pause")  # no body
        assert status == 200 and got[-1][1].action == "pause" and not got[-1][1].full
        status, rep = await call(s, "POST", f"{CR}/checkout/resume", json={})
        assert status == 409 and rep["ok"] is False and rep["code"] == 409
        status, st = await call(s, "POST", f"{CR}/checkout/abort", data="x", headers={"Content-Type": "text/plain"})
        assert status == 415 and is_status(st, 415)
        async with aiohttp.ClientSession(base_url=d.http.base_url) as anon:
            status, st = await call(anon, "POST", f"{CR}/checkout/abort", headers={"Authorization": f"Bearer {RO}"})
            assert status == 403 and is_status(st, 403)
    finally:
        await sub.unsubscribe()
    n = len(got)
    status, st = await call(s, "POST", "/api/v1/namespaces/nobody/canaryrollouts/x/retry")
    assert status == 503 and is_status(st, 503) and len(got) == n


async def test_agents_create_synctargets_with_a_creation_timestamp(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    from tmcd.contracts.messages import SyncerHeartbeat

    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics,health", **{"health.interval": 0.2})
    async with running_daemon(cfg) as d, aiohttp.ClientSession(base_url=d.http.base_url) as s:
        nc = await nats_connect(nats_server.url)
        try:
            hb = SyncerHeartbeat(cluster="hb-001", timestamp=1.0e9, labels={"region": "eu"})
            await nc.publish("tmc.syncer.hb-001.heartbeat", encode(hb))
            await nc.flush()

            async def stored() -> dict[str, Any] | None:
                status, obj = await call(s, "GET", "/api/v1/synctargets/hb-001")
                return obj if status == 200 and obj["status"].get("lastSyncerHeartbeatTime") else None

            obj = await wait_for(stored, what="SyncTarget hb-001 with its status")
        finally:
            await nc.close()
    meta = obj["metadata"]
    assert meta["creationTimestamp"].endswith("Z") and meta["uid"] and meta["generation"] == 1
    assert meta["labels"] == {"region": "eu"}
