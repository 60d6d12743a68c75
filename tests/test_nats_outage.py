"""A NATS outage under a running daemon: /readyz turns red naming `nats` while /livez stays green,
and readiness comes back on its own once the server is back on the same port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.helpers import daemon_config, get, running_daemon, sample, scrape, wait_for
from tmcd.runtime.embedded import EmbeddedNats

OUTAGE_TIMEOUT = 30.0
"""Bound on each wait below (they end as soon as the condition holds)."""


async def test_readiness_follows_a_nats_outage(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    cfg = daemon_config(
        nats_server.url,
        tmp_path,
        agents="metrics,health",
        **{"nats.reconnect_wait_min": 0.05, "nats.reconnect_wait_max": 0.5},
    )
    port = int(nats_server.url.rsplit(":", 1)[1])
    async with running_daemon(cfg) as d, aiohttp.ClientSession() as s:
        base = d.http.base_url
        assert d.bus is not None
        await wait_for(lambda: _status(s, f"{base}/readyz", 200), timeout=OUTAGE_TIMEOUT, what="ready")

        await asyncio.to_thread(nats_server.stop)  # off the loop: the daemon keeps serving meanwhile
        failed = await wait_for(
            lambda: _status(s, f"{base}/readyz?verbose", 503), timeout=OUTAGE_TIMEOUT, what="/readyz to fail"
        )
        text = failed[1]
        assert "[-]nats failed: not connected to NATS" in text
        assert "[-]jetstream failed: JetStream unreachable: not connected to NATS" in text
        # liveness is not about NATS (`eventloop` left out: a loaded machine can make the loop late for real)
        assert await get(s, f"{base}/livez?exclude=eventloop") == (200, "ok")
        assert (await get(s, f"{base}/readyz/nats"))[0] == 503
        await wait_for(
            lambda: _gauge(base, "nats", 0), timeout=OUTAGE_TIMEOUT, what="tmc_health_check_status{check=nats} 0"
        )

        nats_server.port = port  # the same address: the client reconnects to it
        await asyncio.to_thread(nats_server.start)
        await wait_for(lambda: _status(s, f"{base}/readyz", 200), timeout=OUTAGE_TIMEOUT, what="/readyz to recover")
        # nats-py reports connected a flush before it runs the reconnect callback that counts reconnects
        await wait_for(lambda: d.bus.connected and d.bus.reconnects >= 1, timeout=OUTAGE_TIMEOUT, what="reconnect")
        assert await get(s, f"{base}/livez?exclude=eventloop") == (200, "ok")
        status, text = await get(s, f"{base}/readyz?verbose")
        assert status == 200 and "[+]nats ok" in text and "[+]jetstream ok" in text
        await wait_for(
            lambda: _gauge(base, "nats", 1), timeout=OUTAGE_TIMEOUT, what="tmc_health_check_status{check=nats} 1"
        )


async def _status(session: aiohttp.ClientSession, url: str, want: int) -> tuple[int, str] | None:
    got = await get(session, url)
    return got if got[0] == want else None


async def _gauge(base: str, check: str, want: float) -> bool:
    return sample(await scrape(base), "tmc_health_check_status", check=check) == want
