"""Leader election: the pure lease rules, the elector on a real NATS (clock injected), the
leader-only gate, and replicas of the daemon sharing one NATS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import daemon_config, kubectl_tmc_async, running_daemon, wait_for
from tmcd.api.replicas import replica_report
from tmcd.bus import Bus
from tmcd.config import load_config
from tmcd.contracts.lease import Lease, ReplicaInfo, kv_token, lease_key
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.leader import Elector, LeaderOnly, default_identity
from tmcd.runtime.lease import LeaseState, next_lease, plan
from tmcd.runtime.selfmetrics import SelfMetrics

TTL, RENEW = 15.0, 5.0


def lease(holder: str, renewed: float, *, instance: str = "i", transitions: int = 0) -> Lease:
    return Lease(
        holder=holder, instance=instance, acquire_time=renewed, renew_time=renewed, ttl=TTL, transitions=transitions
    )


# --------------------------------------------------------------------------- pure rules


def test_plan_creates_renews_waits_and_takes_over() -> None:
    assert plan(None, "a", 100.0, RENEW).action == "create"
    assert plan((lease("a", 90.0), 7), "a", 100.0, RENEW) == plan((lease("a", 90.0), 7), "a", 100.0, RENEW)
    mine = plan((lease("a", 10.0), 7), "a", 100.0, RENEW)
    assert (mine.action, mine.revision, mine.takeover) == ("update", 7, False)  # even long expired: my own
    held = plan((lease("b", 95.0), 7), "a", 100.0, RENEW)
    assert (held.action, held.wake) == ("wait", RENEW)
    soon = plan((lease("b", 87.0), 7), "a", 100.0, RENEW)
    assert soon.action == "wait" and soon.wake == pytest.approx(2.0)  # look again exactly at expiry
    gone = plan((lease("b", 85.0), 7), "a", 100.0, RENEW)
    assert (gone.action, gone.revision, gone.takeover) == ("update", 7, True)


def test_lease_state_steps_down_before_a_follower_may_take_over() -> None:
    s = LeaseState().won(100.0, 3)
    assert s.leading and s.acquired == 100.0
    assert s.won(105.0, 4).acquired == 100.0  # a renewal keeps the acquire time
    assert s.failed(109.9, TTL, RENEW).leading  # within ttl - renew of the last success
    assert not s.failed(110.0, TTL, RENEW).leading  # gone before anyone may take it (at 115)
    assert not s.conflict().leading
    assert not s.observe(lease("b", 101.0), "a").leading
    assert s.observe(lease("a", 101.0), "a").leading and s.observe(None, "a").leading


def test_next_lease_counts_transitions_and_keeps_the_acquire_time() -> None:
    first = next_lease(None, "a", "x", 100.0, TTL)
    assert (first.holder, first.acquire_time, first.transitions) == ("a", 100.0, 0)
    renewed = next_lease(first, "a", "x", 105.0, TTL)
    assert (renewed.acquire_time, renewed.renew_time, renewed.transitions) == (100.0, 105.0, 0)
    restarted = next_lease(first, "a", "y", 106.0, TTL)  # the same identity, a new process
    assert (restarted.acquire_time, restarted.transitions) == (106.0, 0)
    taken = next_lease(first, "b", "z", 130.0, TTL)
    assert (taken.holder, taken.transitions) == ("b", 1)


def test_keys_are_kv_safe() -> None:
    assert kv_token("host:8080/x y.z") == "host_8080_x_y_z"
    assert lease_key("tmcd", "canary") == "tmcd.lease.canary"


def test_default_identity_is_stable_and_differs_per_replica(tmp_path: Path) -> None:
    a = load_config(None, env={}, overrides={"data_dir": str(tmp_path / "a")})
    b = load_config(None, env={}, overrides={"data_dir": str(tmp_path / "b")})
    assert default_identity(a) == default_identity(a) != default_identity(b)
    named = load_config(None, env={}, overrides={"leader.identity": "tmcd-0"})
    assert default_identity(named) == "tmcd-0"


def test_renew_interval_must_leave_room(tmp_path: Path) -> None:
    from tmcd.config import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides={"leader.lease_ttl": 4, "leader.renew_interval": 3})
    assert str(info.value) == "config: leader.renew_interval = 3: expected a number <= leader.lease_ttl / 2 (2)"


# --------------------------------------------------------------------------- the elector on NATS


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def electors(bus: Bus, clock: Clock, *names: str, prefix: str, op_timeout: float = 2.0) -> list[Elector]:
    return [
        Elector(
            await bus.kv("leases", Lease),
            await bus.kv("leases", ReplicaInfo),
            identity=name,
            prefix=prefix,
            agents=["canary", "health"],
            all_agents=["metrics", "canary", "health"],
            ttl=TTL,
            renew=RENEW,
            gauge=None,
            clock=clock,
            op_timeout=op_timeout,
        )
        for name in names
    ]


@pytest.fixture
async def bus(nats_server: EmbeddedNats, tmp_path: Path) -> Bus:
    cfg = daemon_config(nats_server.url, tmp_path, **{"nats.reconnect_wait_max": 0.5})
    b = Bus(cfg.nats, SelfMetrics(), url=nats_server.url)
    await b.connect()
    await b.provision(cfg)
    yield b  # type: ignore[misc]
    await b.close()


async def test_one_leader_and_a_takeover_after_the_ttl(bus: Bus) -> None:
    clock = Clock()
    a, b = await electors(bus, clock, "a", "b", prefix="t1")
    await a.round()
    wake = await b.round()
    assert a.leads() == ["canary", "health"] and b.leads() == []
    assert b.holders == {"canary": "a", "health": "a"} and wake == RENEW
    # a renews for a while: b never takes over
    for _ in range(5):
        clock.t += RENEW
        await a.round()
        await b.round()
        assert a.leads() == ["canary", "health"] and b.leads() == []
    # a dies (no more rounds): b takes over once the ttl since a's last renewal is over, not before
    clock.t += TTL - 0.1
    await b.round()
    assert b.leads() == []
    clock.t += 0.1
    await b.round()
    assert b.leads() == ["canary", "health"]
    stored = await (await bus.kv("leases", Lease)).get(lease_key("t1", "canary"))
    assert stored is not None and stored.value.holder == "b" and stored.value.transitions == 1
    # a comes back (it was paused, not dead): it sees b's lease and leads nothing
    await a.round()
    assert a.leads() == [] and b.leads() == ["canary", "health"]


async def test_release_hands_over_at_once_and_replicas_are_listed(bus: Bus) -> None:
    clock = Clock()
    a, b = await electors(bus, clock, "a", "b", prefix="t2")
    await a.round()
    await b.round()
    assert [r.identity for r in (await replica_report(bus, "t2", clock.t)).replicas] == ["a", "b"]
    assert {r.identity: r.leads for r in (await replica_report(bus, "t2", clock.t)).replicas} == {
        "a": ["canary", "health"],
        "b": [],
    }
    await a.release()
    assert a.leads() == []
    await b.round()  # too early: b looks at the leases again one renew interval after its last look
    assert b.leads() == []
    clock.t += RENEW  # ... and then need not wait for a TTL
    await b.round()
    assert b.leads() == ["canary", "health"]
    assert [r.identity for r in (await replica_report(bus, "t2", clock.t)).replicas] == ["b"]


async def test_a_restarted_replica_takes_its_own_lease_back_at_once(bus: Bus) -> None:
    clock = Clock()
    (a,) = await electors(bus, clock, "a", prefix="t3")
    await a.round()
    (again,) = await electors(bus, clock, "a", prefix="t3")  # kill -9 and restart: same identity
    clock.t += 1
    await again.round()
    assert again.leads() == ["canary", "health"]
    await a.round()  # the old process (if it were still alive) lost on compare-and-set
    assert a.leads() == []


async def test_a_leader_cut_off_from_nats_steps_down_in_time(bus: Bus, nats_server: EmbeddedNats) -> None:
    clock = Clock()
    url = nats_server.url
    (a,) = await electors(bus, clock, "a", prefix="t4", op_timeout=0.1)
    await a.round()
    assert a.leads() == ["canary", "health"]
    await asyncio.to_thread(nats_server.stop)
    clock.t += RENEW
    await a.round()  # cannot renew, but a follower may not take over yet: still leading
    assert a.leads() == ["canary", "health"]
    clock.t += TTL - 2 * RENEW
    await a.round()  # ttl - renew since the last renewal: gives up before anyone may take over
    assert a.leads() == []
    nats_server.port = int(url.rsplit(":", 1)[1])
    await asyncio.to_thread(nats_server.start)
    await wait_for(lambda: bus.connected, what="reconnected", timeout=15)
    clock.t += RENEW
    await a.round()  # its own lease (expired meanwhile in the bucket, or still there): back again
    assert a.leads() == ["canary", "health"]


async def test_concurrent_candidates_elect_exactly_one(bus: Bus) -> None:
    clock = Clock()
    many = await electors(bus, clock, *(f"r{i}" for i in range(8)), prefix="t5")
    await asyncio.gather(*(e.round() for e in many))
    for _ in range(3):  # losers of a compare-and-set look again at once
        await asyncio.gather(*(e.round() for e in many))
    for agent in ("canary", "health"):
        assert sum(e.leading(agent) for e in many) == 1


# --------------------------------------------------------------------------- the gate


class Recorder:
    name = "canary"

    def __init__(self) -> None:
        self.runs = 0
        self.running = False
        self.standbys = 0

    def standby(self) -> None:
        self.standbys += 1

    async def run(self, ctx: AgentContext) -> None:
        self.runs += 1
        self.running = True
        ctx.started.set()
        try:
            await ctx.stop.wait()
        finally:
            self.running = False


async def test_the_gate_runs_the_agent_only_while_leading(bus: Bus, tmp_path: Path) -> None:
    clock = Clock()
    a, b = await electors(bus, clock, "a", "b", prefix="t6")
    await b.round()  # b leads
    inner = Recorder()
    gate = LeaderOnly(inner, a, grace=1.0)
    cfg = daemon_config("nats://unused", tmp_path)
    stop = asyncio.Event()
    ctx = AgentContext(bus, cfg, SelfMetrics(), stop, clock)
    task = asyncio.create_task(gate.run(ctx))
    await wait_for(ctx.started.is_set, what="a follower counts as started")
    assert inner.runs == 0
    await b.release()
    await a.round()
    await wait_for(lambda: inner.running, what="the agent runs on the new leader")
    assert ctx.started.is_set() and gate.terms == 1
    clock.t += TTL  # a is paused; b takes the expired lease; a learns it at its next round
    await b.round()
    await a.round()
    await wait_for(lambda: not inner.running, what="the agent stops when the lease is lost")
    await wait_for(lambda: inner.standbys == 1, what="told it follows now (drops its gauges)")
    assert ctx.started.is_set() and not task.done()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert inner.runs == 1 and inner.standbys == 1  # not on shutdown


def test_followers_drop_the_leaders_series() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from tmcd.canary.metrics import CanaryMetrics
    from tmcd.health.agent import HealthAgent
    from tmcd.health.metrics import HealthMetrics

    registry = CollectorRegistry()
    health = HealthAgent()
    health.metrics = HealthMetrics(registry)
    health.metrics.set_status("edge-1", "Healthy")
    health.metrics.set_last_heartbeat("edge-1", 1000.0)
    health.metrics.set_fleet({"Healthy": 1})
    canary = CanaryMetrics(registry)
    canary.weight.labels("shop", "checkout").set(20)
    health.clusters["edge-1"] = object()  # type: ignore[assignment]
    health.standby()
    canary.clear()
    text = generate_latest(registry).decode()
    assert "edge-1" not in text and "checkout" not in text
    assert 'tmc_fleet_clusters{status="Healthy"} 0.0' in text and health.clusters == {}


class Stubborn(Recorder):
    async def run(self, ctx: AgentContext) -> None:
        self.runs += 1
        self.running = True
        ctx.started.set()
        try:
            await asyncio.Event().wait()  # ignores its stop signal
        finally:
            self.running = False


async def test_the_gate_cancels_an_agent_that_does_not_stop(bus: Bus, tmp_path: Path) -> None:
    clock = Clock()
    a, b = await electors(bus, clock, "a", "b", prefix="t7")
    await a.round()
    inner = Stubborn()
    ctx = AgentContext(bus, daemon_config("nats://unused", tmp_path), SelfMetrics(), asyncio.Event(), clock)
    task = asyncio.create_task(LeaderOnly(inner, a, grace=0.05).run(ctx))
    await wait_for(lambda: inner.running, what="leading")
    clock.t += TTL + RENEW
    await b.round()
    await a.round()
    await wait_for(lambda: not inner.running, what="cancelled after its grace")
    ctx.stop.set()
    await asyncio.wait_for(task, 5)


# --------------------------------------------------------------------------- replicas of the daemon


async def _metric(port: int, name: str, agent: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(f'{name}{{agent="{agent}"}}'):
            return float(line.rpartition(" ")[2])
    return -1.0


async def test_two_daemons_share_the_work_one_leads(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    common = {"leader.lease_ttl": 4.0, "leader.renew_interval": 0.5}
    cfg_a = daemon_config(nats_server.url, tmp_path / "a", **common, **{"leader.identity": "tmcd-a"})
    cfg_b = daemon_config(nats_server.url, tmp_path / "b", **common, **{"leader.identity": "tmcd-b"})
    async with running_daemon(cfg_a) as a, running_daemon(cfg_b) as b:
        assert a.elector is not None and b.elector is not None
        assert a.elector.leads() == ["canary", "health", "placement", "rollback"]
        assert b.elector.leads() == []
        for port, want in ((a.http.port, 1.0), (b.http.port, 0.0)):
            assert await _metric(port, "tmc_leader", "canary") == want
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/readyz") as r:
                assert r.status == 200, await r.text()  # a follower is ready
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{b.http.port}/api/v1/replicas") as r:
            report = await r.json()
        assert [x["identity"] for x in report["replicas"]] == ["tmcd-a", "tmcd-b"]
        assert report["leaders"]["canary"] == "tmcd-a"
        code, out = await kubectl_tmc_async("--nats-url", nats_server.url, "version")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[3].split() == ["REPLICA", "VERSION", "AGE", "LEADS"]
        assert lines[4].split()[0] == "tmcd-a" and lines[4].split()[-1] == "canary,health,placement,rollback"
        assert lines[5].split()[0] == "tmcd-b" and lines[5].split()[-1] == "<none>"
        code, out = await kubectl_tmc_async("--server", f"http://127.0.0.1:{a.http.port}", "version")
        assert code == 0 and "tmcd-b" in out, out
        await a.stop()  # releases its leases: b leads within a renew interval, not a ttl
        await wait_for(lambda: b.elector is not None and b.elector.leads() != [], timeout=3.0, what="b leads")
        await wait_for(lambda: b.elector is not None and len(b.elector.leads()) == 4, timeout=3.0, what="b leads all")
        assert b.supervisor is not None
        await wait_for(
            lambda: all(s.started for s in b.supervisor.states.values()),
            what="b's agents run",  # type: ignore[union-attr]
        )


async def test_without_election_every_agent_runs(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    cfg = daemon_config(nats_server.url, tmp_path, **{"leader.enabled": False})
    async with running_daemon(cfg) as d:
        assert d.elector is None
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{d.http.port}/api/v1/replicas") as r:
            report = json.loads(await r.text())
        assert report == {"replicas": [], "leaders": {}, "election": False}


async def test_daemon_start_leads_at_once_on_a_free_lease(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    d = Daemon(daemon_config(nats_server.url, tmp_path))
    await d.start()
    try:
        assert d.elector is not None and d.elector.leads() == ["canary", "health", "placement", "rollback"]
    finally:
        await d.stop()


class Checked(Recorder):
    def checks(self) -> list[tuple[str, object, tuple[str, ...]]]:
        return [("kube", lambda: "not listed yet", ("readyz",))]


async def test_an_agents_own_checks_pass_on_followers(bus: Bus) -> None:
    clock = Clock()
    a, b = await electors(bus, clock, "a", "b", prefix="t8")
    await a.round()
    await b.round()
    leader, follower = LeaderOnly(Checked(), a), LeaderOnly(Checked(), b)
    [(name, check, probes)] = follower.checks()
    assert (name, probes, check()) == ("kube", ("readyz",), None)
    assert leader.checks()[0][1]() == "not listed yet"
