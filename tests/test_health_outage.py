"""Health events survive NATS: the health agent, driven sweep by sweep with an injected clock
against a real nats-server, loses no transition when the server goes away in the middle of a
sweep, stores none twice, and deletes a forgotten cluster only after its event is stored."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import daemon_config, nats_connect, wait_for
from tmcd.bus import Bus, BusError, Delivery, KvStore
from tmcd.config import Config
from tmcd.contracts.codec import decode_as
from tmcd.contracts.messages import HealthChange, SyncerHeartbeat
from tmcd.health.agent import HealthAgent
from tmcd.health.metrics import HealthMetrics
from tmcd.resources.synctarget import SyncTarget
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics

T0 = 1000.0
SETTINGS = {
    "health.heartbeat_threshold": 10.0,
    "health.failure_threshold": 0.0,
    "health.success_threshold": 0.0,
    "health.startup_grace": 0.0,
    "health.forget_after": 120.0,
    "nats.reconnect_wait_min": 0.05,
    "nats.reconnect_wait_max": 0.5,
}
Publish = Callable[..., Awaitable[int]]


class Driven:
    """A health agent on a real bus, its clock and sweeps in the test's hands."""

    def __init__(self, bus: Bus, cfg: Config, store: KvStore[SyncTarget]) -> None:
        self.now = T0
        self.bus, self.store = bus, store
        self.ctx = AgentContext(bus=bus, config=cfg, metrics=SelfMetrics(), stop=asyncio.Event(), clock=self.clock)
        self.agent = HealthAgent()
        self.agent.metrics = HealthMetrics(self.ctx.metrics.registry)
        self._handle = self.agent._on_syncer(self.ctx)

    def clock(self) -> float:
        return self.now

    def heartbeat(self, *names: str) -> None:
        for name in names:
            region = "eu" if name in ("c-1", "c-2") else "us" if name in ("c-3", "c-4") else "ap"
            hb = SyncerHeartbeat(cluster=name, timestamp=self.now, interval_seconds=1.0, labels={"region": region})
            self._handle(Delivery(f"tmc.syncer.{name}.heartbeat", hb))

    async def sweep(self, at: float) -> None:
        self.now = at
        await self.agent.sweep(self.ctx, self.store, T0)

    def hook(self, wrap: Callable[[Publish], Publish]) -> None:
        """Put ``wrap`` around the bus's JetStream publish (the agent's only way to publish)."""
        setattr(self.bus, "js_publish", wrap(Bus.js_publish.__get__(self.bus)))  # noqa: B010

    def unhook(self) -> None:
        with contextlib.suppress(AttributeError):
            delattr(self.bus, "js_publish")


@contextlib.asynccontextmanager
async def driven(server: EmbeddedNats, tmp_path: Path, **overrides: object) -> AsyncIterator[Driven]:
    cfg = daemon_config(server.url, tmp_path, **{**SETTINGS, **overrides})
    bus = Bus(cfg.nats, SelfMetrics(), url=server.url)
    await bus.connect(retry=False)
    try:
        await bus.provision(cfg)
        yield Driven(bus, cfg, await bus.kv("clusters", SyncTarget))
    finally:
        await bus.close()


async def stored_events(url: str) -> list[HealthChange]:
    """Every HealthChange in TMC_EVENTS, in stream order."""
    nc = await nats_connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("TMC_EVENTS")
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg("TMC_EVENTS", seq)
            if msg.subject and msg.subject.startswith("tmc.health."):
                assert msg.data is not None
                out.append(decode_as(HealthChange, msg.data))
        return out
    finally:
        await nc.close()


def per_key(events: list[HealthChange]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        out.setdefault(f"{e.kind}/{e.name}", []).append(f"{e.from_status}>{e.to_status}")
    return out


async def health_in_kv(store: KvStore[SyncTarget]) -> dict[str, str]:
    out = {}
    for key in await store.keys():
        entry = await store.get(key)
        if entry is not None:
            out[key] = entry.value.status.health
    return out


async def test_nats_cut_mid_sweep_loses_no_transition(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    port = int(nats_server.url.rsplit(":", 1)[1])
    async with driven(nats_server, tmp_path) as d:
        d.heartbeat("c-1", "c-2", "c-3", "c-4", "c-gone")
        await d.sweep(T0)  # everyone Healthy
        d.now = T0 + 50
        d.heartbeat("c-1", "c-2", "c-3", "c-4")
        await d.sweep(T0 + 50)  # c-gone misses its heartbeats: Unhealthy
        assert not d.agent.outbox

        # c-1, c-2 and c-3 miss theirs: six events in one sweep; NATS dies after the first is stored
        cut = asyncio.Event()
        calls = 0

        def stop_after_first(publish: Publish) -> Publish:
            async def hooked(*args: Any, **kw: Any) -> int:
                nonlocal calls
                calls += 1
                if calls > 1:  # the others wait until the server is gone
                    await cut.wait()
                    return await publish(*args, **kw)
                seq = await publish(*args, **kw)
                await asyncio.to_thread(nats_server.stop)
                await wait_for(_async(lambda: not d.bus.connected), timeout=10, what="the bus to notice")
                cut.set()
                return seq

            return hooked

        d.hook(stop_after_first)
        d.now = T0 + 100
        d.heartbeat("c-4")
        await d.sweep(T0 + 100)
        d.unhook()
        assert cut.is_set() and not d.bus.connected
        assert d.agent.outbox.events == 5  # the rest of the sweep waits

        # more transitions while NATS is away: c-1 recovers, c-gone is forgotten, then c-2 recovers
        d.now = T0 + 150
        d.heartbeat("c-1", "c-4")
        await d.sweep(T0 + 150)
        assert "c-gone" in d.agent.clusters  # its Forgotten event is not stored yet: still known
        assert d.agent.outbox.forgetting("c-gone")
        d.now = T0 + 160
        d.heartbeat("c-1", "c-2", "c-4")
        await d.sweep(T0 + 160)
        assert d.agent.outbox and not d.bus.connected

        nats_server.port = port
        await asyncio.to_thread(nats_server.start)
        await wait_for(_async(lambda: d.bus.connected), timeout=20, what="the bus to reconnect")

        async def delivered() -> bool:
            d.heartbeat("c-1", "c-2", "c-4")
            await d.sweep(T0 + 161)
            return not d.agent.outbox

        await wait_for(delivered, timeout=30, what="the outbox to drain", step=0.1)
        assert "c-gone" not in d.agent.clusters

        events = await stored_events(nats_server.url)
        assert per_key(events) == {
            "cluster/c-1": ["Unknown>Healthy", "Healthy>Unhealthy", "Unhealthy>Healthy"],
            "cluster/c-2": ["Unknown>Healthy", "Healthy>Unhealthy", "Unhealthy>Healthy"],
            "cluster/c-3": ["Unknown>Healthy", "Healthy>Unhealthy"],
            "cluster/c-4": ["Unknown>Healthy"],
            "cluster/c-gone": ["Unknown>Healthy", "Healthy>Unhealthy", "Unhealthy>Unknown"],
            "location/eu": ["Unknown>Healthy", "Healthy>Unhealthy", "Unhealthy>Healthy"],
            "location/us": ["Unknown>Healthy", "Healthy>Unhealthy"],
            "location/ap": ["Unknown>Healthy", "Healthy>Unhealthy"],
            "fleet/fleet": ["Unknown>Healthy", "Healthy>Degraded", "Degraded>Unhealthy", "Unhealthy>Degraded"],
        }
        assert [e.reason for e in events if e.name == "c-gone"][-1] == "Forgotten"
        assert await health_in_kv(d.store) == {"c-1": "Healthy", "c-2": "Healthy", "c-3": "Unhealthy", "c-4": "Healthy"}


async def test_waiting_events_go_out_when_nats_is_back_not_at_the_next_sweep(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    port = int(nats_server.url.rsplit(":", 1)[1])
    async with driven(nats_server, tmp_path, **{"health.interval": 3600.0}) as d:
        running = asyncio.create_task(d.agent.run(d.ctx))
        try:
            await wait_for(_async(d.ctx.started.is_set), what="the agent to start")
            await asyncio.to_thread(nats_server.stop)
            await wait_for(_async(lambda: not d.bus.connected), timeout=10, what="the bus to notice")
            d.heartbeat("c-1", "c-3")
            await d.sweep(T0)  # c-1 and c-3 are Healthy, and NATS is away
            assert d.agent.outbox.events == 5

            nats_server.port = port
            await asyncio.to_thread(nats_server.start)
            # no sweep from here on (the next is an hour away): the reconnection alone delivers
            await wait_for(_async(lambda: not d.agent.outbox), timeout=30, what="the outbox to drain")
            assert per_key(await stored_events(nats_server.url)) == {
                "cluster/c-1": ["Unknown>Healthy"],
                "cluster/c-3": ["Unknown>Healthy"],
                "location/eu": ["Unknown>Healthy"],
                "location/us": ["Unknown>Healthy"],
                "fleet/fleet": ["Unknown>Healthy"],
            }
            assert await health_in_kv(d.store) == {"c-1": "Healthy", "c-3": "Healthy"}
        finally:
            d.ctx.stop.set()
            await running


async def test_forgotten_cluster_is_deleted_only_after_its_event_is_stored(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with driven(nats_server, tmp_path) as d:
        d.heartbeat("c-old")
        await d.sweep(T0)
        assert await health_in_kv(d.store) == {"c-old": "Healthy"}
        attempts: list[str] = []

        def failing(mode: str) -> Callable[[Publish], Publish]:
            def wrap(publish: Publish) -> Publish:
                async def hooked(subject: str, msg: Any, headers: dict[str, str] | None = None, **kw: Any) -> int:
                    if not subject.startswith("tmc.health.cluster."):
                        return await publish(subject, msg, headers, **kw)
                    attempts.append(mode)
                    if mode == "refused":
                        raise BusError("JetStream publish failed: no responders")
                    await publish(subject, msg, headers, **kw)
                    raise BusError("JetStream publish failed: timeout")  # stored, but the ack never came

                return hooked

            return wrap

        for mode in ("refused", "ack-lost"):
            d.hook(failing(mode))
            await d.sweep(T0 + 200 + len(attempts))
            d.unhook()
            # not acknowledged: the cluster stays in the registry (and in memory), to be retried
            assert await health_in_kv(d.store) == {"c-old": "Healthy"}
            assert "c-old" in d.agent.clusters
        assert attempts == ["refused", "ack-lost"]

        await d.sweep(T0 + 210)
        assert not d.agent.outbox
        assert await health_in_kv(d.store) == {}
        assert "c-old" not in d.agent.clusters
        forgotten = [e for e in await stored_events(nats_server.url) if e.reason == "Forgotten"]
        assert len(forgotten) == 1  # the retry after the lost ack was recognised as a duplicate
        assert forgotten[0].name == "c-old" and forgotten[0].timestamp == T0 + 200  # the first attempt's


async def test_an_operators_spec_survives_the_agents_write(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with driven(nats_server, tmp_path) as d:
        d.heartbeat("c-1")
        await d.sweep(T0)
        entry = await d.store.get("c-1")
        assert entry is not None
        entry.value.spec.unschedulable = True  # an operator cordons the cluster
        await d.store.update("c-1", entry.value, entry.revision)
        await d.sweep(T0 + 50)  # the heartbeat is missed: the agent writes Unhealthy over a newer revision
        after = await d.store.get("c-1")
        assert after is not None
        assert after.value.status.health == "Unhealthy" and after.value.spec.unschedulable


def _async(cond: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return cond()

    return check


@pytest.fixture(autouse=True)
def _quiet_reconnects(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="nats")
