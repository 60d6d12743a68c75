"""The Bus: connection, typed publish/request/subscribe, JetStream publish, durable pull
consumers and KV, with malformed-message accounting and trace propagation built in."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import nats
import nats.aio.client
from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import errors as js_errors
from opentelemetry import context as otel_context

from tmcd.bus import tracing
from tmcd.bus.consumer import PullConsumer
from tmcd.bus.deadletter import MAX_DEAD_LETTERS, DeadLetterQueue, InvalidMessages
from tmcd.bus.errors import BusError, NotConnectedError, reason_of
from tmcd.bus.kv import KvStore
from tmcd.bus.metrics import BusMetrics
from tmcd.bus.natserrors import NatsErrorLog, ReportingClient, classify, connect_failure, describe
from tmcd.bus.options import backoff_delay, credential_options, display_url, next_try, server_text, servers, tls_context
from tmcd.bus.provision import KV_BUCKETS, provision
from tmcd.bus.service import Endpoint, Service, StreamEndpoint, start_service
from tmcd.config import Config, NatsConfig
from tmcd.contracts.codec import InvalidMessage, decode, decode_as, encode
from tmcd.contracts.messages import ControlReply, Message, SyncEventBatch
from tmcd.contracts.subjects import Channel

log = logging.getLogger("tmcd.bus")

# nats-py reads the socket in DEFAULT_BUFFER_SIZE chunks and gives its asyncio StreamReader
# that limit, which pauses the transport above twice the limit.  Syncer batches are ~40 KB,
# so the stock 32 KB meant a pause/resume (an epoll unregister and register) and several
# loop iterations per message; 1 MB reads take many messages per iteration.  Set once,
# process-wide, before any connection: tmcd.bus is the only user of nats-py in tmcd.
READ_BUFFER_SIZE = 1 << 20
nats.aio.client.DEFAULT_BUFFER_SIZE = max(nats.aio.client.DEFAULT_BUFFER_SIZE, READ_BUFFER_SIZE)

M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Message)
T = TypeVar("T")


@dataclass(slots=True)
class Delivery(Generic[M]):
    """A decoded message as handed to a handler."""

    subject: str
    msg: M
    headers: dict[str, str] | None = None


Handler = Callable[[Delivery[Any]], Awaitable[None]]
RequestHandler = Callable[[Delivery[Any]], Awaitable[Message]]


class Bus:
    """tmcd's only door to NATS."""

    def __init__(
        self,
        cfg: NatsConfig,
        metrics: BusMetrics,
        *,
        url: str | None = None,
        clock: Callable[[], float] = time.time,
        max_dead_letters: int = MAX_DEAD_LETTERS,
    ) -> None:
        self._cfg = cfg
        self._url = url if url is not None else cfg.url
        self._metrics = metrics
        self._clock = clock  # timestamps of replies, and the once-a-minute log limits
        self._nc: Client | None = None
        self._js: Any = None
        self.invalid = InvalidMessages(metrics, clock)
        self.errors = NatsErrorLog(clock, lambda kind: metrics.nats_errors.labels(kind).inc())
        self.state_listeners: list[Callable[[bool], None]] = []
        self.reconnects = 0
        self._connect_error: BaseException | None = None
        """What nats-py reported during the current first-connect attempt (a rejected credential wins)."""
        self._closing = False
        self._processed_children: dict[str, Any] = {}
        self._dead = DeadLetterQueue(
            self._publish_dead, clock, max_dead_letters, on_drop=metrics.dead_letters_dropped.inc
        )

    @property
    def url(self) -> str:
        """The server URL(s) this bus connects to (may carry credentials: log :attr:`display_url`)."""
        return self._url

    @property
    def display_url(self) -> str:
        """:attr:`url` as it may be logged or printed: without user, password or token."""
        return display_url(self._url)

    @property
    def connected(self) -> bool:
        """True while the connection is up."""
        return self._nc is not None and self._nc.is_connected

    def _set_state(self, up: bool) -> None:
        self._metrics.nats_connected.set(1 if up else 0)
        for cb in list(self.state_listeners):
            cb(up)

    def _options(self) -> dict[str, Any]:
        cfg = self._cfg

        async def on_disconnect() -> None:
            if self._closing:
                log.debug("disconnected from NATS (closing)")
            else:
                log.warning("disconnected from NATS")
            self._set_state(False)

        async def on_reconnect() -> None:
            self.reconnects += 1
            log.info("reconnected to NATS at %s", self._server())
            self._set_state(True)

        async def on_error(exc: Exception) -> None:
            if self._nc is None:  # the first connection: connect() says why it fails
                if self._connect_error is None or classify(exc) is not None:  # not hidden by a reset after it
                    self._connect_error = exc
                log.debug("NATS: %s", describe(exc))
            else:
                self.errors.report(exc)

        async def on_closed() -> None:
            self._set_state(False)
            if not self._closing:  # e.g. the server revoked tmcd's authorization: nats-py gives up
                err = self._nc.last_error if self._nc is not None else None
                log.error(
                    "NATS connection to %s closed%s; tmcd does not reconnect on its own: fix the cause and restart it",
                    self._server(),
                    f" ({describe(err)})" if err is not None else "",
                )

        opts: dict[str, Any] = {
            "servers": servers(self._url),
            "name": cfg.name,
            "connect_timeout": cfg.connect_timeout,
            "allow_reconnect": True,
            # Initial connect: try each server once (our own loop retries with backoff);
            # switched to -1 (forever) as soon as the first connection is up.
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": cfg.reconnect_wait_min,
            "reconnect_to_server_handler": lambda pool, _info: next_try(
                pool, cfg.reconnect_wait_min, cfg.reconnect_wait_max
            ),
            "disconnected_cb": on_disconnect,
            "reconnected_cb": on_reconnect,
            "error_cb": on_error,
            "closed_cb": on_closed,
            "drain_timeout": 30,
            "pending_size": 64 * 1024 * 1024,
        }
        ctx = tls_context(cfg)
        if ctx is not None:
            opts["tls"] = ctx
        opts.update(credential_options(cfg))
        return opts

    async def connect(self, *, retry: bool = True, stop: asyncio.Event | None = None) -> None:
        """Connect; with ``retry`` keep trying with backoff until connected or ``stop`` is set."""
        attempt = 0
        while True:
            self._connect_error = None
            try:
                nc = ReportingClient()
                await nc.connect(**self._options())
                self._nc = nc
                break
            except (OSError, TimeoutError, nats_errors.Error) as exc:
                where, why = display_url(self._url), connect_failure(exc, self._connect_error)
                if not retry:
                    raise BusError(f"cannot connect to NATS at {where}: {why}") from exc
                delay = backoff_delay(attempt, self._cfg.reconnect_wait_min, self._cfg.reconnect_wait_max)
                log.warning("cannot connect to NATS at %s (%s); retrying in %.1fs", where, why, delay)
                attempt += 1
                if stop is not None:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        raise BusError("stopped before NATS connected") from exc
                    except TimeoutError:
                        continue
                await asyncio.sleep(delay)
        self._nc.options["max_reconnect_attempts"] = -1
        self._js = self._nc.jetstream()
        log.info("connected to NATS at %s", self._server())
        self._set_state(True)

    def _server(self) -> str:
        """The server the client is (or was last) connected to, for log lines."""
        parsed = self._nc.connected_url if self._nc is not None else None
        return server_text(parsed) if parsed is not None else display_url(self._url)

    @property
    def nc(self) -> Client:
        """The nats-py client (for the bus package only)."""
        if self._nc is None:
            raise NotConnectedError("not connected to NATS")
        return self._nc

    async def close(self, dead_letter_timeout: float = 5.0) -> None:
        """Publish queued dead letters, drain subscriptions, flush pending publishes (acks included), close.

        Dead letters get ``dead_letter_timeout`` seconds; what is still queued after the
        connection closed is dropped with one warning.
        """
        if self._nc is None or self._nc.is_closed:
            await self._dead.settle(0, closed=True)
            return
        self._closing = True
        await self._dead.settle(dead_letter_timeout, closed=False)
        try:
            await self._nc.drain()
        except (nats_errors.Error, OSError, TimeoutError) as exc:
            log.debug("drain failed (%s); closing", exc)
            await self._nc.close()
        # handlers that ran while subscriptions drained may have queued more
        await self._dead.settle(dead_letter_timeout, closed=True)

    # -- core NATS --------------------------------------------------------

    async def publish(self, subject: str, msg: Message, headers: dict[str, str] | None = None) -> None:
        """Publish a message (core NATS: a stream on the subject still stores it)."""
        await self.nc.publish(subject, encode(msg), headers=tracing.inject(headers))

    async def publish_raw(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish bytes as they are (simulators, tests, dead letters)."""
        await self.nc.publish(subject, data, headers=headers)

    async def request(self, subject: str, msg: Message, reply_type: type[R], timeout: float = 2.0) -> R:
        """Send a request and decode the reply as ``reply_type``; raises BusError."""
        try:
            rep = await self.nc.request(subject, encode(msg), timeout=timeout, headers=tracing.inject(None))
        except nats_errors.NoRespondersError as exc:
            raise BusError(f"no responder on {subject}") from exc
        except (nats_errors.TimeoutError, TimeoutError) as exc:
            raise BusError(f"no reply on {subject} within {timeout}s") from exc
        try:
            return decode_as(reply_type, rep.data)
        except InvalidMessage as exc:
            raise BusError(f"bad reply on {subject}: {exc}") from exc

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has seen everything published so far."""
        await self.nc.flush(int(max(1, timeout)))

    def _dead_letter_soon(self, subject: str, data: bytes, err: InvalidMessage) -> None:
        """Count, log (rate-limited) and queue a copy to tmc.dead.<subject>."""
        self.invalid.record(subject, err)
        self._dead.add(subject, data, err)

    def _handler_failed(self, msg: Msg, exc: Exception, kind: str) -> None:
        """A handler raised: count, log its traceback (rate-limited) and dead-letter the message."""
        if isinstance(exc, InvalidMessage):  # content that decodes but cannot be true: its own reason
            exc.kind = kind if exc.kind == "unknown" else exc.kind
            return self._dead_letter_soon(msg.subject, msg.data, exc)
        self.invalid.handler_failed(msg.subject, exc, kind)
        self._dead.add(msg.subject, msg.data, InvalidMessage("handler_error", repr(exc), kind))

    async def _publish_dead(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        await self.nc.publish(subject, data, headers=headers)

    def _processed(self, label: str, msg: Message) -> None:
        if not label:  # a secondary consumer of the stream: the primary one accounts for it
            return
        child = self._processed_children.get(label)
        if child is None:
            child = self._processed_children[label] = self._metrics.events_processed.labels(label)
        child.inc(len(msg.events) if isinstance(msg, SyncEventBatch) else 1)

    def _decode_or_dead_letter(self, msg: Msg, channel: Channel | None, label: str = "core") -> Message | None:
        try:
            return decode(msg.subject, msg.data, channel)
        except InvalidMessage as err:
            if label:
                self._dead_letter_soon(msg.subject, msg.data, err)
            else:
                log.debug(
                    "skipping invalid message on %s (%s); the stream's primary consumer reports it", msg.subject, err
                )
            return None

    def handle_delivery_sync(self, msg: Msg, handler: Callable[[Delivery[Any]], None], label: str) -> None:
        """Hot path: decode and run a synchronous handler; bad input is dead-lettered.

        ``label`` is the stream name counted in ``tmc_events_processed_total``; an empty
        label marks a secondary consumer, which neither counts nor dead-letters (the
        stream's primary consumer does, once).
        """
        decoded = self._decode_or_dead_letter(msg, None, label)
        if decoded is None:
            return
        ctx = tracing.extract(msg.headers) if msg.headers else None
        token = otel_context.attach(ctx) if ctx is not None else None
        try:
            handler(Delivery(msg.subject, decoded, msg.headers))
        except Exception as exc:
            self._handler_failed(msg, exc, decoded.KIND)
            return
        finally:
            if token is not None:
                otel_context.detach(token)
        self._processed(label, decoded)

    async def handle_delivery(
        self, msg: Msg, handler: Handler, label: str, _is_async: bool = True, channel: Channel | None = None
    ) -> Message | None:
        """Decode and run an async handler; bad input is dead-lettered. Returns the decoded message."""
        decoded = self._decode_or_dead_letter(msg, channel, label)
        if decoded is None:
            return None
        ctx = tracing.extract(msg.headers)
        token = otel_context.attach(ctx) if ctx is not None else None
        try:
            await handler(Delivery(msg.subject, decoded, msg.headers))
        except Exception as exc:
            self._handler_failed(msg, exc, decoded.KIND)
            return None
        finally:
            if token is not None:
                otel_context.detach(token)
        self._processed(label, decoded)
        return decoded

    async def subscribe(
        self,
        subject: str,
        handler: Handler,
        *,
        channel: Channel | None = None,
        queue: str = "",
        max_pending: int | None = None,
    ) -> Any:
        """Subscribe with a typed handler; returns the subscription (call ``drain()`` to stop).

        ``max_pending`` bounds the messages waiting for the handler (nats-py's default
        otherwise); beyond it messages are dropped and logged as a slow consumer.
        """

        async def cb(msg: Msg) -> None:
            await self.handle_delivery(msg, handler, "core", True, channel)

        if max_pending is None:
            sub = await self.nc.subscribe(subject, queue=queue, cb=cb)
        else:
            sub = await self.nc.subscribe(subject, queue=queue, cb=cb, pending_msgs_limit=max_pending)
        await self.nc.flush()  # the server knows the interest once this returns
        return sub

    async def serve(
        self, subject: str, handler: RequestHandler, *, channel: Channel | None = None, queue: str = ""
    ) -> Any:
        """Answer requests on ``subject``; a malformed request gets a ControlReply code 400."""

        async def cb(msg: Msg) -> None:
            try:
                decoded = decode(msg.subject, msg.data, channel)
            except InvalidMessage as err:
                self._dead_letter_soon(msg.subject, msg.data, err)
                bad = ControlReply(ok=False, code=400, message=f"{err.reason}: {err.detail}", timestamp=self._clock())
                if msg.reply:
                    await self._reply(msg, encode(bad))
                return
            try:
                reply = await handler(Delivery(msg.subject, decoded, msg.headers))
            except Exception as exc:  # the requester gets the error; nothing to dead-letter
                self.invalid.handler_failed(msg.subject, exc, decoded.KIND, dead_lettered=False)
                reply = ControlReply(ok=False, code=500, message=repr(exc), timestamp=self._clock())
            self._metrics.events_processed.labels("core").inc()
            if msg.reply:
                await self._reply(msg, encode(reply))

        sub = await self.nc.subscribe(subject, queue=queue, cb=cb)
        await self.nc.flush()  # the server knows the interest once this returns
        return sub

    async def _reply(self, msg: Msg, data: bytes) -> None:
        # not msg.respond(): it copies the request's headers (a `Status: 503` reads as "no responders")
        await self.nc.publish(msg.reply, data)

    # -- JetStream ---------------------------------------------------------

    @property
    def js(self) -> Any:
        """The JetStream context (for the bus package only)."""
        if self._js is None:
            raise NotConnectedError("not connected to NATS")
        return self._js

    async def js_publish(
        self, subject: str, msg: Message, headers: dict[str, str] | None = None, timeout: float = 5.0
    ) -> int:
        """Publish to a stream and wait for its ack; returns the stream sequence."""
        try:
            ack = await self.js.publish(subject, encode(msg), timeout=timeout, headers=tracing.inject(headers))
        except (nats_errors.Error, js_errors.Error, TimeoutError) as exc:
            raise BusError(f"JetStream publish to {subject} failed: {reason_of(exc)}") from exc
        seq: int = ack.seq
        return seq

    async def provision(self, cfg: Config) -> dict[str, str]:
        """Create or update tmcd's streams and KV buckets (idempotent)."""
        return await provision(self.js, cfg)

    async def kv(self, logical: str, value_type: type[T]) -> KvStore[T]:
        """A typed KV store for one of tmcd's buckets (clusters, canaries, revisions, leases)."""
        bucket = KV_BUCKETS.get(logical, logical)
        try:
            kv = await self.js.key_value(bucket)
        except (nats_errors.Error, TimeoutError) as exc:
            raise BusError(f"KV bucket {bucket}: {exc}") from exc
        return KvStore(kv, value_type, self.js, bucket, on_invalid=self._dead_letter_soon)

    async def service(
        self,
        name: str,
        version: str,
        description: str,
        endpoints: Sequence[Endpoint | StreamEndpoint],
        queue_group: str = "tmcd",
    ) -> Service:
        """Start a NATS micro service (answers $SRV.PING|INFO|STATS); ``await svc.stop()`` to stop."""
        return await start_service(self.nc, name, version, description, endpoints, queue_group)

    async def consumer_info(self, stream: str, durable: str) -> Any:
        """Raw consumer info (pending, ack floor, redeliveries)."""
        return await self.js.consumer_info(stream, durable)

    async def consume(
        self,
        stream: str,
        durable: str,
        handler: Handler | Callable[[Delivery[Any]], None],
        stop: asyncio.Event,
        *,
        filter_subject: str | None = None,
        batch: int = 256,
        fetch_timeout: float = 0.5,
        ack_wait: float = 30.0,
        max_ack_pending: int = 20000,
        drain_timeout: float = 5.0,
        on_ready: Callable[[], None] | None = None,
        primary: bool = True,
        start_time: float | None = None,
    ) -> None:
        """Run a durable pull consumer (the batch acknowledged message by message once processed) until ``stop`` is set.

        ``handler`` may be a plain function (the hot path: called inline, no task per
        message) or a coroutine function.  Malformed messages are dead-lettered and acked
        with the batch.  When ``stop`` is set the consumer keeps going until it has
        processed everything the stream held at that moment (for at most
        ``drain_timeout`` seconds; what is left stays in the durable consumer), and takes
        nothing newer.  Only a ``primary`` consumer of a stream counts processed messages
        and dead-letters malformed ones (several agents may consume the same stream).
        With ``start_time`` the consumer is created anew delivering from that Unix time (a
        reader that keeps its state in memory rebuilds it after a restart).
        """
        pending = self._metrics.consumer_pending.labels(stream)
        consumer = PullConsumer(
            self,
            stream,
            durable,
            handler,
            stop,
            filter_subject=filter_subject,
            batch=batch,
            expires=fetch_timeout,
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
            drain_timeout=drain_timeout,
            on_ready=on_ready,
            on_pending=pending.set if primary else None,
            label=stream if primary else "",
            start_time=start_time,
        )
        await consumer.run()

    async def stream_last_seq(self, stream: str) -> int:
        """The stream's last sequence number (0 when unknown)."""
        try:
            info = await self.js.stream_info(stream)
        except (nats_errors.Error, js_errors.Error, TimeoutError):
            return 0
        last: int = info.state.last_seq
        return last
