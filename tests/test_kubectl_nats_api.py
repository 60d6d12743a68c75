"""What ``kubectl tmc`` sends over NATS besides the body: the token as an ``Authorization``
header on every ``tmc.api.*`` request, and the health request behind LAST HEARTBEAT.

A real daemon (no health agent) serves the resource API; a plain subscriber on ``tmc.api.>``
sees every request as the server does, and a stand-in for the health agent answers
``tmc.api.get.health`` with heartbeats newer than the stored SyncTarget status.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import daemon_config, kubectl_tmc_async, nats_connect, new_object, running_daemon, wait_for
from tmcd.kubectl.output import parse_time, rfc3339
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import EmbeddedNats

KUBECTL_TMC = str(Path(sys.executable).parent / "kubectl-tmc")
STALE = 3600.0
"""How old the stored heartbeat of the seeded clusters is (a persisted status lags ~30 s in life)."""


class Observed:
    """Every ``tmc.api.*`` request seen, once :meth:`start` ed: (subject, headers).  The observer
    counts as a responder, so a request nobody else answers then times out instead of failing
    at once with "no responders"."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def start(self) -> None:
        async def observe(msg: Any) -> None:
            self.requests.append((msg.subject, dict(msg.headers or {})))

        await self.nc.subscribe("tmc.api.>", cb=observe)
        await self.nc.flush()

    def headers_of(self, prefix: str) -> list[dict[str, str]]:
        return [h for s, h in self.requests if s.startswith(prefix)]


@pytest.fixture
async def api(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[tuple[Daemon, Observed]]:
    async with running_daemon(daemon_config(nats_server.url, tmp_path, agents="metrics")) as d:
        nc = await nats_connect(nats_server.url)
        seen = Observed(nc)
        for name in ("sim-001", "sim-002"):
            obj = new_object("SyncTarget", name=name)
            status = {"health": "Healthy", "lastSyncerHeartbeatTime": rfc3339(time.time() - STALE)}
            rep = await nc.request("tmc.api.create.synctargets", json.dumps({"object": obj}).encode(), timeout=5)
            req = {"name": name, "object": {**json.loads(rep.data), "status": status}}  # a create stores no status
            await nc.request("tmc.api.replacestatus.synctargets", json.dumps(req).encode(), timeout=5)
        await nc.flush()
        try:
            yield d, seen
        finally:
            await nc.close()


async def _health_agent(url: str, beats: dict[str, float], answer: bool = True) -> Callable[[], Awaitable[None]]:
    """Answer tmc.api.get.health as the health agent would (or, with ``answer=False``, never)."""
    nc = await nats_connect(url)

    async def handle(msg: Any) -> None:
        if not answer:
            return
        clusters = [{"name": n, "status": "Healthy", "last_heartbeat": t} for n, t in beats.items()]
        report = {
            "schema": 1,
            "timestamp": time.time(),
            "fleet": {"name": "fleet", "status": "Healthy"},
            "locations": [{"name": "eu-west-1", "status": "Healthy", "clusters": clusters}],
        }
        await msg.respond(json.dumps(report).encode())

    await nc.subscribe("tmc.api.get.health", cb=handle)
    await nc.flush()
    return nc.close


def _heartbeat_column(out: str) -> dict[str, str]:
    lines = out.splitlines()
    start = lines[0].index("LAST HEARTBEAT")
    return {line.split()[0]: line[start:].split()[0] for line in lines[1:]}


async def test_token_header_on_every_api_request(api: tuple[Daemon, Observed], nats_server: EmbeddedNats) -> None:
    _, seen = api
    await seen.start()
    close = await _health_agent(nats_server.url, {})  # answers at once (the observer never does)
    try:
        code, out = await kubectl_tmc_async("get", "clusters", "--token", "s3cret", "--nats-url", nats_server.url)
        assert code == 0 and "sim-001" in out, out
        code, out = await kubectl_tmc_async(
            "get", "cl", "sim-001", "-o", "name", "--token", "s3cret", "--nats-url", nats_server.url
        )
        assert code == 0, out
        await wait_for(lambda: seen.headers_of("tmc.api.get.synctargets"), what="the observer to see the get")
        list_h, get_h = seen.headers_of("tmc.api.list.synctargets"), seen.headers_of("tmc.api.get.synctargets")
        health_h = seen.headers_of("tmc.api.get.health")
        assert list_h and get_h and health_h
        assert all(h.get("Authorization") == "Bearer s3cret" for h in (*list_h, *get_h, *health_h))
    finally:
        await close()


async def test_token_from_the_environment_in_the_real_process(
    api: tuple[Daemon, Observed], nats_server: EmbeddedNats
) -> None:
    _, seen = api
    await seen.start()
    env = {**os.environ, "TMC_TOKEN": "from-env", "TMC_NATS_URL": nats_server.url}
    proc = await asyncio.create_subprocess_exec(
        KUBECTL_TMC,
        "get",
        "clusters",
        "-o",
        "name",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert out.decode().split() == ["synctarget.workload.kcp.io/sim-001", "synctarget.workload.kcp.io/sim-002"]
    await wait_for(lambda: seen.headers_of("tmc.api.list."), what="the observer to see the list")
    assert [h.get("Authorization") for h in seen.headers_of("tmc.api.list.")] == ["Bearer from-env"]


async def test_no_token_no_header(api: tuple[Daemon, Observed], nats_server: EmbeddedNats) -> None:
    _, seen = api
    await seen.start()
    code, out = await kubectl_tmc_async("get", "placements", "--nats-url", nats_server.url)
    assert code == 0, out
    await wait_for(lambda: seen.headers_of("tmc.api.list.placements"), what="the observer to see the list")
    assert seen.headers_of("tmc.api.list.placements") == [{}]


async def test_last_heartbeat_from_the_health_agent(api: tuple[Daemon, Observed], nats_server: EmbeddedNats) -> None:
    daemon, _ = api
    close = await _health_agent(nats_server.url, {"sim-001": time.time() - 13})
    try:
        code, out = await kubectl_tmc_async("get", "clusters", "--nats-url", nats_server.url)
        assert code == 0, out
        beats = _heartbeat_column(out)
        assert beats["sim-001"] in {f"{s}s" for s in range(13, 20)}, out  # the latest heartbeat, not the stored one
        assert beats["sim-002"] == "60m", out  # not in the report: the stored value
        code, out = await kubectl_tmc_async("get", "clusters", "-o", "wide", "--server", daemon.http.base_url)
        assert code == 0 and _heartbeat_column(out)["sim-001"] in {f"{s}s" for s in range(13, 20)}, out
        code, out = await kubectl_tmc_async("sync", "status", "--nats-url", nats_server.url)
        assert code == 0 and _heartbeat_column(out)["sim-001"] in {f"{s}s" for s in range(13, 20)}, out
        # JSON shows the object as stored
        code, out = await kubectl_tmc_async("get", "cl", "sim-001", "-o", "json", "--nats-url", nats_server.url)
        stored = parse_time(json.loads(out)["status"]["lastSyncerHeartbeatTime"])
        assert code == 0 and stored is not None and time.time() - stored >= STALE - 60
    finally:
        await close()


@pytest.mark.parametrize("answer", [None, False], ids=["no-health-agent", "silent-health-agent"])
async def test_stored_heartbeat_when_the_health_agent_does_not_answer(
    api: tuple[Daemon, Observed], nats_server: EmbeddedNats, answer: bool | None
) -> None:
    close = await _health_agent(nats_server.url, {}, answer=False) if answer is False else None
    try:
        started = time.monotonic()
        # no health agent: "no responders" at once; a silent one: HEALTH_TIMEOUT (2 s) at most
        code, out = await kubectl_tmc_async("get", "clusters", "--nats-url", nats_server.url)
        assert code == 0 and out.count("\n") == 3 and "error" not in out, out
        assert _heartbeat_column(out) == {"sim-001": "60m", "sim-002": "60m"}
        assert time.monotonic() - started < 10
    finally:
        if close is not None:
            await close()
