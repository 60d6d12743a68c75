"""The bus against a real nats-server: typed messaging, JetStream, provisioning, KV, tracing,
connection state across a server restart."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from tests.helpers import nats_connect, wait_for
from tmcd.bus import Bus, BusError, CasConflictError, Delivery
from tmcd.bus.provision import KV_BUCKETS, stream_specs
from tmcd.config import NatsConfig, load_config
from tmcd.contracts import subjects as s
from tmcd.contracts.messages import ControlReply, SyncControl, SyncerHeartbeat, SyncEvent
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics


async def connected_bus(url: str) -> Bus:
    bus = Bus(NatsConfig(), SelfMetrics(), url=url)
    await bus.connect(retry=False)
    return bus


async def test_publish_subscribe_typed_with_traceparent(nats_url: str) -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    bus = await connected_bus(nats_url)
    got: list[tuple[Delivery[SyncEvent], str | None]] = []

    async def handler(d: Delivery[SyncEvent]) -> None:
        if d.msg.cluster != "tr-1":
            return  # the wildcard sees every cluster's events on the shared server
        span = trace.get_current_span()
        ctx = span.get_span_context()
        got.append((d, format(ctx.trace_id, "032x") if ctx.is_valid else None))

    sub = await bus.subscribe(s.SYNCER_SYNC.wildcard, handler, channel=s.SYNCER_SYNC)
    ev = SyncEvent(cluster="tr-1", timestamp=time.time(), resource="v1/configmaps", name="cm")
    try:
        with tracer.start_as_current_span("publish") as span:
            await bus.publish(s.syncer_sync("tr-1"), ev)
            trace_id = format(span.get_span_context().trace_id, "032x")
        await bus.publish(s.syncer_sync("tr-1"), ev)  # no active span: no header

        async def two() -> bool:
            return len(got) == 2

        await wait_for(two, what="two deliveries")
        first, second = got
        assert first[0].msg == ev and first[0].subject == "tmc.syncer.tr-1.sync"
        assert first[0].headers is not None and first[0].headers["traceparent"].split("-")[1] == trace_id
        assert first[1] == trace_id  # the remote context is current inside the handler
        assert second[0].headers is None and second[1] is None
    finally:
        await sub.unsubscribe()
        await bus.close()


async def test_request_reply_and_errors(nats_url: str) -> None:
    bus = await connected_bus(nats_url)

    async def handler(d: Delivery[SyncControl]) -> ControlReply:
        return ControlReply(ok=True, target=d.msg.cluster, state="paused", timestamp=1.0)

    sub = await bus.serve("tmc.ctl.sync.rr-1.*", handler, channel=s.CTL_SYNC)
    try:
        req = SyncControl(cluster="rr-1", action="pause", timestamp=time.time())
        reply = await bus.request(s.ctl_sync("rr-1", "pause"), req, ControlReply, timeout=10)
        assert reply.ok and reply.target == "rr-1" and reply.state == "paused"
        with pytest.raises(BusError, match="no responder"):
            await bus.request(s.ctl_sync("nobody", "pause"), req, ControlReply, timeout=1)
    finally:
        await sub.unsubscribe()
        await bus.close()


async def test_connect_refused_is_one_clear_error() -> None:
    bus = Bus(NatsConfig(connect_timeout=0.5), SelfMetrics(), url="nats://127.0.0.1:1")
    with pytest.raises(BusError, match=r"cannot connect to NATS at nats://127.0.0.1:1"):
        await bus.connect(retry=False)


async def test_connect_retry_stops_on_request() -> None:
    stop = asyncio.Event()
    bus = Bus(NatsConfig(connect_timeout=0.2, reconnect_wait_min=0.05), SelfMetrics(), url="nats://127.0.0.1:1")
    stop.set()
    with pytest.raises(BusError, match="stopped before NATS connected"):
        await bus.connect(retry=True, stop=stop)


async def test_provisioning_is_idempotent_and_updates_limits(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    bus = await connected_bus(nats_server.url)
    try:
        cfg = load_config(None, env={}, overrides={"nats.url": nats_server.url})
        first = await bus.provision(cfg)
        assert set(first.values()) == {"created"}
        assert set(first) == {sp.name for sp in stream_specs(cfg)} | set(KV_BUCKETS.values())
        assert set((await bus.provision(cfg)).values()) == {"unchanged"}

        changed = load_config(
            None, env={}, overrides={"streams.syncer.max_age": 3600, "streams.dead.max_bytes": 1 << 20}
        )
        result = await bus.provision(changed)
        assert result["TMC_SYNCER"] == "updated" and result["TMC_DEAD"] == "updated"
        assert result["TMC_EVENTS"] == "unchanged"
        info = await bus.js.stream_info("TMC_SYNCER")
        assert info.config.max_age == pytest.approx(3600)
        assert (await bus.js.stream_info("TMC_DEAD")).config.max_bytes == 1 << 20
        # core publishes on a stored subject land in the stream; js_publish returns the sequence
        seq = await bus.js_publish(s.syncer_heartbeat("pv-1"), SyncerHeartbeat(cluster="pv-1", timestamp=1.0))
        assert seq >= 1
    finally:
        await bus.close()


async def test_kv_compare_and_set(nats_server: EmbeddedNats) -> None:
    bus = await connected_bus(nats_server.url)
    try:
        await bus.provision(load_config(None, env={}))
        kv = await bus.kv("clusters", SyncerHeartbeat)
        hb = SyncerHeartbeat(cluster="kv-1", timestamp=1.0)
        rev = await kv.create("kv-1", hb)
        with pytest.raises(CasConflictError):
            await kv.create("kv-1", hb)
        entry = await kv.get("kv-1")
        assert entry is not None and entry.value == hb and entry.revision == rev
        rev2 = await kv.update("kv-1", SyncerHeartbeat(cluster="kv-1", timestamp=2.0), rev)
        with pytest.raises(CasConflictError):
            await kv.update("kv-1", hb, rev)  # stale revision
        assert await kv.keys() == ["kv-1"]
        await kv.delete("kv-1", rev2)
        assert await kv.get("kv-1") is None
        assert await kv.keys() == []
        await kv.put("kv-2", hb)
        assert (await kv.get("kv-2")) is not None
    finally:
        await bus.close()


async def test_connection_state_follows_server_restart(
    nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tmcd.bus")
    metrics = SelfMetrics()
    bus = Bus(NatsConfig(reconnect_wait_min=0.05, reconnect_wait_max=0.2), metrics, url=nats_server.url)
    states: list[bool] = []
    bus.state_listeners.append(states.append)
    await bus.connect(retry=False)
    try:
        assert bus.connected and metrics.nats_connected._value.get() == 1
        port = int(nats_server.url.rsplit(":", 1)[1])
        await asyncio.to_thread(nats_server.stop)

        async def down() -> bool:  # nats-py says disconnected before it calls the callback
            return not bus.connected and states[-1] is False

        await wait_for(down, what="disconnect seen")
        assert metrics.nats_connected._value.get() == 0
        nats_server.port = port
        await asyncio.to_thread(nats_server.start)

        async def up() -> bool:  # nats-py says connected a flush before it calls the reconnect callback
            return bus.connected and states[-1] is True

        await wait_for(up, what="reconnect", timeout=15)
        assert states[0] is True and False in states and states[-1] is True
        assert bus.reconnects >= 1 and metrics.nats_connected._value.get() == 1
        said = [r.getMessage() for r in caplog.records]
        assert f"connected to NATS at {nats_server.url}" in said
        assert f"reconnected to NATS at {nats_server.url}" in said  # the URL, not nats-py's ParseResult
        assert "disconnected from NATS" in said
        nc = await nats_connect(nats_server.url)
        await nc.close()
    finally:
        await bus.close()
