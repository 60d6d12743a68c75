"""`tmcd demo` as a real process: prints its URLs, ingests the simulated fleet, and Ctrl-C
(SIGINT) stops tmcd, the simulator and the embedded nats-server, leaving no process behind."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.helpers import free_port, kill, nats_server_pids, read_until, sample, scrape, start_tmcd, wait_for


async def test_demo_runs_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "demo"
    proc = await start_tmcd(
        *("demo", "--clusters", "5", "--rate", "200", "--http-listen", f"127.0.0.1:{port}", "--data-dir", str(data)),
        env={"TMCD_CONSUMER_FETCH_TIMEOUT": "0.2"},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        banner: list[str] = []
        await read_until(proc.stdout, "Press Ctrl-C to stop.", banner)
        text = "".join(banner)
        base = f"http://127.0.0.1:{port}"
        for expected in (f"{base}/metrics", f"{base}/readyz", "nats://127.0.0.1:", "kubectl tmc"):
            assert expected in text, (expected, text)
        assert nats_server_pids(data), "embedded nats-server not running"

        async def processed() -> float:
            return sample(await scrape(base), "tmc_events_processed_total", stream="TMC_SYNCER")

        await wait_for(processed, timeout=30, what="syncer events processed", step=0.05)
        assert "kubectl tmc get canaries -n demo -w" in text

        async def example_rollout() -> str | None:
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"{base}/api/v1/namespaces/demo/canaryrollouts/checkout") as r,
            ):
                body = await r.json() if r.status == 200 else {}
            phase = body.get("status", {}).get("phase")
            return phase if phase in ("Progressing", "Paused") else None

        await wait_for(example_rollout, timeout=30, what="the example rollout running", step=0.1)

        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 15)  # shutdown is bounded by runtime.shutdown_timeout (10 s)
        stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
        assert code == 0, stderr
        assert nats_server_pids(data) == []
        assert not (data / "nats.url").exists()
    finally:
        await kill(proc)
