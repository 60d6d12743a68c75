"""With several NATS URLs (a cluster), a lost connection moves on to a server that answers instead
of retrying the one that died."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import wait_for
from tmcd.bus import Bus
from tmcd.bus.options import next_try
from tmcd.config import NatsConfig
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics


@dataclass
class S:
    name: str
    reconnects: int = 0


def test_next_server_moves_on_from_the_one_that_failed() -> None:
    rng = random.Random(1)
    dead, other, third = S("dead", 1), S("other"), S("third")
    picked, delay = next_try([dead, other, third], 0.5, 30.0, rng)
    assert picked is other and 0.25 <= delay <= 0.5  # an untried server after the short delay
    picked, delay = next_try([S("a", 3), S("b", 2)], 0.5, 30.0, rng)
    assert picked is not None and picked.name == "b" and 0.25 * 4 <= delay <= 0.5 * 4  # all failed: back off
    assert next_try([], 0.5, 30.0, rng) == (None, 0.5)


async def test_a_bus_on_two_servers_reconnects_to_the_live_one(nats_server_bin: str, tmp_path: Path) -> None:
    servers = [EmbeddedNats(nats_server_bin, tmp_path / f"s{i}", name=f"s{i}") for i in range(2)]
    for s in servers:
        s.start()
    ports = [int(s.url.rsplit(":", 1)[1]) for s in servers]
    cfg = NatsConfig(reconnect_wait_min=0.2, reconnect_wait_max=5.0)
    bus = Bus(cfg, SelfMetrics(), url=",".join(s.url for s in servers))
    try:
        await bus.connect()
        for _ in range(6):  # each time the server it uses dies; nats-py's pool order is random
            port = int(bus.nc.connected_url.port or 0)
            i = ports.index(port)
            assert servers[i].pid is not None
            os.kill(servers[i].pid, signal.SIGKILL)
            await asyncio.to_thread(servers[i].stop)

            def moved(other: int = ports[1 - i]) -> bool:
                return bus.connected and bus.nc.connected_url.port == other

            await wait_for(moved, timeout=15, what="reconnected to the other server")  # backoff up to 5 s
            servers[i].port = ports[i]
            await asyncio.to_thread(servers[i].start)  # back, for the next round
    finally:
        await bus.close()
        for s in servers:
            s.stop()
