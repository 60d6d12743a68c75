"""A real tmcd on a nats-server of its own, in a background thread, for the property-based tests:
Hypothesis drives it from synchronous code, one example at a time, and coroutines (a NATS client's
publishes, waits) run on the daemon's loop through :meth:`LiveTmcd.run`."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client

from tests.helpers import daemon_config, nats_connect, running_daemon, sample, scrape
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import EmbeddedNats

T = TypeVar("T")


class LiveTmcd:
    """Where the daemon is; run coroutines on its loop; read its metrics."""

    def __init__(self, loop: asyncio.AbstractEventLoop, daemon: Daemon, nats_url: str, nc: Client, prefix: str):
        self.loop = loop
        self.daemon = daemon
        self.nats_url = nats_url
        self.http_url = daemon.http.base_url
        self.nc = nc
        """A NATS client of the test's own, on the daemon's loop."""
        self.prefix = prefix
        """The daemon's consumer.durable_prefix."""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the daemon's loop and wait for its result."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    async def metrics(self) -> str:
        """GET /metrics, on the daemon's loop (a blocking read there would stall the daemon)."""
        return await scrape(self.http_url)

    def metrics_now(self) -> str:
        """GET /metrics from the test's thread."""
        with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=10) as r:
            text: str = r.read().decode()
            return text

    def total(self, text: str, name: str, **labels: str) -> float:
        """The sum of every series of ``name`` that has ``labels``."""
        want = [f'{k}="{v}"' for k, v in labels.items()]
        out = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                series, _, value = line.rpartition(" ")
                if series.split("{")[0] == name and all(w in series for w in want):
                    out += float(value)
        return out

    def restarts(self, text: str) -> float:
        """tmc_agent_restarts_total over every agent."""
        return self.total(text, "tmc_agent_restarts_total")

    def connected(self, text: str) -> bool:
        """tmc_nats_connected."""
        return sample(text, "tmc_nats_connected") == 1.0


@contextlib.contextmanager
def live_tmcd(nats_server_bin: str, tmp: Path, **overrides: object) -> Iterator[LiveTmcd]:
    """A nats-server and a tmcd (every agent unless ``agents`` is overridden), stopped on exit.

    A nats-server of its own, not the session's: the tests count what the streams and the dead
    letters hold, so nothing another test left there may be in them."""
    server = EmbeddedNats(nats_server_bin, tmp / "nats")
    url = server.start()
    prefix = f"fz{secrets.token_hex(3)}"
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def run() -> None:
        stop = asyncio.Event()
        cfg = daemon_config(url, tmp / "data", **{"consumer.durable_prefix": prefix, **overrides})
        async with running_daemon(cfg) as daemon:
            nc = await nats_connect(url)
            try:
                state["live"] = LiveTmcd(asyncio.get_running_loop(), daemon, url, nc, prefix)
                state["stop"] = stop
                ready.set()
                await stop.wait()
            finally:
                await nc.close()

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # pragma: no cover - surfaced below
            state["error"] = exc
            ready.set()

    thread = threading.Thread(target=target, name="live-tmcd", daemon=True)
    thread.start()
    try:
        assert ready.wait(60), "tmcd did not start"
        assert "error" not in state, state.get("error")
        yield state["live"]
    finally:
        if "stop" in state:
            state["live"].loop.call_soon_threadsafe(state["stop"].set)
        thread.join(60)
        server.stop()
        assert "error" not in state, f"tmcd failed: {state.get('error')!r}"
