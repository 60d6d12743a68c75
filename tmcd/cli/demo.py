"""`tmcd demo`: the daemon on an embedded NATS plus a simulated fleet, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from tmcd.bus import Bus
from tmcd.config import Config
from tmcd.runtime.daemon import Daemon

log = logging.getLogger("tmcd.demo")


def banner(daemon: Daemon, nats_url: str, clusters: int, rate: float) -> str:
    """What the demo prints once everything is up."""
    base = daemon.http.base_url
    return "\n".join(
        [
            "",
            f"tmcd demo is running: {clusters} simulated clusters, {rate:g} sync events/s",
            f"  metrics    {base}/metrics",
            f"  readiness  {base}/readyz?verbose",
            f"  health     {base}/healthz?verbose",
            f"  NATS       {nats_url}",
            "",
            "Try:",
            f"  curl -s {base}/metrics | grep tmc_events_processed_total",
            f'  PATH="{Path(sys.executable).parent}:$PATH" kubectl tmc version --client',
            "",
            "Press Ctrl-C to stop.",
            "",
        ]
    )


async def run_demo(cfg: Config, *, clusters: int, rate: float, seed: int) -> int:
    """Run until Ctrl-C; returns the exit code."""
    from tmcd.sim.model import SimOptions
    from tmcd.sim.runner import close_bus, run_sim

    daemon = Daemon(cfg)
    sim_task: asyncio.Task[object] | None = None
    sim_bus: Bus | None = None

    def started(d: Daemon) -> None:
        nonlocal sim_task
        assert d.bus is not None
        sim_task = asyncio.create_task(_sim(d, d.bus.url), name="demo-sim")
        print(banner(d, d.bus.display_url, clusters, rate), flush=True)

    async def _sim(d: Daemon, url: str) -> object:
        nonlocal sim_bus
        sim_bus = Bus(cfg.nats, d.metrics, url=url)
        await sim_bus.connect(retry=True, stop=d.stop_event)
        try:
            return await run_sim(sim_bus, SimOptions(clusters=clusters, rate=rate, seed=seed), d.stop_event)
        finally:
            await close_bus(sim_bus)

    async def stop_sim_first() -> None:
        await daemon.stop_event.wait()
        if sim_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sim_task, 5)

    waiter = asyncio.create_task(stop_sim_first())
    code = await daemon.run(on_started=started)
    await waiter
    return code
