"""Stored KV values that do not decode, and NATS failures under the KV store: a value that is
not its type is counted, logged and dead-lettered like any malformed message, and snapshots
and change streams go on without it; every failure reaches callers as a BusError."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import daemon_config, running_daemon, sample, scrape, wait_for
from tmcd.bus import Bus, BusError, CorruptValueError, KvStore
from tmcd.bus.kv import KvChange
from tmcd.config import NatsConfig
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import SyncerHeartbeat
from tmcd.resources.synctarget import SyncTarget
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics

_buckets = itertools.count()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[tuple[Bus, SelfMetrics]]:
    metrics = SelfMetrics()
    b = Bus(NatsConfig(), metrics, url=nats_url)
    await b.connect(retry=False)
    yield b, metrics
    await b.close()


async def new_bucket(bus: Bus) -> tuple[str, KvStore[SyncerHeartbeat]]:
    name = f"corrupt-test-{next(_buckets)}"
    await bus.js.create_key_value(bucket=name, history=5)
    return name, await bus.kv(name, SyncerHeartbeat)


def invalid(metrics: SelfMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "tmc_events_invalid_total", {"kind": "syncer_heartbeat", "reason": reason}
    )
    return value or 0.0


async def test_a_value_that_does_not_decode_is_reported_and_skipped(bus: tuple[Bus, SelfMetrics]) -> None:
    b, metrics = bus
    bucket, kv = await new_bucket(b)
    dead: list[tuple[str, bytes]] = []

    async def on_dead(msg: object) -> None:
        dead.append((msg.subject, msg.data))  # type: ignore[attr-defined]

    sub = await b.nc.subscribe(f"tmc.dead.$KV.{bucket}.>", cb=on_dead)
    await b.nc.flush()
    await kv.put("good", SyncerHeartbeat(cluster="good", timestamp=1.0))
    raw = await b.js.key_value(bucket)
    await raw.put("broken", b"{not json")
    await raw.put("wrong", json.dumps({"cluster": 5}).encode())

    entries, revision = await kv.snapshot()
    assert [e.key for e in entries] == ["good"] and revision == 3
    assert invalid(metrics, "malformed_json") == 1 and invalid(metrics, "invalid_fields") == 1
    with pytest.raises(CorruptValueError, match="broken is not a valid SyncerHeartbeat"):
        await kv.get("broken")
    assert (await kv.get("good")) is not None

    async def dead_lettered() -> bool:
        return len(dead) >= 3

    await wait_for(dead_lettered, what="copies on tmc.dead.$KV...")
    assert (f"tmc.dead.$KV.{bucket}.broken", b"{not json") in dead
    await sub.unsubscribe()

    # a change stream skips what does not decode and goes on with what follows
    stop = asyncio.Event()
    async with kv.change_feed(revision, stop) as feed:
        await raw.put("broken", b"{oops")
        await kv.put("good", SyncerHeartbeat(cluster="good", timestamp=2.0))
        change = await asyncio.wait_for(feed.next(), 10)
        assert change == KvChange("good", SyncerHeartbeat(cluster="good", timestamp=2.0), revision + 2)
        stop.set()
    assert invalid(metrics, "malformed_json") == 3  # snapshot, get, the change


async def test_nats_failures_are_bus_errors(nats_server: EmbeddedNats) -> None:
    b = Bus(NatsConfig(), SelfMetrics(), url=nats_server.url)
    await b.connect(retry=False)
    try:
        await b.js.create_key_value(bucket="gone-soon", history=1)
        kv = await b.kv("gone-soon", SyncerHeartbeat)
        await b.js.delete_key_value("gone-soon")
        for call in (kv.put("x", SyncerHeartbeat(cluster="x", timestamp=1.0)), kv.revision(), kv.keys()):
            with pytest.raises(BusError, match="KV gone-soon"):
                await call
        with pytest.raises(BusError, match="KV bucket nope"):
            await b.kv("nope", SyncerHeartbeat)
    finally:
        await b.close()


async def test_a_corrupt_cluster_in_the_registry_stops_no_agent(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """The health and placement agents start past it, and a heartbeat of that cluster replaces it."""
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics,health,placement")
    setup = Bus(NatsConfig(), SelfMetrics(), url=nats_server.url)
    await setup.connect(retry=False)
    try:
        await setup.provision(cfg)
        raw = await setup.js.key_value("tmc-clusters")
        await raw.put("sim-bad", b'{"metadata": "not an object"}')
        async with running_daemon(cfg) as d:
            text = await scrape(d.http.base_url)
            assert sample(text, "tmc_events_invalid_total", kind="sync_target", reason="invalid_fields") >= 1
            hb = SyncerHeartbeat(cluster="sim-bad", timestamp=d.clock())
            await setup.js.publish("tmc.syncer.sim-bad.heartbeat", encode(hb))
            store = await setup.kv("clusters", SyncTarget)

            async def replaced() -> bool:
                try:
                    return await store.get("sim-bad") is not None
                except CorruptValueError:
                    return False

            await wait_for(replaced, timeout=30, what="the health agent to write sim-bad afresh")
            text = await scrape(d.http.base_url)
            for agent in ("health", "placement"):
                assert sample(text, "tmc_agent_restarts_total", agent=agent) == 0, agent
    finally:
        await setup.close()
