"""A real ``tmcd run`` on a nats-server of its own, for the property-based tests: Hypothesis drives it
from synchronous code, one example at a time; the test's own NATS client and waits run on an event
loop in a background thread (:meth:`LiveTmcd.run`).

tmcd runs as a process of its own, not in a thread of the test's: Hypothesis shrinking a failure
holds the GIL for seconds, and a daemon sharing it would lag (its /livez fails on event-loop lag)
and answer late for reasons of the test's making.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from nats.aio.client import Client

from tests.helpers import fetch, free_port, nats_connect, sample, scrape, wait_for
from tmcd.runtime.embedded import EmbeddedNats

T = TypeVar("T")


class LiveTmcd:
    """Where tmcd is; run coroutines on the test's loop; read its metrics and its log."""

    def __init__(self, loop: asyncio.AbstractEventLoop, nats_url: str, http_url: str, prefix: str, log: Path):
        self.loop = loop
        self.nats_url = nats_url
        self.http_url = http_url
        self.prefix = prefix
        """tmcd's consumer.durable_prefix."""
        self.log = log
        self.nc: Client = None  # type: ignore[assignment]
        """A NATS client of the test's own, on the loop of :meth:`run`."""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        """Run a coroutine on the test's loop and wait for its result."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    async def metrics(self) -> str:
        """GET /metrics (on the loop of :meth:`run`)."""
        return await scrape(self.http_url)

    def metrics_now(self) -> str:
        """GET /metrics from the test's thread."""
        with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=10) as r:
            text: str = r.read().decode()
            return text

    def log_size(self) -> int:
        """Where tmcd's log ends now (see :meth:`log_since`)."""
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        """What tmcd logged after ``offset``."""
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

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

    async def leading(self) -> bool:
        """Whether tmcd leads the agents that answer requests (it is the only replica)."""
        text = await self.metrics()
        return all(self.total(text, "tmc_leader", agent=a) == 1 for a in ("health", "canary", "rollback"))


@contextlib.contextmanager
def live_tmcd(nats_server_bin: str, tmp: Path, **settings: str) -> Iterator[LiveTmcd]:
    """A nats-server and ``tmcd run`` (every agent; ``settings`` as TMCD_* variables), stopped on exit.

    A nats-server of its own, not the session's: the tests count what the streams and the dead
    letters hold, so nothing another test left there may be in them."""
    server = EmbeddedNats(nats_server_bin, tmp / "nats")
    url = server.start()
    prefix = f"fz{secrets.token_hex(3)}"
    http_url = f"http://127.0.0.1:{free_port()}"
    env = {
        "TMCD_NATS_URL": url,
        "TMCD_HTTP_LISTEN": http_url.removeprefix("http://"),
        "TMCD_DATA_DIR": str(tmp / "data"),
        "TMCD_CONSUMER_DURABLE_PREFIX": prefix,
        "TMCD_CONSUMER_FETCH_TIMEOUT": "0.2",
        **{f"TMCD_{k.upper().replace('.', '_')}": v for k, v in settings.items()},
    }
    log = tmp / "tmcd.log"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="live-tmcd-client", daemon=True)
    thread.start()
    live = LiveTmcd(loop, url, http_url, prefix, log)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tmcd.cli.main", "run"], env={**os.environ, **env}, stdout=out, stderr=out
        )
    try:

        async def start() -> None:
            live.nc = await nats_connect(url)

            async def ready() -> bool:
                assert proc.poll() is None, f"tmcd exited ({proc.returncode}): {live.log_since(0)[-2000:]}"
                with contextlib.suppress(aiohttp.ClientError):
                    return (await fetch(f"{http_url}/readyz"))[0] == 200
                return False

            await wait_for(ready, timeout=60, what="tmcd ready", step=0.05)
            await wait_for(live.leading, timeout=30, what="tmcd to lead every agent")

        live.run(start())
        yield live
    finally:
        if live.nc is not None:
            live.run(live.nc.close())
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        server.stop()
