"""What the bus logs when things go wrong, against real nats-servers: a failing handler's
traceback once a minute per subject with a count, and nats-py's own errors (permissions and
authorization violations, slow consumers, stale connections) as rate-limited warnings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

import nats
import pytest
from nats import errors as nats_errors

from tests.helpers import NatsWithConfig, nats_connect, wait_for
from tmcd.bus import Bus, BusError, Delivery
from tmcd.bus.natserrors import AUTHORIZATION, PERMISSIONS, classify, connect_failure
from tmcd.bus.options import display_url
from tmcd.bus.ratelog import Throttle
from tmcd.config import NatsConfig, load_config
from tmcd.contracts import subjects as s
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import ControlReply, SyncControl, SyncEvent
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def ev(cluster: str, name: str) -> SyncEvent:
    return SyncEvent(cluster=cluster, timestamp=1.0, resource="v1/configmaps", name=name)


def handler_error_count(metrics: SelfMetrics, kind: str = "sync_event") -> float:
    value: float = metrics.events_invalid.labels(kind, "handler_error")._value.get()
    return value


# -- pure parts -------------------------------------------------------------------------


def test_throttle_reports_once_a_period_with_the_count_held_back() -> None:
    clock = FakeClock()
    t = Throttle(clock, period=60, max_keys=2)
    assert t.hit("a") == 0
    assert [t.hit("a") for _ in range(5)] == [None] * 5
    clock.now += 59.9
    assert t.hit("a") is None
    clock.now += 0.1
    assert t.hit("a") == 6
    clock.now -= 3600  # the wall clock jumped back: report, do not go quiet for an hour
    assert t.hit("a") == 0
    assert t.hit("b") == 0 and t.hit("c") == 0  # "a" forgotten: at most two keys
    assert t.hit("a") == 0


def test_nats_errors_are_sorted_into_kinds() -> None:
    assert classify(nats_errors.Error("nats: 'Permissions Violation for Publish to \"x\"'")) == "permissions violation"
    assert classify(nats_errors.Error("nats: 'Authorization Violation'")) == "authorization violation"
    assert classify(nats_errors.AuthorizationError()) == "authorization violation"
    assert classify(nats_errors.StaleConnectionError()) == "stale connection"
    # reconnect noise: the bus logs the disconnect and the reconnect itself
    assert classify(nats_errors.UnexpectedEOF()) is None
    assert classify(ConnectionRefusedError(111, "refused")) is None
    assert classify(nats_errors.TimeoutError()) is None
    assert classify(nats_errors.FlushTimeoutError()) == "FlushTimeoutError"
    assert classify(RuntimeError("bug in a callback")) == "RuntimeError"


def test_a_first_connect_says_why_it_failed() -> None:
    denied = nats_errors.Error("nats: 'Authorization Violation'")
    hint = "the server rejected tmcd's credentials: check nats.user/password, token, creds_file, ..."
    # nats-py ends with NoServersError; the error callback saw the reason on the way
    assert connect_failure(nats_errors.NoServersError(), denied) == f"authorization violation ({hint})"
    assert connect_failure(nats_errors.NoServersError(), None) == "no servers available (connection refused?)"
    refused = ConnectionRefusedError(111, "Connection refused")
    assert connect_failure(nats_errors.NoServersError(), refused) == "no servers available (connection refused?)"
    assert connect_failure(TimeoutError("timed out"), None) == "timed out"


def test_urls_are_logged_without_credentials() -> None:
    assert display_url("nats://alice:s3cret@127.0.0.1:4222") == "nats://127.0.0.1:4222"
    assert display_url("tls://tok@a.example:4443, nats://[::1]:4222") == "tls://a.example:4443,nats://[::1]:4222"
    assert display_url("127.0.0.1:4222") == "nats://127.0.0.1:4222"


# -- failing handlers -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def dead_letters(url: str, subject: str) -> AsyncIterator[list[bytes]]:
    nc = await nats_connect(url)
    got: list[bytes] = []

    async def on_dead(msg: nats.aio.msg.Msg) -> None:
        got.append(msg.data)

    sub = await nc.subscribe(f"tmc.dead.{subject}", cb=on_dead)
    await nc.flush()
    try:
        yield got
    finally:
        await sub.unsubscribe()
        await nc.close()


async def test_failing_consumer_handler_logs_one_traceback_a_minute(
    nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tmcd.bus")
    clock = FakeClock()
    metrics = SelfMetrics()
    bus = Bus(NatsConfig(), metrics, url=nats_server.url, clock=clock)
    await bus.connect(retry=False)
    await bus.provision(load_config(None, env={}))
    subject = s.syncer_sync("hf-1")
    stop = asyncio.Event()

    def handler(d: Delivery[SyncEvent]) -> None:
        raise ValueError(f"cannot handle {d.msg.name}")

    async with dead_letters(nats_server.url, subject) as dead:
        consumer = asyncio.create_task(bus.consume("TMC_SYNCER", "hf", handler, stop))
        try:
            for i in range(1000):
                await bus.publish(subject, ev("hf-1", f"cm-{i}"))
            await bus.flush()

            async def all_failed() -> bool:
                return handler_error_count(metrics) == 1000 and len(dead) == 1000

            await wait_for(all_failed, what="1,000 failures counted and dead-lettered")

            async def all_acked() -> bool:
                info = await bus.consumer_info("TMC_SYNCER", "hf")
                return info.num_ack_pending == 0 and info.num_pending == 0

            await wait_for(all_acked, what="every failed message acked")
            failed = lines(caplog, f"handler failed for {subject}")
            assert len(failed) == 1
            assert failed[0].exc_info is not None and "cannot handle cm-0" in str(failed[0].exc_info[1])
            assert "more failures" not in failed[0].getMessage()

            clock.now += 60
            await bus.publish(subject, ev("hf-1", "cm-late"))

            async def one_more() -> bool:
                return handler_error_count(metrics) == 1001

            await wait_for(one_more, what="the 1,001st failure")
            failed = lines(caplog, f"handler failed for {subject}")
            assert len(failed) == 2
            assert f"999 more failures on {subject} since the last report" in failed[1].getMessage()
            assert failed[1].exc_info is not None and "cm-late" in str(failed[1].exc_info[1])
        finally:
            stop.set()
            await consumer
            await bus.close()


async def test_failing_subscribe_and_serve_handlers_are_rate_limited(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tmcd.bus")
    metrics = SelfMetrics()
    bus = Bus(NatsConfig(), metrics, url=nats_url, clock=FakeClock())
    await bus.connect(retry=False)
    subject = s.syncer_sync("hf-2")

    async def handler(d: Delivery[SyncEvent]) -> None:
        raise RuntimeError("boom")

    async def answer(d: Delivery[SyncControl]) -> ControlReply:
        raise RuntimeError("no answer")

    sub = await bus.subscribe(subject, handler, channel=s.SYNCER_SYNC)
    srv = await bus.serve(s.ctl_sync("hf-2", "pause"), answer, channel=s.CTL_SYNC)
    try:
        async with dead_letters(nats_url, subject) as dead:
            for i in range(50):
                await bus.publish(subject, ev("hf-2", f"x-{i}"))
            req = SyncControl(cluster="hf-2", action="pause", timestamp=1.0)
            replies = [await bus.request(s.ctl_sync("hf-2", "pause"), req, ControlReply) for _ in range(20)]
            assert all(r.code == 500 and "no answer" in r.message for r in replies)

            async def all_dead() -> bool:
                return len(dead) == 50

            await wait_for(all_dead, what="50 dead letters")
        assert handler_error_count(metrics) == 50
        assert len(lines(caplog, f"handler failed for {subject}")) == 1
        assert len(lines(caplog, "handler failed for tmc.ctl.sync.hf-2.pause")) == 1
    finally:
        await sub.unsubscribe()
        await srv.unsubscribe()
        await bus.close()


# -- nats-py's own errors ---------------------------------------------------------------


USERS = 'authorization {{ users = [ {{ user: "tmcd", password: "{password}"{extra} }} ] }}\n'


async def test_permissions_violation_is_one_warning_a_minute(
    serve: NatsWithConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tmcd.bus")
    server = serve(USERS.format(password="pw", extra=', permissions: { publish: { deny: ["tmc.forbidden.>"] } }'))
    clock = FakeClock()
    bus = Bus(NatsConfig(user="tmcd", password="pw"), SelfMetrics(), url=server.url, clock=clock)
    await bus.connect(retry=False)
    try:
        for _ in range(500):
            await bus.publish_raw("tmc.forbidden.x", b"x")
        await bus.flush()

        async def several() -> bool:  # the server answers some of the 500 with an -ERR each
            return bus.errors.seen[PERMISSIONS] >= 10

        await wait_for(several, what="the server's permission errors")
        warned = lines(caplog, "NATS permissions violation")
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        assert 'publish to "tmc.forbidden.x"' in warned[0].getMessage().lower()
        clock.now += 60
        await bus.publish_raw("tmc.forbidden.x", b"x")

        async def second() -> list[logging.LogRecord] | None:
            found = lines(caplog, "NATS permissions violation")
            return found if len(found) == 2 else None

        warned = await wait_for(second, what="the next report a minute later")
        held = re.search(r"; (\d+) more permissions violation errors since the last report$", warned[1].getMessage())
        assert held is not None and int(held.group(1)) >= 9
        assert bus.connected  # a permissions violation does not cost the connection
    finally:
        await bus.close()


async def test_authorization_violation_on_reconnect_is_shown(
    serve: NatsWithConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tmcd.bus")
    server = serve(USERS.format(password="pw", extra=""))
    clock = FakeClock()
    cfg = NatsConfig(user="tmcd", password="pw", reconnect_wait_min=0.05, reconnect_wait_max=0.1)
    bus = Bus(cfg, SelfMetrics(), url=server.url, clock=clock)
    await bus.connect(retry=False)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        await asyncio.to_thread(server.stop)
        assert server.config_file is not None
        server.config_file.write_text(USERS.format(password="rotated", extra=""))  # tmcd's password is stale
        server.port = port
        await asyncio.to_thread(server.start)

        async def rejected_three_times() -> bool:
            return bus.errors.seen[AUTHORIZATION] >= 3

        await wait_for(rejected_three_times, what="three rejected reconnects", timeout=15)
        warned = lines(caplog, "NATS authorization violation")
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        assert "check nats.user/password" in warned[0].getMessage()
        clock.now += 60

        async def second() -> bool:
            return len(lines(caplog, "NATS authorization violation")) == 2

        await wait_for(second, what="the next report", timeout=15)
        assert "more authorization violation errors since the last report" in warned_last(caplog)
        assert not bus.connected
    finally:
        await bus.close()


def warned_last(caplog: pytest.LogCaptureFixture) -> str:
    return lines(caplog, "NATS authorization violation")[-1].getMessage()


async def test_slow_consumer_is_one_warning_a_minute(nats_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tmcd.bus")
    clock = FakeClock()
    bus = Bus(NatsConfig(), SelfMetrics(), url=nats_url, clock=clock)
    await bus.connect(retry=False)
    subject = s.syncer_sync("slow-1")
    release = asyncio.Event()
    handled: list[str] = []

    async def handler(d: Delivery[SyncEvent]) -> None:
        await release.wait()
        handled.append(d.msg.name)

    sub = await bus.subscribe(subject, handler, channel=s.SYNCER_SYNC, max_pending=5)
    nc = await nats_connect(nats_url)
    try:
        for i in range(200):
            await nc.publish(subject, encode(ev("slow-1", f"e-{i}")))
        await nc.flush()
        await bus.flush()
        warned = lines(caplog, "NATS slow consumer")
        assert len(warned) == 1
        assert f"messages dropped on {subject}" in warned[0].getMessage()
        clock.now += 60
        for name in ("late-1", "late-2"):  # the handler took one message off the queue since: two overflow it
            await nc.publish(subject, encode(ev("slow-1", name)))
        await nc.flush()
        await bus.flush()
        warned = lines(caplog, "NATS slow consumer")
        assert len(warned) == 2 and "more slow consumer errors since the last report" in warned[1].getMessage()
        release.set()

        async def drained() -> bool:
            return len(handled) >= 6  # the one in the handler and the five queued

        await wait_for(drained, what="the queued messages handled")
        assert len(handled) < 200  # the rest were dropped, as the warning said
    finally:
        release.set()
        await sub.unsubscribe()
        await nc.close()
        await bus.close()


class FreezingProxy:
    """A loopback TCP proxy in front of a nats-server that can stop forwarding what clients send
    (and keeps a copy of what they sent, in ``sent``)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.sent = bytearray()
        self._frozen: list[list[bool]] = []
        self._clients: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def tell_clients(self, data: bytes) -> None:
        """Send ``data`` to every connected client as if the server had sent it."""
        for writer in self._clients:
            writer.write(data)

    def freeze_current(self) -> None:
        """Swallow everything the connections open now send (new connections are unaffected)."""
        for flag in self._frozen:
            flag[0] = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._port)
        frozen = [False]
        self._frozen.append(frozen)
        self._clients.append(writer)
        for src, dst, flag, copy in ((reader, up_writer, frozen, self.sent), (up_reader, writer, [False], None)):
            task = asyncio.create_task(self._pipe(src, dst, flag, copy))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, frozen: list[bool], copy: bytearray | None
    ) -> None:
        try:
            while data := await src.read(65536):
                if copy is not None:
                    copy += data
                if not frozen[0]:
                    dst.write(data)
                    await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()


async def test_flush_covers_what_was_sent_just_before(nats_url: str) -> None:
    """nats-py's flush() writes its PING ahead of commands still queued for its flusher task; the
    bus's client writes those first, so when subscribe() (or flush()) returns, the server has seen
    the SUB (or PUB) and a request from another connection finds its responder."""
    port = int(nats_url.rsplit(":", 1)[1])
    async with FreezingProxy(port) as proxy:
        bus = Bus(NatsConfig(), SelfMetrics(), url=proxy.url)
        await bus.connect(retry=False)
        try:

            async def handler(d: Delivery[SyncEvent]) -> None:
                pass

            for i in range(20):
                start = len(proxy.sent)
                sub = await bus.subscribe(s.syncer_sync(f"fl-{i}"), handler, channel=s.SYNCER_SYNC)
                wire = bytes(proxy.sent[start:])
                assert wire.index(f"SUB tmc.syncer.fl-{i}.sync ".encode()) < wire.index(b"PING\r\n"), wire
                await sub.unsubscribe()
                start = len(proxy.sent)
                await bus.publish_raw(f"tmc.test.flush.{i}", b"x")
                await bus.flush()
                wire = bytes(proxy.sent[start:])
                assert wire.index(f"PUB tmc.test.flush.{i} ".encode()) < wire.index(b"PING\r\n"), wire
        finally:
            await bus.close()


async def test_stale_connection_is_a_warning_and_the_bus_reconnects(
    serve: NatsWithConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tmcd.bus")
    server = serve('ping_interval: "100ms"\nping_max: 2\n')
    port = int(server.url.rsplit(":", 1)[1])
    async with FreezingProxy(port) as proxy:
        cfg = NatsConfig(reconnect_wait_min=0.05, reconnect_wait_max=0.2)
        bus = Bus(cfg, SelfMetrics(), url=proxy.url, clock=FakeClock())
        await bus.connect(retry=False)
        try:
            proxy.freeze_current()  # tmcd's PONGs no longer reach the server

            async def warned() -> bool:
                return bool(lines(caplog, "NATS stale connection"))

            await wait_for(warned, what="a stale connection warning")

            async def back() -> bool:
                return bus.connected and bus.reconnects >= 1

            await wait_for(back, what="the reconnect")
            assert len(lines(caplog, "NATS stale connection")) == 1
            proxy_port = proxy.url.rsplit(":", 1)[1]
            reconnected = lines(caplog, "reconnected to NATS at")
            assert (
                reconnected and reconnected[-1].getMessage() == f"reconnected to NATS at nats://127.0.0.1:{proxy_port}"
            )
        finally:
            await bus.close()


async def test_connect_lines_name_the_server_without_credentials(
    serve: NatsWithConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tmcd.bus")
    server = serve(USERS.format(password="s3cret", extra=""))
    hostport = server.url.removeprefix("nats://")
    bus = Bus(NatsConfig(), SelfMetrics(), url=f"nats://tmcd:s3cret@{hostport}")
    await bus.connect(retry=False)
    await bus.close()
    assert [r.getMessage() for r in lines(caplog, "connected to NATS at")] == [
        f"connected to NATS at nats://{hostport}"
    ]
    bad = Bus(NatsConfig(connect_timeout=1), SelfMetrics(), url=f"nats://tmcd:wrong@{hostport}")
    with pytest.raises(BusError, match=f"cannot connect to NATS at nats://{hostport}: ") as info:
        await bad.connect(retry=False)
    assert "wrong" not in str(info.value)
    assert all("s3cret" not in r.getMessage() and "ParseResult" not in r.getMessage() for r in caplog.records)


async def test_authorization_revoked_mid_connection_is_an_error(
    serve: NatsWithConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tmcd.bus")
    server = serve(USERS.format(password="pw", extra=""))
    port = int(server.url.rsplit(":", 1)[1])
    async with FreezingProxy(port) as proxy:
        bus = Bus(NatsConfig(user="tmcd", password="pw"), SelfMetrics(), url=proxy.url, clock=FakeClock())
        await bus.connect(retry=False)
        try:
            # what a server sends a client whose authorization it revoked (e.g. on a config reload)
            proxy.tell_clients(b"-ERR 'Authorization Violation'\r\n")

            async def said() -> list[logging.LogRecord]:
                return lines(caplog, "NATS connection to")

            closed = await wait_for(said, what="the closed connection reported")
            assert len(closed) == 1 and closed[0].levelno == logging.ERROR
            assert closed[0].getMessage() == (
                f"NATS connection to {proxy.url} closed (authorization failed); "
                "tmcd does not reconnect on its own: fix the cause and restart it"
            )
            assert not bus.connected
        finally:
            await bus.close()
