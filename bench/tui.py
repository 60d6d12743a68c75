"""The dashboard under load, headless: redraw time and key-to-screen time at a large fleet.

Starts ``tmcd run`` (embedded NATS, in a temporary data dir) and ``tmcd sim --clusters N
--rate R`` as processes, then drives the dashboard in this process with Textual's Pilot:
it waits until the fleet view shows every cluster, then for a fixed time records how long
each redraw of the current view takes and how long a key takes to reach the screen (view
switches and sorts, one key every 0.2 s): from the key press until the app has handled it, the
view is redrawn and the frame is written (Pilot's ``press()`` would also wait for the process
to go idle, which it never does with a thousand events a second arriving).  The last
line is::

    tui clusters=<n> redraw_ms_p99=<x> input_ms_p99=<y>

(targets on the 2-core development machine at 1,000 clusters and 1,000 events/s: redraw p99
under 50 ms, key-to-screen p99 under 100 ms)

    python bench/tui.py [--clusters 1000] [--rate 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from textual import events

from tmcd.tui.app import DashboardApp
from tmcd.tui.feed import Feed
from tmcd.tui.state import DashboardState

KEYS = ("5", "1", "s", "S", "s", "1")
"""Switch to events and back, sort by the next column and back: what a user does all the time."""
VIEW_KEYS = {"5": "events", "1": "fleet"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def wait_ready(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"tmcd at {base} was not ready within {timeout:.0f}s")


async def drive(url: str, args: argparse.Namespace) -> None:
    state = DashboardState()
    app = DashboardApp(feed=Feed(state, url), tune_gc=True)  # as `tmcd tui` runs it
    redraws: list[float] = []
    inputs: list[float] = []
    original = app.refresh_view

    def timed_refresh() -> None:
        t0 = time.perf_counter()
        original()
        redraws.append((time.perf_counter() - t0) * 1000)

    app.refresh_view = timed_refresh  # type: ignore[method-assign]
    async with app.run_test(size=(160, 50)) as pilot:
        deadline = time.monotonic() + 120
        while len(state.fleet.names()) < args.clusters and time.monotonic() < deadline:
            await pilot.pause(0.2)
        print(f"dashboard shows {len(state.fleet.names())} clusters", flush=True)
        redraws.clear()
        end = time.monotonic() + args.seconds
        i = 0
        while time.monotonic() < end:
            key = KEYS[i % len(KEYS)]
            i += 1
            t0 = time.perf_counter()
            # the key as the terminal driver delivers it, then handled by the app, the screen and its widgets
            # (Pilot.press also waits twice for the process to go idle: never, with the feed busy)
            app.post_message(events.Key(key, key))
            await pilot._wait_for_screen()
            app.refresh_view()  # the view redrawn with the key's effect (the next tick would do it)
            app.screen._on_timer_update()  # and the frame composed and written, as Textual's refresh timer does
            inputs.append((time.perf_counter() - t0) * 1000)
            if key in VIEW_KEYS and app.view != VIEW_KEYS[key]:
                raise SystemExit(f"key {key!r} did not switch to {VIEW_KEYS[key]} (the view is {app.view})")
            await pilot.pause(0.2)
    print(
        f"{len(redraws)} redraws: p50 {quantile(redraws, 0.5):.1f} ms, p99 {quantile(redraws, 0.99):.1f} ms; "
        f"{len(inputs)} keys: p50 {quantile(inputs, 0.5):.1f} ms, p99 {quantile(inputs, 0.99):.1f} ms"
    )
    print(
        f"tui clusters={len(state.fleet.names())} redraw_ms_p99={quantile(redraws, 0.99):.1f} "
        f"input_ms_p99={quantile(inputs, 0.99):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0, help="Sync events per second, whole fleet.")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("TMCD_NATS_URL", "TMCD_DATA_DIR")}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        port = free_port()
        log = (data / "procs.log").open("wb")
        tmcd = subprocess.Popen(
            [sys.executable, "-m", "tmcd.cli.main", "run", "--data-dir", str(data), "--http-listen",
             f"127.0.0.1:{port}", "--agents", "metrics,health"],
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
        procs = [tmcd]
        try:
            asyncio.run(wait_ready(f"http://127.0.0.1:{port}"))
            url = (data / "nats.url").read_text().strip()
            sim = [sys.executable, "-m", "tmcd.cli.main", "sim", "--data-dir", str(data)]
            sim += ["--clusters", str(args.clusters), "--rate", str(args.rate)]
            procs.append(subprocess.Popen(sim, stdout=log, stderr=log, env=env))
            asyncio.run(drive(url, args))
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
            log.close()


if __name__ == "__main__":
    main()
