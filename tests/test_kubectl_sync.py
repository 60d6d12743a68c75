"""`kubectl tmc sync`: status from the SyncTargets, pause/resume/force answered by the (simulated) syncers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import daemon_config, kubectl_tmc_async, running_daemon, wait_for
from tmcd.bus import Bus
from tmcd.config import NatsConfig
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.sim.model import SimOptions
from tmcd.sim.runner import run_sim

FAST = {"agents": "health", "health.interval": 0.1, "health.startup_grace": 0.0}


@pytest.fixture
async def fleet(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[str]:
    async with running_daemon(daemon_config(nats_server.url, tmp_path, **FAST)):
        bus = Bus(NatsConfig(), SelfMetrics(), url=nats_server.url)
        await bus.connect(retry=False)
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_sim(bus, SimOptions(clusters=3, rate=50.0, heartbeat_interval=0.1), stop, tick=0.02)
        )
        try:
            yield nats_server.url
        finally:
            stop.set()
            await task
            await bus.close()


async def test_pause_status_resume_force(fleet: str) -> None:
    url = fleet

    async def three_known() -> bool:
        code, out = await kubectl_tmc_async("sync", "status", "--nats-url", url)
        return code == 0 and all(f"sim-00{i}" in out for i in (1, 2, 3))

    await wait_for(three_known, what="three clusters in sync status")
    code, out = await kubectl_tmc_async("sync", "pause", "sim-002", "--nats-url", url)
    assert (code, out) == (0, "sim-002: paused\n")

    async def paused() -> bool:
        _, out = await kubectl_tmc_async("sync", "status", "sim-002", "--nats-url", url)
        return out.splitlines()[1].split()[1] == "true"

    await wait_for(paused, what="PAUSED true for sim-002")
    _, out = await kubectl_tmc_async("sync", "status", "--nats-url", url)
    assert out.splitlines()[0].split() == [
        "CLUSTER",
        "PAUSED",
        "QUEUE",
        "LAST",
        "HEARTBEAT",
        "ERRORS",
        "RESOURCES",
        "STATUS",
    ]

    code, out = await kubectl_tmc_async("sync", "force", "sim-002", "--nats-url", url)
    assert code == 1 and "sim-002: refused (409)" in out  # a paused syncer cannot re-sync
    code, out = await kubectl_tmc_async("sync", "resume", "--all", "--nats-url", url)
    assert code == 0 and sorted(out.splitlines()) == ["sim-001: running", "sim-002: running", "sim-003: running"]
    code, out = await kubectl_tmc_async("sync", "force", "sim-001", "--nats-url", url)
    assert (code, out) == (0, "sim-001: resyncing\n")


async def test_unacknowledged_cluster_fails(fleet: str) -> None:
    # both answer (the simulator refuses the cluster it does not know): a generous bound on the replies
    code, out = await kubectl_tmc_async("sync", "pause", "sim-001", "nope-9", "--nats-url", fleet, "--timeout", "10")
    assert code == 1
    assert "sim-001: paused" in out and "nope-9: refused (404)" in out


async def test_no_syncer_answering(nats_server: EmbeddedNats) -> None:
    code, out = await kubectl_tmc_async("sync", "pause", "lonely-1", "--nats-url", nats_server.url, "--timeout", "1")
    assert code == 1 and out == "lonely-1: no syncer answered (no responders)\n"


async def test_usage_errors() -> None:
    code, out = await kubectl_tmc_async("sync", "pause", "--nats-url", "nats://127.0.0.1:1")
    assert code == 2 and "give one or more clusters" in out


@pytest.mark.parametrize("action", ["pause", "resume", "force"])
@pytest.mark.parametrize("name", ["sim-*", "sim.001", ">", "Sim-001", "sim-", "a" * 64, "sim 1", ""])
async def test_names_that_are_no_subject_token_are_refused_before_sending(action: str, name: str) -> None:
    # an unreachable URL: had anything been sent, this would fail with "cannot reach" (exit 1)
    code, out = await kubectl_tmc_async("sync", action, "sim-001", name, "--nats-url", "nats://127.0.0.1:1")
    assert code == 2 and len(out.splitlines()) == 1, out
    assert out.startswith(f"error: cluster {name!r} is not a valid name: want a DNS-1123 label")
    if "*" in name or ">" in name:
        assert "wildcards are not supported, use --all or -l SELECTOR" in out


async def test_wildcard_is_not_dead_lettered(nats_server: EmbeddedNats) -> None:
    """The syncer side never sees the request: nothing arrives on tmc.ctl.> (nor its dead letters)."""
    from tests.helpers import nats_connect

    nc = await nats_connect(nats_server.url)
    try:
        seen: list[str] = []

        async def record(msg: Any) -> None:
            seen.append(msg.subject)

        await nc.subscribe("tmc.ctl.>", cb=record)
        await nc.subscribe("tmc.dead.>", cb=record)
        await nc.flush()
        code, out = await kubectl_tmc_async("sync", "pause", "sim-*", "--nats-url", nats_server.url)
        assert code == 2 and "is not a valid name" in out
        code, out = await kubectl_tmc_async(
            "sync", "pause", "lonely-1", "--nats-url", nats_server.url, "--timeout", "1"
        )
        assert code == 1  # a valid name is sent (nobody answers here): the subscriber sees only that one
        await nc.flush()
        assert seen == ["tmc.ctl.sync.lonely-1.pause"]
    finally:
        await nc.close()
