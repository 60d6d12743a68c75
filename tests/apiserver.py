"""The resource API alone (HTTP and the NATS service over the watch cache, no agents), for the
tests of the cache and of watches that need a small window or a fast heartbeat."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from tests.helpers import daemon_config, nats_connect, wait_for
from tmcd.api import nats_api
from tmcd.api.context import ApiContext
from tmcd.api.index import WINDOW
from tmcd.api.nats_watch import NatsWatches
from tmcd.api.server import API_KEY, HttpServer, build_app
from tmcd.bus import Bus
from tmcd.runtime.probes import CheckRegistry
from tmcd.runtime.selfmetrics import SelfMetrics


@dataclass
class Api:
    """A running API: its context, the bus it reads, a client session and a plain NATS client."""

    ctx: ApiContext
    bus: Bus
    base: str
    http: aiohttp.ClientSession
    nc: Client
    watches: NatsWatches

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """An HTTP request: (status, decoded JSON body)."""
        async with self.http.request(method, self.base + path, **kw) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else None

    async def request(self, subject: str, body: dict[str, Any]) -> tuple[str, Any]:
        """A NATS request: (error code or "", decoded JSON body)."""
        rep = await self.nc.request(subject, json.dumps(body).encode(), timeout=10)
        return (rep.headers or {}).get("Nats-Service-Error-Code", ""), json.loads(rep.data) if rep.data else None


async def consumers(bus: Bus) -> int:
    """JetStream consumers on every KV stream, as the JetStream API lists them (CONSUMER.LIST)."""
    total = 0
    for info in await bus.js.streams_info():
        if info.config.name.startswith("KV_"):
            total += len(await bus.js.consumers_info(info.config.name))
    return total


@contextlib.asynccontextmanager
async def api_server(
    url: str, tmp_path: Path, *, window: int = WINDOW, heartbeat: float = 5.0, max_seconds: float = 300.0
) -> AsyncIterator[Api]:
    """Serve the API on ``url``'s NATS; returns once every kind's cache has loaded."""
    cfg = daemon_config(url, tmp_path, **{"nats.reconnect_wait_min": 0.05, "nats.reconnect_wait_max": 0.2})
    bus = Bus(cfg.nats, SelfMetrics(), url=url)
    await bus.connect(retry=False)
    await bus.provision(cfg)
    app = build_app(CollectorRegistry(), CheckRegistry(), lambda: bus, cfg.api)
    ctx = app[API_KEY]
    ctx.start_cache(window)
    server = HttpServer(app, "127.0.0.1:0")
    await server.start()
    watches = NatsWatches(ctx.reads, heartbeat=heartbeat, max_seconds=max_seconds)
    service, _ = await nats_api.start(bus, ctx, watches)
    nc = await nats_connect(url)
    try:
        await wait_for(lambda: ctx.cache_check() is None, what="the API cache loaded")
        async with aiohttp.ClientSession() as http:
            yield Api(ctx, bus, server.base_url, http, nc, watches)
    finally:
        await nc.close()
        await service.stop()
        await watches.close()
        ctx.stopping.set()
        await server.stop()
        await ctx.close_cache()
        await bus.close()
