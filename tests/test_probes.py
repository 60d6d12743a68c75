"""Health checks: the registry (caching, exclude, single check, rendering), the loop watchdog,
the component checks, and the kube-apiserver style probe endpoints of a running daemon."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from tests.helpers import CrashingAgent, daemon_config, get, running_daemon, sample, scrape, wait_for
from tmcd.api.server import HttpServer, build_app
from tmcd.config import Config, HealthConfig
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.checks import (
    DaemonChecks,
    JetStreamProbe,
    RestartTracker,
    agent_check,
    consumer_lag_check,
    eventloop_check,
    nats_check,
    secs,
    span,
)
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.probes import CheckRegistry, Report
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.runtime.supervisor import AgentState, Supervisor
from tmcd.runtime.watchdog import LoopWatchdog


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def counting_registry(clock: FakeClock, ttl: float = 1.0) -> tuple[CheckRegistry, Counter[str]]:
    calls: Counter[str] = Counter()
    reg = CheckRegistry(cache_ttl=ttl, clock=clock)

    def make(name: str, reason: str | None) -> Any:
        def fn() -> str | None:
            calls[name] += 1
            return reason

        return fn

    reg.register("ping", make("ping", None), ("livez", "readyz", "healthz"))
    reg.register("eventloop", make("eventloop", None), ("livez", "healthz"))
    reg.register("nats", make("nats", None))
    reg.register("jetstream", make("jetstream", "streams and KV buckets not provisioned yet"))
    return reg, calls


# -- registry -------------------------------------------------------------------------


def test_report_rendering() -> None:
    ok = Report(True, (("ping", None), ("nats", None)))
    assert ok.render("readyz", verbose=False) == "ok"
    assert ok.render("readyz", verbose=True) == "[+]ping ok\n[+]nats ok\nreadyz check passed\n"
    bad = Report(False, (("ping", None), ("nats", "not connected to NATS")))
    assert bad.render("readyz", verbose=False) == "[-]nats failed: not connected to NATS\nreadyz check failed\n"
    assert bad.render("healthz", verbose=True) == (
        "[+]ping ok\n[-]nats failed: not connected to NATS\nhealthz check failed\n"
    )


def test_probe_membership_exclude_and_single_check() -> None:
    reg, _ = counting_registry(FakeClock(), ttl=0)
    assert reg.names("livez") == ["ping", "eventloop"]
    assert reg.names("readyz") == ["ping", "nats", "jetstream"]
    assert reg.names("healthz") == ["ping", "eventloop", "nats", "jetstream"]
    report = reg.run("readyz")
    assert report is not None and not report.ok
    report = reg.run("readyz", exclude=["jetstream", "nats"])
    assert report is not None and report.ok and [n for n, _ in report.results] == ["ping"]
    single = reg.run("readyz", only="jetstream")
    assert single is not None and single.results == (("jetstream", "streams and KV buckets not provisioned yet"),)
    assert reg.run("readyz", only="eventloop") is None  # not a readyz check
    assert reg.run("readyz", only="nope") is None
    assert reg.run("readyz", exclude=["nats"], only="nats") is None


def test_a_raising_check_fails_with_its_exception() -> None:
    reg = CheckRegistry()
    reg.register("bad", lambda: str(1 / 0))
    report = reg.run("readyz")
    assert report is not None and report.results == (("bad", "check raised ZeroDivisionError: division by zero"),)


def test_results_are_cached_per_check_for_the_ttl() -> None:
    clock = FakeClock()
    reg, calls = counting_registry(clock, ttl=1.0)
    seen: list[tuple[str, str | None]] = []
    reg.listeners.append(lambda name, reason: seen.append((name, reason)))
    for _ in range(50):
        for probe in ("livez", "readyz", "healthz"):
            reg.run(probe)
            reg.run(probe, exclude=["nats"])
        reg.run("readyz", only="nats")
    assert calls == {"ping": 1, "eventloop": 1, "nats": 1, "jetstream": 1}
    assert sorted(n for n, _ in seen) == ["eventloop", "jetstream", "nats", "ping"]  # listeners see real runs only
    clock.now += 0.99
    reg.run("healthz")
    assert calls["ping"] == 1
    clock.now += 0.01
    reg.run("healthz")
    assert calls == {"ping": 2, "eventloop": 2, "nats": 2, "jetstream": 2}
    reg.invalidate()
    reg.run("livez")
    assert calls == {"ping": 3, "eventloop": 3, "nats": 2, "jetstream": 2}


def test_run_all_bypasses_the_cache_without_changing_it() -> None:
    reg, calls = counting_registry(FakeClock(), ttl=1.0)
    reg.run("readyz")
    seen: list[str] = []
    reg.listeners.append(lambda name, _reason: seen.append(name))
    assert reg.run_all() == {
        "ping": None,
        "eventloop": None,
        "nats": None,
        "jetstream": "streams and KV buckets not provisioned yet",
    }
    assert seen == ["ping", "eventloop", "nats", "jetstream"]
    assert calls == {"ping": 2, "eventloop": 1, "nats": 2, "jetstream": 2}
    reg.run("readyz")
    assert calls["nats"] == 2


def test_without_ttl_every_run_runs_the_checks() -> None:
    reg, calls = counting_registry(FakeClock(), ttl=0)
    reg.run("readyz")
    reg.run("readyz")
    assert calls["nats"] == 2


def test_the_report_cache_is_bounded() -> None:
    reg, calls = counting_registry(FakeClock(), ttl=1.0)
    for i in range(2000):
        reg.run("readyz", exclude=[f"x{i}"])
    assert len(reg._reports) <= 256
    assert calls["nats"] == 1


async def test_a_probe_storm_runs_each_check_once() -> None:
    clock = FakeClock()
    reg, calls = counting_registry(clock, ttl=1.0)
    server = HttpServer(build_app(CollectorRegistry(), reg), "127.0.0.1:0")
    await server.start()
    paths = ["/livez", "/readyz", "/healthz", "/readyz?verbose", "/healthz?exclude=nats", "/livez/ping"]
    try:
        async with aiohttp.ClientSession() as session:

            async def probe(i: int) -> int:
                async with session.get(server.base_url + paths[i % len(paths)]) as r:
                    await r.read()
                    return r.status

            statuses = await asyncio.gather(*(probe(i) for i in range(1000)))
    finally:
        await server.stop()
    passing = {"/livez", "/livez/ping"}  # the rest include the failing jetstream check
    assert statuses == [200 if paths[i % len(paths)] in passing else 503 for i in range(1000)]
    assert calls == {"ping": 1, "eventloop": 1, "nats": 1, "jetstream": 1}


# -- watchdog -------------------------------------------------------------------------


class FakeTimer:
    """A clock plus a sleep() that only returns when the test calls tick()."""

    def __init__(self) -> None:
        self.now = 50.0
        self._sleeping = asyncio.Event()
        self._wake = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, _delay: float) -> None:
        self._wake.clear()
        self._sleeping.set()
        await self._wake.wait()

    async def tick(self, elapsed: float) -> None:
        """Let ``elapsed`` seconds pass while the watchdog sleeps, then let it wake up once."""
        await self._sleeping.wait()
        self._sleeping.clear()
        self.now += elapsed
        self._wake.set()
        await self._sleeping.wait()  # it measured and went back to sleep


async def test_watchdog_measures_lateness_over_a_window() -> None:
    timer = FakeTimer()
    wd = LoopWatchdog(0.25, window=3.0, clock=timer.clock, sleep=timer.sleep)
    check = eventloop_check(wd, max_lag=1.0)
    assert check() == "event loop watchdog is not running"
    wd.start()
    try:
        await timer.tick(0.25)
        assert wd.ticks == 1 and wd.lag == 0.0 and check() is None
        await timer.tick(0.25 + 1.75)  # woke up 1.75 s late
        assert wd.lag == 1.75
        assert check() == "event loop lagging 1.8s > 1.0s"
        for _ in range(12):  # 3 s on time: the late wake-up is still within the window
            await timer.tick(0.25)
        assert wd.lag == 1.75
        await timer.tick(0.25)  # and then it has left it
        assert wd.lag == 0.0 and check() is None
        await timer.tick(0.25 + 0.5)
        assert wd.lag == 0.5 and check() is None  # below max_loop_lag
    finally:
        await wd.stop()
    assert not wd.running
    assert check() == "event loop watchdog is not running"


async def test_eventloop_fails_when_the_watchdog_stops_ticking() -> None:
    timer = FakeTimer()
    wd = LoopWatchdog(0.25, clock=timer.clock, sleep=timer.sleep)
    check = eventloop_check(wd, max_lag=1.0)
    wd.start()
    try:
        await timer.tick(0.25)
        timer.now += 1.25  # no wake-up for max_loop_lag + interval: still fine
        assert check() is None
        timer.now += 0.25
        assert check() == "event loop watchdog has not ticked for 1.5s"
    finally:
        await wd.stop()


async def test_watchdog_sees_a_really_blocked_loop() -> None:
    wd = LoopWatchdog(0.02)
    check = eventloop_check(wd, max_lag=0.1)
    wd.start()
    try:
        await wait_for(lambda: wd.ticks >= 1, what="first tick", step=0.01)
        assert check() is None

        async def block() -> None:
            time.sleep(0.3)  # noqa: ASYNC251 - a blocking call on the loop is what the watchdog is for

        await asyncio.create_task(block())
        await wait_for(lambda: wd.lag > 0.1, what="lag measured", step=0.01)
        reason = check()
        assert reason is not None and reason.startswith("event loop lagging 0.")
        assert reason.endswith("s > 0.1s")
    finally:
        await wd.stop()


# -- component checks -----------------------------------------------------------------


def test_formatting() -> None:
    assert [secs(x) for x in (1.0, 1.8342, 0.1, 0.25, 12.0)] == ["1.0s", "1.8s", "0.1s", "0.25s", "12.0s"]
    assert [span(x) for x in (300.0, 90.0, 60.0)] == ["5m", "90s", "1m"]


def test_nats_check() -> None:
    bus: Any = None
    check = nats_check(lambda: bus)
    assert check() == "not connected to NATS"
    bus = SimpleNamespace(connected=False)
    assert check() == "not connected to NATS"
    bus.connected = True
    assert check() is None


def test_consumer_lag_names_the_stream_and_count() -> None:
    metrics = SelfMetrics()
    check = consumer_lag_check(metrics.consumer_pending, 100_000)
    assert check() is None  # no consumers yet
    metrics.consumer_pending.labels("TMC_SYNCER").set(100_000)
    metrics.consumer_pending.labels("TMC_PLACEMENT").set(3)
    assert check() is None
    metrics.consumer_pending.labels("TMC_SYNCER").set(150_000)
    assert check() == "TMC_SYNCER has 150000 pending messages (max 100000)"


def _fake_supervisor(**states: AgentState) -> Any:
    return SimpleNamespace(states=states)


def _started_context() -> Any:
    ctx = SimpleNamespace(started=asyncio.Event())
    ctx.started.set()
    return ctx


async def test_agent_check_states_and_crash_looping() -> None:
    clock = FakeClock()
    state = AgentState("metrics")
    sup: Any = None
    check = agent_check("metrics", lambda: sup, clock=clock)
    assert check() == "not started"
    sup = _fake_supervisor(metrics=state)
    assert check() == "starting"
    state.status = "running"
    assert check() == "starting"  # task runs, but the agent has not started consuming
    state.context = _started_context()
    assert check() is None

    # one crash: in backoff, then healthy again
    state.status, state.restarts, state.last_error = "backoff", 1, "RuntimeError: boom 1"
    assert check() == "restarting after crash (RuntimeError: boom 1)"
    state.status = "running"
    assert check() is None
    clock.now += 60
    state.restarts = 2
    assert check() is None
    clock.now += 60
    state.restarts, state.last_error = 4, "RuntimeError: boom 4"
    assert check() == "crash-looping: 4 restarts in 5m, last error: RuntimeError: boom 4"
    clock.now += 180  # the first restart leaves the 5-minute window: still 3
    assert check() == "crash-looping: 3 restarts in 5m, last error: RuntimeError: boom 4"
    clock.now += 60  # only the last two remain
    assert check() is None
    state.status = "stopped"
    assert check() == "stopped"


def test_restart_tracker_window() -> None:
    tracker = RestartTracker(window=300.0)
    assert tracker.observe(0, 0.0) == 0
    assert tracker.observe(2, 10.0) == 2
    assert tracker.observe(3, 200.0) == 3
    assert tracker.observe(3, 310.0) == 1
    assert tracker.observe(3, 500.0) == 0


async def test_a_real_supervised_agent_that_crash_loops() -> None:
    stop = asyncio.Event()
    agent = CrashingAgent(crashes=4)
    metrics = SelfMetrics()

    async def no_sleep(_delay: float, _stop: asyncio.Event) -> None:
        await asyncio.sleep(0)

    def make_context() -> AgentContext:
        return AgentContext(None, Config(), metrics, stop, time.time)  # type: ignore[arg-type]

    sup = Supervisor([agent], make_context, metrics, stop, sleep=no_sleep)
    check = agent_check("crashy", lambda: sup)
    sup.start()
    try:
        await wait_for(lambda: sup.states["crashy"].started, what="agent started")
        assert check() == "crash-looping: 4 restarts in 5m, last error: RuntimeError: boom 4"
    finally:
        stop.set()
        assert await sup.wait_stopped(5.0)
    assert check() == "stopped"


class FakeJs:
    def __init__(self) -> None:
        self.errors: dict[str, BaseException] = {}
        self.calls: list[str] = []

    async def stream_info(self, name: str) -> object:
        self.calls.append(name)
        if name in self.errors:
            raise self.errors[name]
        return SimpleNamespace(name=name)


async def test_jetstream_probe() -> None:
    clock = FakeClock()
    bus: Any = SimpleNamespace(connected=True, js=FakeJs())
    provisioned = False
    probe = JetStreamProbe(lambda: bus, lambda: provisioned, interval=5.0, clock=clock)
    assert probe.check() == "streams and KV buckets not provisioned yet"
    assert not probe.due()
    provisioned = True
    assert probe.check() is None and probe.due()
    assert await probe.probe() is None
    assert bus.js.calls == ["TMC_SYNCER", "KV_tmc-clusters"]
    assert not probe.due()
    clock.now += 5.0
    assert probe.due()
    bus.js.errors["KV_tmc-clusters"] = RuntimeError("stream not found")
    bus.js.errors["TMC_SYNCER"] = TimeoutError()
    await probe.probe()
    assert probe.check() == (
        "stream TMC_SYNCER unreachable: no answer within 2.0s; "
        "KV bucket tmc-clusters unreachable: RuntimeError: stream not found"
    )
    bus.connected = False
    assert probe.check() == "JetStream unreachable: not connected to NATS"
    clock.now += 10
    assert not probe.due()  # no probing while disconnected


async def test_daemon_checks_publish_the_status_gauge() -> None:
    metrics = SelfMetrics()
    reg = CheckRegistry(cache_ttl=1.0)
    bus: Any = SimpleNamespace(connected=True, js=FakeJs(), state_listeners=[])
    provisioned = True
    checks = DaemonChecks(
        reg, HealthConfig(), metrics, bus=lambda: bus, provisioned=lambda: provisioned, refresh_interval=60.0
    )
    checks.register()
    assert reg.names("livez") == ["ping", "eventloop"]
    assert reg.names("readyz") == ["ping", "nats", "jetstream"]
    assert reg.names("healthz") == ["ping", "eventloop", "nats", "jetstream", "consumer-lag"]

    def status(check: str) -> float | None:
        return metrics.registry.get_sample_value("tmc_health_check_status", {"check": check})

    checks.start()
    try:
        # the background task probes JetStream, runs every check and hooks the bus' state changes
        await wait_for(lambda: status("nats") is not None, what="first refresh")
        assert bus.js.calls == ["TMC_SYNCER", "KV_tmc-clusters"]
        assert [status(c) for c in ("ping", "eventloop", "nats", "jetstream", "consumer-lag")] == [1, 1, 1, 1, 1]
        assert bus.state_listeners == [checks._on_bus_state]
        bus.connected = False
        for cb in bus.state_listeners:  # what Bus does on a disconnect: refresh at once, not in 60 s
            cb(False)
        await wait_for(lambda: status("nats") == 0, what="gauge refreshed on disconnect")
        assert status("jetstream") == 0 and status("ping") == 1
    finally:
        await checks.stop()
    assert bus.state_listeners == [] and not checks.watchdog.running


# -- a running daemon ------------------------------------------------------------------


async def test_probe_endpoints_of_a_running_daemon(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    # a server of its own: with no backlog to consume, nothing but the test sets the pending gauge
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics,health")
    async with running_daemon(cfg) as d, aiohttp.ClientSession() as s:
        base = d.http.base_url
        # exact outputs leave out `eventloop`: a loaded CI machine can make the loop late for real
        assert await get(s, f"{base}/livez?verbose&exclude=eventloop") == (200, "[+]ping ok\nlivez check passed\n")
        _, text = await get(s, f"{base}/livez?verbose")
        assert text.splitlines()[1].startswith(("[+]eventloop ok", "[-]eventloop failed: "))
        assert await get(s, f"{base}/readyz?verbose") == (
            200,
            "[+]ping ok\n[+]nats ok\n[+]jetstream ok\n[+]api-cache ok\n[+]agent-metrics ok\n[+]agent-health ok\n"
            "readyz check passed\n",
        )
        status, text = await get(s, f"{base}/healthz?verbose&exclude=eventloop")
        assert status == 200
        assert text.splitlines() == [
            "[+]ping ok",
            "[+]nats ok",
            "[+]jetstream ok",
            "[+]consumer-lag ok",
            "[+]api-cache ok",
            "[+]agent-metrics ok",
            "[+]agent-health ok",
            "healthz check passed",
        ]
        assert await get(s, f"{base}/healthz?exclude=eventloop") == (200, "ok")
        assert (await get(s, f"{base}/livez/eventloop"))[0] in (200, 503)  # it exists in livez
        assert (await get(s, f"{base}/readyz/eventloop"))[0] == 404
        assert (await get(s, f"{base}/healthz/nope"))[0] == 404
        status, text = await get(s, f"{base}/healthz?verbose&exclude=nats&exclude=agent-health&exclude=eventloop")
        assert status == 200 and "nats ok" not in text and "agent-health" not in text and "[+]jetstream ok" in text

        # consumer lag fails healthz (with the stream and the count) but not readiness
        d.metrics.consumer_pending.labels("TMC_SYNCER").set(250_000)
        d.checks.invalidate()
        status, text = await get(s, f"{base}/healthz?exclude=eventloop")
        assert status == 503
        assert text == (
            "[-]consumer-lag failed: TMC_SYNCER has 250000 pending messages (max 100000)\nhealthz check failed\n"
        )
        assert await get(s, f"{base}/readyz") == (200, "ok")
        assert await get(s, f"{base}/healthz?exclude=consumer-lag&exclude=eventloop") == (200, "ok")

        text = await scrape(base)
        assert "# TYPE tmc_health_check_status gauge" in text
        assert sample(text, "tmc_health_check_status", check="consumer-lag") == 0
        for check in ("ping", "nats", "jetstream", "api-cache", "agent-metrics", "agent-health"):
            assert sample(text, "tmc_health_check_status", check=check) == 1, check
        d.metrics.consumer_pending.labels("TMC_SYNCER").set(0)
