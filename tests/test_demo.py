"""`tmcd demo` as a real process: prints its URLs, ingests the simulated fleet, and Ctrl-C
(SIGINT) stops tmcd, the simulator and the embedded nats-server, leaving no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.helpers import free_port, sample, scrape


def _processes_using(path: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline and "nats-server" in cmdline:
            pids.append(int(entry.name))
    return pids


async def test_demo_runs_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "demo"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tmcd.cli.main",
        "demo",
        "--clusters",
        "5",
        "--rate",
        "200",
        "--http-listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(data),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TMCD_CONSUMER_FETCH_TIMEOUT": "0.2"},
    )
    try:
        assert proc.stdout is not None
        banner = []
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "demo exited before printing its banner"
            banner.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        text = "".join(banner)
        base = f"http://127.0.0.1:{port}"
        for expected in (f"{base}/metrics", f"{base}/readyz", "nats://127.0.0.1:", "kubectl tmc"):
            assert expected in text, (expected, text)
        assert _processes_using(data), "embedded nats-server not running"

        for _ in range(300):  # bounded: up to ~15 s for events to flow
            metrics = await scrape(base)
            if sample(metrics, "tmc_events_processed_total", stream="TMC_SYNCER") > 0:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no syncer events processed")

        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 15)
        stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
        assert code == 0, stderr
        assert _processes_using(data) == []
        assert not (data / "nats.url").exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
