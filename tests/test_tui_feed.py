"""The dashboard's feed against a real nats-server: snapshot, replay, live updates, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import msgspec
import pytest

from tests.helpers import wait_for
from tmcd.bus import Bus
from tmcd.config import NatsConfig, load_config
from tmcd.contracts import subjects
from tmcd.contracts.messages import CanaryEvent, HealthChange, SyncerHeartbeat, SyncEvent, SyncEventBatch
from tmcd.resources.canary import CanaryRollout
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.synctarget import SyncTarget, SyncTargetStatus
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.sim.fleet import cluster_names
from tmcd.tui.feed import Feed
from tmcd.tui.state import DashboardState

ROLLOUT = {
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "workloadRef": {"name": "web"},
        "stableVersion": "v1",
        "canaryVersion": "v2",
        "trafficRouting": {"route": "web"},
        "steps": [{"setWeight": 20}, {"pause": {}}],
    },
    "status": {"phase": "Progressing", "currentStepIndex": 0, "currentWeight": 20},
}


@contextlib.asynccontextmanager
async def publisher(url: str) -> AsyncIterator[Bus]:
    """A bus that provisioned tmcd's streams and buckets, as a running tmcd would have."""
    bus = Bus(NatsConfig(name="test-tui"), SelfMetrics(), url=url)
    await bus.connect(retry=False)
    await bus.provision(load_config(None, env={}, overrides={"nats.url": url}))
    try:
        yield bus
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def running_feed(state: DashboardState, url: str, **kw: object) -> AsyncIterator[Feed]:
    feed = Feed(state, url, retry_wait=(0.05, 0.2), **kw)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        yield feed
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_opens_with_the_fleet_and_recent_events_then_follows_live(nats_server: EmbeddedNats) -> None:
    url = nats_server.url
    names = cluster_names(3)
    now = time.time()
    async with publisher(url) as pub:
        clusters = await pub.kv("clusters", SyncTarget)
        for i, name in enumerate(names):
            health = "Unhealthy" if i == 2 else "Healthy"
            st = SyncTarget(
                metadata=ObjectMeta(name=name, labels={"region": "eu-west-1"}),
                status=SyncTargetStatus(health=health, health_reason="HeartbeatMissed" if i == 2 else ""),
            )
            await clusters.put(name, st)
            await pub.js_publish(
                subjects.syncer_heartbeat(name), SyncerHeartbeat(cluster=name, timestamp=now - 1, queue_depth=10 + i)
            )
        await pub.js_publish(
            subjects.health_change("cluster", names[2]),
            HealthChange(
                kind="cluster", name=names[2], timestamp=now - 30, from_status="Healthy", to_status="Unhealthy"
            ),
        )
        canaries = await pub.kv("canaries", CanaryRollout)
        await canaries.put("shop.web", msgspec.convert(ROLLOUT, CanaryRollout))

        state = DashboardState()
        async with running_feed(state, url):
            await wait_for(lambda: state.loaded and len(state.fleet) == 3 and state.canaries, what="snapshot")
            assert state.connection == "connected"
            rows = state.fleet.rows(time.time())
            assert [(r.name, r.health, r.queue_depth) for r in rows] == [
                (names[0], "Healthy", 10),
                (names[1], "Healthy", 11),
                (names[2], "Unhealthy", 12),
            ]
            assert [(e.kind, e.object) for e in state.events.rows()] == [("health", f"cluster/{names[2]}")]
            assert [c.step for c in state.canary_rows(time.time())] == ["1/2"]

            # live: sync events, a new health change, a deleted cluster, a changed rollout
            evs = [
                SyncEvent(cluster=names[0], timestamp=time.time(), resource="v1/pods", ok=i % 4 != 0) for i in range(8)
            ]
            await pub.js_publish(
                subjects.syncer_batch(names[0]), SyncEventBatch(cluster=names[0], timestamp=time.time(), events=evs)
            )
            await pub.js_publish(
                subjects.canary_event("shop", "web"),
                CanaryEvent(namespace="shop", name="web", timestamp=time.time(), type="step", message="setWeight 50"),
            )
            await clusters.delete(names[1])
            moved = msgspec.convert({**ROLLOUT, "status": {"phase": "Paused", "currentStepIndex": 1}}, CanaryRollout)
            await canaries.put("shop.web", moved)

            def live() -> bool:
                row = state.fleet.row(names[0], time.time())
                return (
                    row is not None
                    and row.error_ratio == pytest.approx(0.25)
                    and names[1] not in state.fleet.names()
                    and len(state.events) == 2
                    and state.canary_rows(time.time())[0].phase == "Paused"
                )

            await wait_for(live, what="live updates")
            assert state.events.rows()[0].message == "setWeight 50"


async def test_shows_disconnected_while_nats_is_away_and_recovers_on_its_own(nats_server: EmbeddedNats) -> None:
    url = nats_server.url
    nats_server.port = int(url.rsplit(":", 1)[1])  # comes back on the same port, as tmcd's embedded server does
    nats_server.stop()
    state = DashboardState()
    async with running_feed(state, url):
        await wait_for(lambda: state.connection == "disconnected" and state.problem, what="disconnected at start")
        assert "cannot connect" in state.problem
        nats_server.start()
        await wait_for(lambda: state.connection == "connected", what="connected")
        nats_server.stop()
        await wait_for(lambda: state.connection == "disconnected", what="disconnected")
        nats_server.start()
        await wait_for(lambda: state.connection == "connected", timeout=20, what="reconnected")
        async with publisher(url) as pub:
            # after the reconnect the live subscriptions are back and the KV watch started over
            await pub.publish(
                subjects.syncer_heartbeat("sim-009"), SyncerHeartbeat(cluster="sim-009", timestamp=time.time())
            )
            await (await pub.kv("clusters", SyncTarget)).put("sim-010", SyncTarget(metadata=ObjectMeta(name="sim-010")))
            await wait_for(
                lambda: state.fleet.names() == ["sim-009", "sim-010"], timeout=20, what="live after reconnect"
            )


async def test_replay_is_bounded_to_the_newest_events(nats_server: EmbeddedNats) -> None:
    async with publisher(nats_server.url) as pub:
        now = time.time()
        for i in range(30):
            await pub.js_publish(
                subjects.health_change("cluster", f"c{i:02d}"),
                HealthChange(kind="cluster", name=f"c{i:02d}", timestamp=now - 30 + i, to_status="Degraded"),
            )
        state = DashboardState()
        async with running_feed(state, nats_server.url, replay_limit=10):
            await wait_for(lambda: state.loaded, what="loaded")
            assert [e.object for e in state.events.rows()] == [f"cluster/c{i:02d}" for i in range(29, 19, -1)]
