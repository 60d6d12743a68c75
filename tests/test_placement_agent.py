"""The placement agent against a real nats-server: Placements are decided when saved and again
when the fleet changes, bursts are coalesced (on a fake clock), heartbeats alone decide nothing,
and two replicas publish one event per change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.helpers import daemon_config, nats_connect, wait_for
from tmcd.api.store import ResourceStore
from tmcd.bus import Bus, KvStore
from tmcd.config import Config, NatsConfig, load_config
from tmcd.contracts.codec import decode_as
from tmcd.contracts.messages import PlacementDecision
from tmcd.placement.agent import PlacementAgent
from tmcd.resources.kinds import PLACEMENT
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.placement import LabelSelector, Placement, PlacementSpec
from tmcd.resources.synctarget import HealthStatus, SyncTarget, SyncTargetSpec, SyncTargetStatus
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.registry import build_agents
from tmcd.runtime.selfmetrics import SelfMetrics

INTERVAL = 1.0


class FakeTime:
    """A clock, and a sleep() that returns once the test has advanced the clock past its end."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, delay: float) -> asyncio.Future[None]:
        """A future that resolves once the clock passes ``now + delay``.

        Registered when called, not when first awaited: the agent wraps it in a task, and a
        sleeper that registered only once that task ran could miss an advance() made before.
        """
        entry = (self.now + delay, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        entry[1].add_done_callback(lambda _: self._sleepers.remove(entry))
        return entry[1]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, fut in self._sleepers:
            if deadline <= self.now and not fut.done():
                fut.set_result(None)


def cluster(name: str, region: str = "eu", *, health: HealthStatus = "Healthy", beat: int = 0) -> SyncTarget:
    """A healthy, half-used cluster; ``beat`` varies what every heartbeat changes (load, times)."""
    return SyncTarget(
        metadata=ObjectMeta(name=name, labels={"region": region}),
        status=SyncTargetStatus(
            allocatable={"cpu": "8", "memory": "32Gi", "pods": "100"},
            used={"cpu": f"{4000 + beat * 10}m", "memory": "16Gi", "pods": str(50 + beat)},
            last_syncer_heartbeat_time=f"2025-01-15T10:{beat % 60:02d}:00Z",
            queue_depth=beat,
            health=health,
        ),
    )


class Fleet:
    """Placement agents, each on its own connection as in its own tmcd; a client that writes as the
    API and the health agent would; and every PlacementDecision published."""

    def __init__(self, url: str, bus: Bus, cfg: Config) -> None:
        self.url = url
        self.cfg = cfg
        self.store = ResourceStore(bus)
        self.clusters: KvStore[SyncTarget] | None = None
        self.time = FakeTime()
        self.agents: list[PlacementAgent] = []
        self.decisions: list[PlacementDecision] = []
        self.written = {"clusters": 0, "placements": 0}
        """The newest KV revision written per bucket (by this client, or read back from the agents)."""
        self._running: list[tuple[asyncio.Event, asyncio.Task[None], Bus]] = []

    async def add_agent(self) -> PlacementAgent:
        """Start one more replica and wait until it has loaded and done its start-up pass."""
        bus = Bus(NatsConfig(), SelfMetrics(), url=self.url)
        await bus.connect(retry=False)
        agent = PlacementAgent(interval=INTERVAL, sleep=self.time.sleep)
        stop = asyncio.Event()
        ctx = AgentContext(bus=bus, config=self.cfg, metrics=SelfMetrics(), stop=stop, clock=self.time.clock)
        self._running.append((stop, asyncio.create_task(agent.run(ctx)), bus))
        self.agents.append(agent)
        await self.caught_up()
        return agent

    async def stop_agents(self) -> None:
        for stop, task, bus in self._running:
            stop.set()
            await task
            await bus.close()
        self._running.clear()
        self.agents.clear()

    async def put(self, target: SyncTarget) -> None:
        assert self.clusters is not None
        self.written["clusters"] = await self.clusters.put(target.metadata.name, target)

    async def delete(self, name: str) -> None:
        assert self.clusters is not None
        await self.clusters.delete(name)
        self.written["clusters"] = await self.clusters.revision()

    async def create(self, name: str) -> None:
        spec = PlacementSpec(location_selectors=[LabelSelector(match_labels={"region": "eu"})], policy="LeastLoaded")
        saved = await self.store.create(PLACEMENT, Placement(metadata=ObjectMeta(name=name), spec=spec))
        self.written["placements"] = int(saved.metadata.resource_version)

    async def get(self, name: str) -> Placement:
        got: Placement = await self.store.get(PLACEMENT, "", name)
        self.written["placements"] = max(self.written["placements"], int(got.metadata.resource_version))
        return got

    async def caught_up(self) -> None:
        """Every agent has followed the writes above and has nothing to decide before the clock moves."""

        async def done() -> bool:
            return all(
                a.settled() and all(a.seen[bucket] >= rev for bucket, rev in self.written.items()) for a in self.agents
            )

        await wait_for(done, what="agents caught up")

    async def tick(self) -> None:
        """Let one fleet interval pass, and wait until the agents have done what it allowed."""
        await self.caught_up()
        self.time.advance(INTERVAL)
        await self.caught_up()

    async def decisions_for(self, n: int) -> list[PlacementDecision]:
        async def enough() -> bool:
            return len(self.decisions) >= n

        await wait_for(enough, what=f"{n} decisions")
        return self.decisions


@contextlib.asynccontextmanager
async def fleet(url: str, tmp_path: Path, replicas: int = 1) -> AsyncIterator[Fleet]:
    cfg = daemon_config(url, tmp_path)
    bus = Bus(NatsConfig(), SelfMetrics(), url=url)
    await bus.connect(retry=False)
    await bus.provision(cfg)
    f = Fleet(url, bus, cfg)
    f.clusters = await bus.kv("clusters", SyncTarget)
    nc = await nats_connect(url)

    async def on_decision(msg: Any) -> None:
        f.decisions.append(decode_as(PlacementDecision, msg.data))

    sub = await nc.subscribe("tmc.placement.*.decision", cb=on_decision)
    await nc.flush()
    try:
        for _ in range(replicas):
            await f.add_agent()
        yield f
    finally:
        await f.stop_agents()
        await sub.unsubscribe()
        await nc.close()
        await bus.close()


def selected(p: Placement) -> set[str]:
    return {s.cluster for s in p.status.selected_clusters}


def reasons(p: Placement) -> dict[str, str]:
    return {c.cluster: c.reason for c in p.status.candidates}


async def test_decided_on_save_and_again_when_the_fleet_changes(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with fleet(nats_server.url, tmp_path) as f:
        for name in ("eu-1", "eu-2"):
            await f.put(cluster(name))
        await f.put(cluster("us-1", "us"))
        await f.caught_up()
        await f.create("web")
        first = (await f.decisions_for(1))[0]
        assert first.placement == "web" and first.result == "bound" and set(first.selected) == {"eu-1", "eu-2"}
        web = await f.get("web")
        assert web.status.phase == "Bound" and selected(web) == {"eu-1", "eu-2"}
        assert web.status.observed_generation == 1 and reasons(web)["us-1"] == "LabelMismatch"

        # a selected cluster turns Unhealthy (written as the health agent writes it): re-decided without it
        await f.put(cluster("eu-2", health="Unhealthy"))
        await f.tick()
        second = (await f.decisions_for(2))[1]
        assert second.selected == ["eu-1"] and second.result == "bound"
        assert {c.cluster: c.reason for c in second.candidates}["eu-2"] == "Unhealthy"
        web = await f.get("web")
        assert selected(web) == {"eu-1"} and reasons(web)["eu-2"] == "Unhealthy"

        # a new matching cluster appears: numberOfClusters is unset, so it is chosen too
        await f.put(cluster("eu-3"))
        await f.tick()
        assert set((await f.decisions_for(3))[2].selected) == {"eu-1", "eu-3"}

        # heartbeats alone (load, times, queue depth) change nothing worth deciding again
        before = (await f.get("web")).metadata.resource_version
        for beat in range(1, 6):
            for name in ("eu-1", "eu-3"):
                await f.put(cluster(name, beat=beat))
        await f.tick()
        assert len(f.decisions) == 3 and (await f.get("web")).metadata.resource_version == before

        # cordoned: re-decided without it
        cordoned = cluster("eu-3")
        cordoned.spec = SyncTargetSpec(unschedulable=True)
        await f.put(cordoned)
        await f.tick()
        assert (await f.decisions_for(4))[3].selected == ["eu-1"]
        assert reasons(await f.get("web"))["eu-3"] == "Cordoned"

        # the last selected cluster is deleted: nothing qualifies any more
        await f.delete("eu-1")
        await f.tick()
        fifth = (await f.decisions_for(5))[4]
        assert fifth.result == "unbound" and fifth.selected == []
        web = await f.get("web")
        assert web.status.phase == "Unbound" and "eu-1" not in reasons(web)
        await f.tick()
        assert len(f.decisions) == 5


async def test_a_burst_of_fleet_changes_is_one_re_decision(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with fleet(nats_server.url, tmp_path) as f:
        names = [f"eu-{i:02d}" for i in range(20)]
        for name in names:
            await f.put(cluster(name))
        await f.tick()
        await f.create("wide")
        assert set((await f.decisions_for(1))[0].selected) == set(names)
        await f.caught_up()

        # a storm: every cluster heartbeats five times, and five of them turn Unhealthy on the way
        for beat in range(1, 6):
            for i, name in enumerate(names):
                await f.put(cluster(name, health="Unhealthy" if i < beat else "Healthy", beat=beat))
        await f.caught_up()
        assert len(f.decisions) == 1  # the last pass was less than an interval ago: coalescing
        await f.tick()
        await f.tick()
        assert len(f.decisions) == 2 and set(f.decisions[1].selected) == set(names[5:])
        assert selected(await f.get("wide")) == set(names[5:])


async def test_a_change_after_a_quiet_spell_is_decided_at_once(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with fleet(nats_server.url, tmp_path) as f:
        await f.put(cluster("eu-1"))
        await f.put(cluster("eu-2"))
        await f.tick()
        await f.create("web")
        await f.decisions_for(1)
        f.time.advance(INTERVAL)  # quiet for an interval: the next change needs no waiting
        await f.put(cluster("eu-1", health="Unknown"))
        assert (await f.decisions_for(2))[1].selected == ["eu-2"]  # with the clock standing still


async def test_a_flap_within_the_interval_decides_nothing(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with fleet(nats_server.url, tmp_path) as f:
        await f.put(cluster("eu-1"))
        await f.tick()
        await f.create("web")
        await f.decisions_for(1)
        before = (await f.get("web")).metadata.resource_version
        await f.put(cluster("eu-1", health="Unhealthy"))
        await f.put(cluster("eu-1", health="Healthy", beat=1))  # back before the interval is over
        await f.tick()
        assert len(f.decisions) == 1, [(d.timestamp, d.selected) for d in f.decisions]
        assert (await f.get("web")).metadata.resource_version == before


async def test_two_replicas_publish_one_decision_per_change(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with fleet(nats_server.url, tmp_path, replicas=2) as f:
        for name in ("eu-1", "eu-2", "eu-3"):
            await f.put(cluster(name))
        await f.tick()
        await f.create("web")
        await f.decisions_for(1)
        web = await f.get("web")
        await f.caught_up()
        assert len(f.decisions) == 1 and selected(web) == {"eu-1", "eu-2", "eu-3"}

        await f.put(cluster("eu-2", health="Unhealthy"))
        await f.tick()
        await f.decisions_for(2)
        web = await f.get("web")
        await f.tick()
        assert len(f.decisions) == 2 and set(f.decisions[1].selected) == selected(web) == {"eu-1", "eu-3"}
        assert web.status.observed_generation == 1 and reasons(web)["eu-2"] == "Unhealthy"


async def test_a_restarted_agent_catches_up_without_repeating_itself(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with fleet(nats_server.url, tmp_path, replicas=0) as f:
        await f.put(cluster("eu-1"))
        await f.put(cluster("eu-2"))
        await f.create("web")  # saved while no placement agent runs: Pending
        assert (await f.get("web")).status.phase == "Pending" and f.decisions == []
        await f.add_agent()
        assert set((await f.decisions_for(1))[0].selected) == {"eu-1", "eu-2"}
        await f.stop_agents()

        await f.put(cluster("eu-2", health="Unhealthy"))  # the fleet changes while no agent watches
        await f.put(cluster("eu-1", beat=3))
        await f.add_agent()
        assert (await f.decisions_for(2))[1].selected == ["eu-1"]
        await f.stop_agents()

        before = (await f.get("web")).metadata.resource_version
        await f.add_agent()  # nothing changed since: nothing to write or publish
        await f.tick()
        assert len(f.decisions) == 2 and (await f.get("web")).metadata.resource_version == before


def test_on_by_default_and_optional() -> None:
    assert "placement" in load_config(None, env={}).agents
    assert [a.name for a in build_agents(["metrics", "placement"])] == ["metrics", "placement"]
    assert "placement" not in load_config(None, env={}, overrides={"agents": "metrics,health"}).agents
