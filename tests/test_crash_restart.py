"""`kill -9` of tmcd with the embedded NATS, as real processes: the restarted tmcd serves NATS
on the same port, a running `tmcd sim` reconnects on its own and its events flow again, and
Ctrl-C then stops the simulator cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp

from tests.helpers import (
    free_port,
    kill,
    nats_server_pids,
    read_until,
    sample,
    scrape,
    start_tmcd,
    wait_for,
    wait_ready,
)

READY_TIMEOUT = 30.0


async def _tmcd(data: Path, port: int) -> asyncio.subprocess.Process:
    return await start_tmcd(
        *("run", "--data-dir", str(data), "--http-listen", f"127.0.0.1:{port}", "--agents", "metrics"),
        env={"TMCD_CONSUMER_FETCH_TIMEOUT": "0.2"},
    )


async def _processed(base: str) -> float:
    try:
        return sample(await scrape(base), "tmc_events_processed_total", stream="TMC_SYNCER")
    except aiohttp.ClientError:
        return 0.0


async def test_kill_9_restart_keeps_the_port_and_the_simulator_reconnects(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first_port, second_port = free_port(), free_port()
    first = await _tmcd(data, first_port)
    sim: asyncio.subprocess.Process | None = None
    second: asyncio.subprocess.Process | None = None
    try:
        first_base = f"http://127.0.0.1:{first_port}"
        await wait_ready(first_base, first, READY_TIMEOUT)
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
        await read_until(sim.stderr, f"on {url}", sim_log, READY_TIMEOUT)  # it found the URL in the data dir
        await wait_for(lambda: _processed(first_base), timeout=READY_TIMEOUT, what="events on the first tmcd")

        first.kill()  # kill -9: no shutdown at all
        await first.wait()
        # the embedded nats-server dies with it (PR_SET_PDEATHSIG); the JetStream store stays
        await wait_for(lambda: not nats_server_pids(data), timeout=READY_TIMEOUT, what="the nats-server to die")
        await read_until(sim.stderr, "disconnected from NATS", sim_log, READY_TIMEOUT)

        second = await _tmcd(data, second_port)
        second_base = f"http://127.0.0.1:{second_port}"
        await wait_ready(second_base, second, READY_TIMEOUT)
        assert (data / "nats.url").read_text().strip() == url  # the same port
        await read_until(sim.stderr, "reconnected to NATS", sim_log, READY_TIMEOUT)  # on its own
        after_reconnect = await _processed(second_base)

        async def growing() -> bool:
            assert second.returncode is None, "the restarted tmcd exited"
            return await _processed(second_base) >= after_reconnect + 200  # a second's worth of new events

        await wait_for(growing, timeout=READY_TIMEOUT, what="the simulator's events on the restarted tmcd")

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
            await kill(proc)
