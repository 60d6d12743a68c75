"""A real tmcd (with its own nats-server) in a background thread, for tests that drive it
from synchronous code: CliRunner, subprocesses, kubectl-tmc's own NATS client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import daemon_config, running_daemon
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import Message
from tmcd.kubectl.client import Client, Endpoint, NatsConnection
from tmcd.runtime.embedded import EmbeddedNats


class Tmcd:
    """Where the running tmcd is, and synchronous requests to it over NATS."""

    def __init__(self, nats_url: str, http_url: str) -> None:
        self.nats_url = nats_url
        self.http_url = http_url

    def request(self, subject: str, payload: bytes) -> dict[str, Any]:
        """One request; the reply must not be a service error."""
        conn = NatsConnection(self.nats_url)
        try:
            headers, data = conn.request(subject, payload)
        finally:
            conn.close()
        assert "Nats-Service-Error-Code" not in headers, data
        out: dict[str, Any] = json.loads(data)
        return out

    def create(self, plural: str, obj: dict[str, Any], namespace: str = "") -> dict[str, Any]:
        body = json.dumps({"namespace": namespace, "object": obj}).encode()
        return self.request(f"tmc.api.create.{plural}", body)

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return self.request(f"tmc.api.get.{plural}", json.dumps({"name": name}).encode())

    def publish(self, subject: str, msg: Message, stream: str = "TMC_EVENTS") -> None:
        """Into a stream (waits for the JetStream ack)."""
        ack = self.request(subject, encode(msg))
        assert ack.get("stream") == stream, ack

    def client(self) -> Client:
        return Client(Endpoint("nats", self.nats_url))


@contextlib.contextmanager
def tmcd_in_thread(nats_server_bin: str, tmp: Path, agents: str = "metrics") -> Iterator[Tmcd]:
    """A nats-server and a tmcd running ``agents`` (the metrics agent alone leaves stored
    statuses as they are), stopped on exit."""
    server = EmbeddedNats(nats_server_bin, tmp / "nats")
    url = server.start()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def run() -> None:
        stop = asyncio.Event()
        state["loop"], state["stop"] = asyncio.get_running_loop(), stop
        async with running_daemon(daemon_config(url, tmp / "data", agents=agents)) as daemon:
            state["http"] = daemon.http.base_url
            ready.set()
            await stop.wait()

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # pragma: no cover - surfaced below
            state["error"] = exc
            ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        assert ready.wait(60), "tmcd did not start"
        assert "error" not in state, state.get("error")
        yield Tmcd(url, state["http"])
    finally:
        if "loop" in state:
            state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(60)
        server.stop()
