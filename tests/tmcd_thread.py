"""A real tmcd (with its own nats-server) in a background thread, for tests that drive it
from synchronous code: CliRunner, subprocesses, kubectl-tmc's own NATS client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import daemon_config, running_daemon
from tmcd.contracts import subjects
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import Message
from tmcd.kubectl.client import Client, Endpoint, NatsConnection
from tmcd.kubectl.output import parse_time
from tmcd.runtime.embedded import EmbeddedNats


class Tmcd:
    """Where the running tmcd is, and synchronous requests to it over NATS."""

    def __init__(self, nats_url: str, http_url: str, agents: str = "") -> None:
        self.nats_url = nats_url
        self.http_url = http_url
        self.agents = agents.split(",")

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
        """Create, then write the object's status (if it has one) through the status subresource, as
        a create ignores it; a Placement is returned once the placement agent (when running) has decided it."""
        body = json.dumps({"namespace": namespace, "object": obj}).encode()
        created = self.request(f"tmc.api.create.{plural}", body)
        if obj.get("status") and not (plural == "placements" and "placement" in self.agents):
            meta = created["metadata"]
            req = {"namespace": namespace, "name": meta["name"], "object": {**created, "status": obj["status"]}}
            created = self.request(f"tmc.api.replacestatus.{plural}", json.dumps(req).encode())
        if plural == "placements" and "placement" in self.agents:
            return self.decided(created["metadata"]["name"])
        return created

    def decided(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """The Placement once its spec is decided and the decision is in TMC_PLACEMENT (bounded polling)."""
        deadline = time.monotonic() + timeout
        get = json.dumps({"last_by_subj": subjects.placement_decision(name)}).encode()
        while True:
            obj = self.get("placements", name)
            status, meta = obj.get("status", {}), obj["metadata"]
            if status.get("lastDecisionTime") and status.get("observedGeneration") == meta["generation"]:
                msg = self.request(f"$JS.API.STREAM.MSG.GET.{subjects.STREAM_PLACEMENT}", get).get("message")
                created = parse_time(meta["creationTimestamp"]) or 0.0
                if msg and json.loads(base64.b64decode(msg["data"]))["timestamp"] >= created:
                    return obj
            assert time.monotonic() < deadline, f"placement {name} not decided within {timeout}s"
            time.sleep(0.02)

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return self.request(f"tmc.api.get.{plural}", json.dumps({"name": name}).encode())

    def publish(self, subject: str, msg: Message, stream: str = "TMC_EVENTS") -> None:
        """Into a stream (waits for the JetStream ack)."""
        ack = self.request(subject, encode(msg))
        assert ack.get("stream") == stream, ack

    def client(self) -> Client:
        return Client(Endpoint("nats", self.nats_url))


@contextlib.contextmanager
def tmcd_in_thread(nats_server_bin: str, tmp: Path, agents: str = "metrics,placement") -> Iterator[Tmcd]:
    """A nats-server and a tmcd running ``agents`` (the metrics and placement agents leave the
    stored statuses of other kinds as they are), stopped on exit."""
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
        yield Tmcd(url, state["http"], agents)
    finally:
        if "loop" in state:
            state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(60)
        server.stop()
