"""A three-node nats-server cluster with JetStream on loopback, for the fault tests.

Each node has its own server name, client port, route port, monitoring port and store dir; the
routes name every node.  A node can be killed (``kill -9``) and started again on the same ports
and store, where it rejoins and catches up.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

from tests.helpers import fetch, free_port, nats_connect, wait_for
from tmcd.runtime.embedded import EmbeddedNats

CLUSTER_NAME = "tmc-faults"


class NatsCluster:
    """``size`` nats-servers forming one JetStream cluster."""

    def __init__(self, binary: str, root: Path, size: int = 3) -> None:
        self.root = root
        self.ports = [free_port() for _ in range(size)]
        self.routes = [free_port() for _ in range(size)]
        self.monitors = [free_port() for _ in range(size)]
        self.nodes: list[EmbeddedNats] = []
        for i in range(size):
            conf = root / f"n{i + 1}.conf"
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(
                f'http: "127.0.0.1:{self.monitors[i]}"\n'
                f"jetstream {{ max_memory_store: 268435456, max_file_store: 17179869184 }}\n"
                f'cluster {{\n  name: {CLUSTER_NAME}\n  listen: "127.0.0.1:{self.routes[i]}"\n'
                f"  routes: [{routes}]\n}}\n"
            )
            node = EmbeddedNats(binary, root / f"n{i + 1}", port=self.ports[i], config_file=conf, name=f"n{i + 1}")
            self.nodes.append(node)

    @property
    def urls(self) -> list[str]:
        """Every node's client URL."""
        return [f"nats://127.0.0.1:{p}" for p in self.ports]

    @property
    def url(self) -> str:
        """All client URLs, comma-separated (as ``nats.url`` takes them)."""
        return ",".join(self.urls)

    async def start(self) -> None:
        """Start every node, then wait until JetStream has a meta leader."""
        await asyncio.gather(*(asyncio.to_thread(n.start, 20.0) for n in self.nodes))
        await self.wait_jetstream()

    async def wait_jetstream(self, timeout: float = 30.0) -> None:
        """Until the JetStream API answers (a meta leader is elected) on every running node."""

        async def answers(url: str) -> bool:
            try:
                nc = await nats_connect(url)
            except Exception:
                return False
            try:
                await nc.jetstream().account_info()
                return True
            except Exception:
                return False
            finally:
                await nc.close()

        for i, node in enumerate(self.nodes):
            if node.pid is not None:
                url = self.urls[i]
                await wait_for(lambda u=url: answers(u), timeout=timeout, step=0.2, what=f"JetStream on {url}")

    def kill(self, i: int) -> None:
        """``kill -9`` node ``i`` (0-based); its store stays."""
        node = self.nodes[i]
        assert node.pid is not None, f"node {i} is not running"
        os.kill(node.pid, signal.SIGKILL)
        node.stop()  # reaps it

    async def restart(self, i: int) -> None:
        """Start node ``i`` again on its ports and store."""
        await asyncio.to_thread(self.nodes[i].start, 20.0)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    async def jsz(self, i: int) -> dict[str, Any]:
        """Node ``i``'s own view of its streams (monitoring ``/jsz``)."""
        code, body, _ = await fetch(f"http://127.0.0.1:{self.monitors[i]}/jsz?accounts=true&streams=true&config=true")
        assert code == 200, body
        return dict(json.loads(body))

    async def local_streams(self, i: int) -> dict[str, dict[str, Any]]:
        """Stream name -> the state node ``i`` holds locally (messages, first and last sequence)."""
        out: dict[str, dict[str, Any]] = {}
        for account in (await self.jsz(i)).get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                out[stream["name"]] = stream["state"]
        return out


async def stream_infos(url: str) -> dict[str, Any]:
    """Every stream's info (config, state, cluster replicas) as nats-py returns it."""
    nc = await nats_connect(url)
    try:
        return {s.config.name: s for s in await nc.jetstream().streams_info()}
    finally:
        await nc.close()
