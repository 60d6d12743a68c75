"""`kill -9` of tmcd with the embedded NATS, as real processes: the restarted tmcd serves NATS
on the same port, a running `tmcd sim` reconnects on its own and its events flow again, and
Ctrl-C then stops the simulator cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.helpers import free_port, sample, scrape

READY_TIMEOUT = 30.0


def _nats_servers_of(data: Path) -> list[int]:
    """Pids of nats-server processes whose store is under ``data``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(data) in cmdline and "nats-server" in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


async def _tmcd(data: Path, port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tmcd.cli.main",
        "run",
        "--data-dir",
        str(data),
        "--http-listen",
        f"127.0.0.1:{port}",
        "--agents",
        "metrics",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TMCD_CONSUMER_FETCH_TIMEOUT": "0.2"},
    )


async def _until(
    what: str, cond: Callable[[], Awaitable[object]], timeout: float, proc: asyncio.subprocess.Process | None = None
) -> None:
    """Poll ``cond`` until truthy, bounded; fails early when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            assert proc.returncode is None, f"process exited early waiting for {what}"
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def _ready(base: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{base}/readyz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def _processed(base: str) -> float:
    try:
        return sample(await scrape(base), "tmc_events_processed_total", stream="TMC_SYNCER")
    except aiohttp.ClientError:
        return 0.0


async def _line(stream: asyncio.StreamReader, text: str, timeout: float, seen: list[str]) -> None:
    async def read() -> None:
        while True:
            line = (await stream.readline()).decode()
            assert line, f"stream ended before {text!r}: {''.join(seen)}"
            seen.append(line)
            if text in line:
                return

    await asyncio.wait_for(read(), timeout)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_kill_9_restart_keeps_the_port_and_the_simulator_reconnects(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first_port, second_port = free_port(), free_port()
    first = await _tmcd(data, first_port)
    sim: asyncio.subprocess.Process | None = None
    second: asyncio.subprocess.Process | None = None
    try:
        first_base = f"http://127.0.0.1:{first_port}"
        await _until("tmcd ready", lambda: _ready(first_base), READY_TIMEOUT, first)
        url = (data / "nats.url").read_text().strip()
        assert url.startswith("nats://127.0.0.1:") and (data / "nats.port").read_text().strip() == url.split(":")[-1]

        env = {k: v for k, v in os.environ.items() if k not in ("TMCD_NATS_URL", "TMCD_DATA_DIR")}
        sim = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tmcd.cli.main", "sim", "--data-dir", str(data), "--clusters", "3"),
            *("--rate", "200", "--heartbeat-interval", "1"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert sim.stderr is not None and sim.stdout is not None
        sim_log: list[str] = []
        await _line(sim.stderr, f"on {url}", READY_TIMEOUT, sim_log)  # it found the URL in the data dir
        await _until("events on the first tmcd", lambda: _processed(first_base), READY_TIMEOUT, first)

        first.kill()  # kill -9: no shutdown at all
        await first.wait()
        # the embedded nats-server dies with it (PR_SET_PDEATHSIG); the JetStream store stays
        await _until("the nats-server to die with tmcd", lambda: _true(not _nats_servers_of(data)), 15)
        await _line(sim.stderr, "disconnected from NATS", 15, sim_log)

        second = await _tmcd(data, second_port)
        second_base = f"http://127.0.0.1:{second_port}"
        await _until("the restarted tmcd ready", lambda: _ready(second_base), READY_TIMEOUT, second)
        assert (data / "nats.url").read_text().strip() == url  # the same port
        await _line(sim.stderr, "reconnected to NATS", READY_TIMEOUT, sim_log)  # on its own
        after_reconnect = await _processed(second_base)

        async def growing() -> bool:
            return await _processed(second_base) >= after_reconnect + 200  # a second's worth of new events

        await _until("the simulator's events on the restarted tmcd", growing, READY_TIMEOUT, second)

        began = time.monotonic()
        sim.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(sim.communicate(), 15)
        assert sim.returncode == 0, "".join(sim_log) + err.decode()
        assert time.monotonic() - began < 10.0
        assert "Traceback" not in "".join(sim_log) + err.decode()
        assert out.decode().startswith("sim: published heartbeats=")

        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 20) == 0
        assert second.stderr is not None
        second_log = (await second.stderr.read()).decode()
        assert f"kept port {url.split(':')[-1]}" in second_log
        assert second_log.count("start-up heap frozen") == 1  # once, after start-up
        assert not (data / "nats.url").exists() and (data / "nats.port").exists()
    finally:
        for proc in (sim, second, first):
            if proc is not None:
                await _stop(proc)


async def _true(value: bool) -> bool:
    return value
