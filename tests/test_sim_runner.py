"""The simulator on a real nats-server: published streams, control request/reply, the `sim` command."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, TypeVar

import aiohttp
import pytest
from click.testing import CliRunner
from nats.aio.client import Client
from nats.aio.msg import Msg

from tests.helpers import daemon_config, free_port, kill, nats_connect, running_daemon, wait_for
from tmcd.bus import Bus
from tmcd.config import NatsConfig
from tmcd.contracts import subjects
from tmcd.contracts.codec import decode
from tmcd.contracts.messages import (
    ControlReply,
    Message,
    SyncAction,
    SyncControl,
    SyncerHeartbeat,
    SyncEvent,
    SyncEventBatch,
)
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.sim.cli import sim
from tmcd.sim.model import SimOptions, cluster_names
from tmcd.sim.runner import run_sim

M = TypeVar("M", bound=Message)

SENTINEL = "tmc.syncer.test-end.sentinel"
HEALTH_WAIT = 30.0
"""Bound on waiting for the health tree: generous for a loaded machine, far below the 600 s
heartbeat interval the test sets (so only the start-up heartbeats can put clusters there)."""
SUMMARY = re.compile(r"^sim: published heartbeats=(\d+) sync=(\d+) conn=(\d+) in [0-9.]+s$")


class Received:
    """Every message seen on tmc.syncer.>, decoded, with a way to wait for a condition."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.changed = asyncio.Event()
        self.done = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        if msg.subject == SENTINEL:
            self.done.set()
            return
        self.messages.append(decode(msg.subject, msg.data))
        self.changed.set()

    async def until(self, pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(loop(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    def of(self, tp: type[M]) -> list[M]:
        """Messages of a type; sync events include those inside batches."""
        out: list[M] = []
        for m in self.messages:
            if isinstance(m, tp):
                out.append(m)
            elif tp is SyncEvent and isinstance(m, SyncEventBatch):
                out.extend(m.events)  # type: ignore[arg-type]
        return out


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = Bus(NatsConfig(), SelfMetrics(), url=nats_url)
    await b.connect(retry=False)
    yield b
    await b.close()


@pytest.fixture
async def received(nats_url: str) -> AsyncIterator[Received]:
    nc: Client = await nats_connect(nats_url)
    rec = Received()
    await nc.subscribe("tmc.syncer.>", cb=rec.on_msg)
    await nc.flush()
    yield rec
    await nc.drain()


async def finish(bus: Bus, rec: Received) -> None:
    """Wait until the subscriber has everything the bus published before now."""
    await bus.publish_raw(SENTINEL, b"")
    await bus.flush()
    await asyncio.wait_for(rec.done.wait(), 10)


async def test_publishes_heartbeats_sync_and_counts(bus: Bus, received: Received) -> None:
    opts = SimOptions(clusters=4, rate=400.0, seed=5, heartbeat_interval=0.1)
    stats = await run_sim(bus, opts, asyncio.Event(), duration=0.5, tick=0.02)
    await finish(bus, received)
    hbs = received.of(SyncerHeartbeat)
    syncs = received.of(SyncEvent)
    assert {h.cluster for h in hbs} == set(cluster_names(4))
    assert (stats.heartbeats, stats.sync) == (len(hbs), len(syncs))
    assert 198 <= stats.sync <= 200  # rate x duration (the fraction is carried over)
    assert stats.sync_failed == sum(not e.ok for e in syncs)
    assert 0.45 <= stats.elapsed <= 0.5


async def test_fake_clock_and_progress_log(bus: Bus, received: Received, caplog: pytest.LogCaptureFixture) -> None:
    fake = [1_700_000_000.0]

    def clock() -> float:
        fake[0] += 0.25
        return fake[0]

    caplog.set_level(logging.INFO, logger="tmcd.sim")
    opts = SimOptions(clusters=3, rate=10.0, heartbeat_interval=2.0)
    stats = await run_sim(bus, opts, asyncio.Event(), duration=25.0, clock=clock, tick=0.001)
    await finish(bus, received)
    assert stats.sync == len(received.of(SyncEvent)) == 250
    assert stats.heartbeats == len(received.of(SyncerHeartbeat))
    assert 39 <= stats.heartbeats <= 42  # 3 clusters x (one at start + 12 or 13 in 25 s at 2 s)
    first = received.of(SyncerHeartbeat)[:3]  # at start, as a starting syncer does
    assert sorted(h.cluster for h in first) == cluster_names(3)
    assert {h.timestamp for h in first} == {1_700_000_000.0 + 0.5}  # the first poll (clock read at start, then)
    assert stats.elapsed == 25.0
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sim: ")]
    assert len(progress) == 2 and "sync=" in progress[0]


async def test_stop_is_immediate(bus: Bus) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run_sim(bus, SimOptions(clusters=2, rate=10.0), stop, tick=30.0))
    await asyncio.sleep(0)  # let it start waiting
    started = time.monotonic()
    stop.set()
    stats = await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 2.0 and stats.elapsed < 2.0


async def test_control_pause_resume_force_and_unknown(nats_url: str, bus: Bus, received: Received) -> None:
    stop = asyncio.Event()
    opts = SimOptions(clusters=3, rate=300.0, seed=2, heartbeat_interval=0.05, batch=False)
    task = asyncio.create_task(run_sim(bus, opts, stop, tick=0.01))
    client = Bus(NatsConfig(), SelfMetrics(), url=nats_url)
    await client.connect(retry=False)

    async def ctl(cluster: str, action: SyncAction) -> ControlReply:
        req = SyncControl(cluster=cluster, action=action, timestamp=time.time(), requested_by="test")
        return await client.request(subjects.ctl_sync(cluster, action), req, ControlReply, timeout=5)

    def index_of(pred: Callable[[Message], bool], after: int = 0) -> int | None:
        for i in range(after, len(received.messages)):
            if pred(received.messages[i]):
                return i
        return None

    def is_hb(cluster: str, paused: bool) -> Callable[[Message], bool]:
        return lambda m: isinstance(m, SyncerHeartbeat) and m.cluster == cluster and m.paused == paused

    def is_sync(cluster: str) -> Callable[[Message], bool]:
        return lambda m: isinstance(m, SyncEvent) and m.cluster == cluster

    try:
        await received.until(lambda: index_of(is_sync("sim-002")) is not None, "sync events from sim-002")

        reply = await ctl("sim-002", "pause")
        assert (reply.ok, reply.code, reply.state, reply.target) == (True, 200, "paused", "sim-002")
        await received.until(lambda: index_of(is_hb("sim-002", True)) is not None, "a paused heartbeat")
        paused_at = index_of(is_hb("sim-002", True))
        assert paused_at is not None
        await received.until(
            lambda: len(received.of(SyncEvent)) > 0 and len(received.messages) > paused_at + 150, "more"
        )
        assert index_of(is_sync("sim-002"), paused_at) is None  # nothing from sim-002 while paused
        assert index_of(is_hb("sim-002", False), paused_at) is None

        refused = await ctl("sim-002", "force")
        assert (refused.ok, refused.code) == (False, 409)

        missing = await ctl("sim-404", "pause")
        assert (missing.ok, missing.code) == (False, 404)

        reply = await ctl("sim-002", "resume")
        assert (reply.ok, reply.state) == (True, "running")
        await received.until(lambda: index_of(is_hb("sim-002", False), paused_at) is not None, "a running heartbeat")
        resumed_at = index_of(is_hb("sim-002", False), paused_at)
        assert resumed_at is not None
        await received.until(lambda: index_of(is_sync("sim-002"), resumed_at) is not None, "sync after resume")

        synced = set(next(m.synced_resources for m in received.of(SyncerHeartbeat) if m.cluster == "sim-001"))
        mark = len(received.messages)
        reply = await ctl("sim-001", "force")
        assert (reply.ok, reply.state) == (True, "resyncing")

        def resynced() -> bool:
            seen = {
                m.resource
                for m in received.messages[mark:]
                if isinstance(m, SyncEvent) and m.cluster == "sim-001" and (m.op, m.direction) == ("update", "down")
            }
            return synced <= seen

        await received.until(resynced, "a full re-sync of sim-001")
    finally:
        stop.set()
        stats = await asyncio.wait_for(task, 10)
        await client.close()
    assert stats.controls == 5


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    cases = [
        (["--clusters", "0"], "--clusters", "at least 1"),
        (["--clusters", "many"], "--clusters", "not a valid integer"),
        (["--rate", "-1"], "--rate", ">= 0"),
        (["--clusters", "3", "--stop-heartbeats", "sim-001,sim-007"], "--stop-heartbeats", "sim-001..sim-003"),
        (["--clusters", "3", "--disconnect", "nope"], "--disconnect", "unknown cluster 'nope'"),
        (["--error-ratio", "sim-001=1.5"], "--error-ratio", "between 0 and 1"),
        (["--error-ratio", "sim-001"], "--error-ratio", "NAME=RATIO"),
        (["--error-ratio", "sim-001=lots"], "--error-ratio", "NAME=RATIO"),
        (["--duration", "0"], "--duration", "> 0"),
        (["--heartbeat-interval", "0"], "--heartbeat-interval", "> 0"),
        (["--bogus"], "--bogus", "No such option"),
    ]
    for args, option, expected in cases:
        result = CliRunner().invoke(sim, [*args, "--nats-url", "nats://127.0.0.1:1", "--data-dir", str(tmp_path)])
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert option in lines[0] and expected in lines[0], (args, lines[0])
        assert result.stdout == ""


def test_cli_without_url(tmp_path: Path) -> None:
    result = CliRunner().invoke(sim, ["--data-dir", str(tmp_path)], env={"TMCD_NATS_URL": None})
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: no NATS URL: pass --nats-url or start 'tmcd run' (which writes {tmp_path / 'nats.url'})\n"
    )


def test_cli_unreachable_url_from_env_and_data_dir(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    (tmp_path / "nats.url").write_text(url + "\n")
    env = {"TMCD_NATS_URL": None, "TMCD_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(sim, ["--duration", "1"], env=env)
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot reach NATS at {url}: Connection refused\n"

    other = f"nats://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(sim, ["--duration", "1"], env={**env, "TMCD_NATS_URL": other})
    assert result.exit_code == 1 and result.stderr.startswith(f"error: cannot reach NATS at {other}: ")


def _sim_cmd(nats_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tmcd.sim.cli", "--nats-url", nats_url, *args]


def test_subprocess_run_with_duration(nats_url: str) -> None:
    proc = subprocess.run(
        _sim_cmd(nats_url, "--clusters", "3", "--rate", "50", "--duration", "1"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    match = SUMMARY.match(proc.stdout.strip())
    assert match is not None, proc.stdout
    assert 49 <= int(match.group(2)) <= 50


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_subprocess_stops_cleanly_on_signal(nats_url: str, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        _sim_cmd(nats_url, "--clusters", "2", "--rate", "20"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "simulating 2 clusters" in line:
                break
        else:
            raise AssertionError("sim never started")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert SUMMARY.match(out.strip()) is not None, out


async def test_batches_by_default_and_single_events_on_request(bus: Bus, received: Received) -> None:
    opts = SimOptions(clusters=2, rate=2000.0, seed=3, heartbeat_interval=10.0, batch_max=50)
    stats = await run_sim(bus, opts, asyncio.Event(), duration=0.3, tick=0.02)
    await finish(bus, received)
    batches = [m for m in received.messages if isinstance(m, SyncEventBatch)]
    assert batches and stats.batches == len(batches)
    assert all(0 < len(b.events) <= 50 for b in batches)
    assert all(e.cluster == b.cluster for b in batches for e in b.events)
    assert sum(len(b.events) for b in batches) == stats.sync
    assert not [m for m in received.messages if isinstance(m, SyncEvent)]

    received.messages.clear()
    received.done.clear()
    single = SimOptions(clusters=2, rate=200.0, seed=3, heartbeat_interval=10.0, batch=False)
    stats = await run_sim(bus, single, asyncio.Event(), duration=0.2, tick=0.02)
    await finish(bus, received)
    assert not [m for m in received.messages if isinstance(m, SyncEventBatch)]
    assert len([m for m in received.messages if isinstance(m, SyncEvent)]) == stats.sync > 0


# --------------------------------------------------------------------------- start-up heartbeats, Ctrl-C in every state


async def test_fresh_clusters_appear_without_waiting_a_heartbeat_interval(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Each simulated syncer heartbeats as it starts: with a 10-minute heartbeat interval the
    whole fleet is still in the health tree at once (bounded well below those 10 minutes)."""
    interval = 1.0
    cfg = daemon_config(
        nats_server.url, tmp_path, agents="health", **{"health.interval": interval, "health.startup_grace": 0.0}
    )
    sim_bus = Bus(NatsConfig(), SelfMetrics(), url=nats_server.url)
    async with running_daemon(cfg) as d:
        await sim_bus.connect(retry=False)
        stop = asyncio.Event()
        task = asyncio.create_task(run_sim(sim_bus, SimOptions(clusters=5, rate=0.0, heartbeat_interval=600.0), stop))
        try:

            async def fleet() -> bool:
                async with aiohttp.ClientSession() as s, s.get(f"{d.http.base_url}/api/v1/health") as r:
                    tree = await r.json()
                names = {c["name"] for loc in tree["locations"] for c in loc["clusters"]}
                return names == set(cluster_names(5))

            await wait_for(fleet, timeout=HEALTH_WAIT, what="all five clusters in /api/v1/health")
        finally:
            stop.set()
            stats = await asyncio.wait_for(task, 10)
            await sim_bus.close()
    assert stats.heartbeats == 5  # one each, at start; the next ones are minutes away


def _read_until(stream: IO[str], text: str, timeout: float) -> list[str]:
    """Lines of ``stream`` up to the one containing ``text`` (a reader thread keeps this bounded)."""
    lines: list[str] = []
    found = threading.Event()

    def reader() -> None:
        for line in stream:
            lines.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    assert found.wait(timeout), f"no {text!r} within {timeout}s: {''.join(lines)}"
    return lines


def _interrupt(proc: subprocess.Popen[str], timeout: float = 15.0) -> tuple[str, str, float]:
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return out, err, time.monotonic() - began


def test_ctrl_c_while_reconnecting_exits_cleanly(nats_server: EmbeddedNats) -> None:
    proc = subprocess.Popen(
        _sim_cmd(nats_server.url, "--clusters", "2", "--rate", "50"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        _read_until(proc.stderr, "simulating 2 clusters", 30)
        nats_server.stop()  # tmcd going away: the simulator keeps publishing into its buffer and reconnects
        _read_until(proc.stderr, "disconnected from NATS", 30)
        out, err, took = _interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and took < 10.0
    assert "what was published since it went away is lost" in err
    assert SUMMARY.match(out.strip()) is not None, out


async def test_ctrl_c_while_connecting_exits_cleanly() -> None:
    """A server that accepts TCP but never says hello: `sim` waits for the handshake; Ctrl-C ends it."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        *_sim_cmd(f"nats://127.0.0.1:{port}", "--clusters", "2"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for(lambda: len(accepted) >= 2, timeout=30, what="the probe and the NATS connection")
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
        took = time.monotonic() - began
    finally:
        await kill(proc)
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode() and took < 5.0
    assert out.decode().startswith("sim: published heartbeats=0 sync=0 conn=0 in ")
