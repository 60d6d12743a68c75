"""The health agent with the simulator: one cluster stops heartbeating, one fails half its
syncs, one disconnects; the API, the metrics and the events show it within the thresholds,
and everything recovers once the faults clear.  Also: the registry survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import daemon_config, nats_connect, running_daemon, sample, scrape, wait_for
from tmcd.bus import Bus
from tmcd.config import NatsConfig
from tmcd.contracts.codec import decode_as
from tmcd.contracts.messages import HealthChange
from tmcd.resources.synctarget import SyncTarget
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.sim.model import SimOptions
from tmcd.sim.runner import run_sim

FAST = {
    "agents": "metrics,health",
    "health.heartbeat_threshold": 1.0,
    "health.success_threshold": 0.5,
    "health.failure_threshold": 0.5,
    "health.interval": 0.1,
    "health.startup_grace": 0.0,
    "health.error_window": 3.0,
    "health.error_ratio_threshold": 0.2,
}
SLACK = 2.0  # scheduling slack on a loaded 2-core machine


async def health(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{base}/api/v1/health") as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


def statuses(tree: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for loc in tree["locations"] for c in loc["clusters"]}


@contextlib.asynccontextmanager
async def simulating(url: str, opts: SimOptions) -> Any:
    bus = Bus(NatsConfig(), SelfMetrics(), url=url)
    await bus.connect(retry=False)
    stop = asyncio.Event()
    task = asyncio.create_task(run_sim(bus, opts, stop, tick=0.02))
    try:
        yield
    finally:
        stop.set()
        await task
        await bus.close()


async def test_faults_show_up_and_clear(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    cfg = daemon_config(nats_server.url, tmp_path, **FAST)
    events: list[HealthChange] = []
    nc = await nats_connect(nats_server.url)

    async def on_event(msg: Any) -> None:
        events.append(decode_as(HealthChange, msg.data))

    sub = await nc.subscribe("tmc.health.>", cb=on_event)
    await nc.flush()
    faults = SimOptions(
        clusters=4,
        rate=400.0,
        seed=3,
        heartbeat_interval=0.2,
        stop_heartbeats=frozenset({"sim-001"}),
        error_ratio={"sim-002": 0.6},
        disconnect=frozenset({"sim-003"}),
        fault_after=1.0,
    )
    try:
        async with running_daemon(cfg) as d:
            base = d.http.base_url
            started = time.time()
            async with simulating(nats_server.url, faults):

                async def all_healthy_first() -> bool:
                    return statuses(await health(base)) == dict.fromkeys(
                        ("sim-001", "sim-002", "sim-003", "sim-004"), "Healthy"
                    )

                await wait_for(all_healthy_first, timeout=10, what="four healthy clusters")
                expected = {"sim-001": "Unhealthy", "sim-002": "Degraded", "sim-003": "Unhealthy", "sim-004": "Healthy"}

                async def faulted() -> dict[str, Any] | None:
                    tree = await health(base)
                    return tree if statuses(tree) == expected else None

                tree = await wait_for(faulted, timeout=20, what=f"statuses {expected}")
            # fault windows: each fault starts ~fault_after after the first heartbeat (<= started + 1 s)
            bound = 1.0 + 1.0 + FAST["health.heartbeat_threshold"] + FAST["health.failure_threshold"]
            bound += FAST["health.interval"] + SLACK
            for name, to in (("sim-001", "Unhealthy"), ("sim-002", "Degraded"), ("sim-003", "Unhealthy")):
                change = next(e for e in events if e.kind == "cluster" and e.name == name and e.to_status == to)
                assert change.timestamp - started <= bound, (name, change.timestamp - started)
                assert change.from_status == "Healthy"
            reasons = {c["name"]: c["reason"] for loc in tree["locations"] for c in loc["clusters"]}
            assert reasons["sim-001"] == "HeartbeatMissed"
            assert reasons["sim-002"] == "ErrorRatioHigh"
            assert reasons["sim-003"] == "SyncerDisconnected"
            assert tree["fleet"]["counts"] == {"Healthy": 1, "Degraded": 1, "Unhealthy": 2, "Unknown": 0}
            assert tree["fleet"]["status"] == "Unhealthy"
            text = await scrape(base)
            assert sample(text, "tmc_cluster_health_status", cluster="sim-001", status="Unhealthy") == 1
            assert sample(text, "tmc_cluster_health_status", cluster="sim-001", status="Healthy") == 0
            assert sample(text, "tmc_cluster_health_status", cluster="sim-002", status="Degraded") == 1
            assert (
                sample(text, "tmc_cluster_condition", cluster="sim-001", condition="HeartbeatHealthy", status="False")
                == 1
            )
            assert sample(text, "tmc_fleet_clusters", status="Unhealthy") == 2
            assert any(e.kind == "fleet" and e.name == "fleet" for e in events)
            # one event per transition, never repeated while nothing changes
            per_cluster = [(e.name, e.from_status, e.to_status) for e in events if e.kind == "cluster"]
            assert len(per_cluster) == len(set(per_cluster))

            # faults clear: the same clusters, healthy syncers
            async with simulating(nats_server.url, SimOptions(clusters=4, rate=400.0, seed=3, heartbeat_interval=0.2)):

                async def recovered() -> bool:
                    return set(statuses(await health(base)).values()) == {"Healthy"}

                await wait_for(recovered, timeout=20, what="recovery")
            assert any(
                e.name == "sim-001" and e.to_status == "Healthy" and e.from_status == "Unhealthy" for e in events
            )
    finally:
        await sub.unsubscribe()
        await nc.close()


async def test_registry_in_kv_survives_a_restart(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    cfg = daemon_config(nats_server.url, tmp_path, **FAST)
    sim = SimOptions(clusters=3, rate=50.0, seed=5, heartbeat_interval=0.2)
    async with running_daemon(cfg) as d, simulating(nats_server.url, sim):

        async def three() -> bool:
            return len([s for s in statuses(await health(d.http.base_url)).values() if s == "Healthy"]) == 3

        await wait_for(three, timeout=15, what="three healthy clusters")
    # the SyncTargets are in KV ...
    bus = Bus(NatsConfig(), SelfMetrics(), url=nats_server.url)
    await bus.connect(retry=False)
    try:
        kv = await bus.kv("clusters", SyncTarget)
        keys = sorted(await kv.keys())
        assert keys == ["sim-001", "sim-002", "sim-003"]
        entry = await kv.get("sim-001")
        assert entry is not None
        st = entry.value
        assert st.kind == "SyncTarget" and st.status.health == "Healthy"
        assert {c.type for c in st.status.conditions} == {"HeartbeatHealthy", "SyncerReady", "Ready"}
        assert st.status.last_syncer_heartbeat_time.endswith("Z")
        assert st.metadata.labels.get("region")
    finally:
        await bus.close()
    # ... and a restarted tmcd knows the fleet at once (before any heartbeat arrives)
    slow_grace = {**FAST, "health.startup_grace": 30.0}
    async with running_daemon(daemon_config(nats_server.url, tmp_path, **slow_grace)) as d2:
        tree = await health(d2.http.base_url)
        assert sorted(statuses(tree)) == ["sim-001", "sim-002", "sim-003"]
        assert set(statuses(tree).values()) == {"Healthy"}


@pytest.mark.parametrize("query", ["?location=nowhere", "?clusters=false"])
async def test_health_api_filters(nats_url: str, tmp_path: Path, durable_prefix: str, query: str) -> None:
    cfg = daemon_config(nats_url, tmp_path, **FAST, **{"consumer.durable_prefix": durable_prefix})
    async with running_daemon(cfg) as d:
        async with aiohttp.ClientSession() as s, s.get(f"{d.http.base_url}/api/v1/health{query}") as r:
            tree = await r.json()
        assert r.status == 200 and "fleet" in tree
        assert all(not loc["clusters"] for loc in tree["locations"]) or query == "?location=nowhere"
        if query == "?location=nowhere":
            assert tree["locations"] == []
