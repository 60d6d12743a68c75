"""A fast durable pull consumer: hand-written pull requests into a callback subscription,
the batch's acks sent together once it is processed.

nats-py's stock ``fetch()`` costs ~50 µs a message (a task and a ``wait_for`` each); here
messages are handled inline in the subscription callback, and the per-batch I/O is one pull
request and the acks, written into the client's buffer in one go.

Every message is acknowledged on its own (ack policy explicit): replicas share the durable
consumer, and a cumulative ack (ack-all) from one replica would also acknowledge the messages
another replica has been handed but not processed yet — lost if that replica dies.

A message delivered again that this consumer has already handled (its ack was lost, or the
server restarted and forgot the delivery) is acknowledged again and not handled twice: the
consumer remembers the stream sequences of its last ``max_ack_pending`` messages, as many as the
server can have outstanding.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from nats import errors as nats_errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js import errors as js_errors

if TYPE_CHECKING:
    from tmcd.bus.core import Bus

log = logging.getLogger("tmcd.bus")

SyncHandler = Callable[[Any], None]
AsyncHandler = Callable[[Any], Awaitable[None]]
_STATUS = "Status"
_DONE_STATUSES = frozenset({"404", "408", "409"})
PULL_MAX_BYTES = 8 * 1024 * 1024
"""Bytes one pull request asks for at most (with ``batch`` messages at most): a backlog of large
messages must not put tens of megabytes in flight to tmcd at once (what a client holds unread
counts against the server's slow-consumer limits).  Raised to twice the server's largest message
when that is bigger, so any single message still fits."""


class Seen:
    """The stream sequences of the last ``size`` messages handled (a bounded window)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._order: deque[int] = deque()
        self._set: set[int] = set()
        self._high = 0

    def first_time(self, seq: int) -> bool:
        """Record ``seq``; False when it was handled already (within the window)."""
        if seq <= self._high and seq in self._set:
            return False
        self._set.add(seq)
        self._order.append(seq)
        if len(self._order) > self._size:
            self._set.discard(self._order.popleft())
        self._high = max(self._high, seq)
        return True


class PullConsumer:
    """One durable consumer (explicit acks, sent per batch) on one stream, driven until stop."""

    def __init__(
        self,
        bus: Bus,
        stream: str,
        durable: str,
        handler: SyncHandler | AsyncHandler,
        stop: asyncio.Event,
        *,
        filter_subject: str | None = None,
        batch: int = 256,
        expires: float = 0.5,
        ack_wait: float = 30.0,
        max_ack_pending: int = 20000,
        drain_timeout: float = 5.0,
        on_ready: Callable[[], None] | None = None,
        on_pending: Callable[[int], None] | None = None,
        label: str | None = None,
        start_time: float | None = None,
    ) -> None:
        self._bus = bus
        self._start_time = start_time
        self.stream = stream
        self.durable = durable
        self._handler = handler
        self._is_async = inspect.iscoroutinefunction(handler)
        self._stop = stop
        self._filter = filter_subject
        self._batch = batch
        self._expires = expires
        self._ack_wait = ack_wait
        self._max_ack_pending = max(max_ack_pending, batch)
        self._drain_timeout = drain_timeout
        self._on_ready = on_ready
        self._on_pending = on_pending
        self._label = stream if label is None else label
        self._done = asyncio.Event()
        self._received = 0
        self._last: Msg | None = None
        self._acks: list[str] = []
        """Ack subjects of the processed messages of the current batch."""
        self._seen = Seen(self._max_ack_pending)
        self.processed = 0
        self.duplicates = 0
        """Messages delivered again after this consumer handled them (acknowledged, not handled)."""

    async def _ensure_consumer(self) -> None:
        config = api.ConsumerConfig(
            durable_name=self.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_ack_pending=self._max_ack_pending,
            deliver_policy=api.DeliverPolicy.ALL,
            filter_subject=self._filter,
            max_waiting=16,
        )
        if self._start_time is not None:
            # a reader rebuilding its memory: start over from that time, whatever was acked before
            config.deliver_policy = api.DeliverPolicy.BY_START_TIME
            config.opt_start_time = dt.datetime.fromtimestamp(self._start_time, dt.UTC)
            with contextlib.suppress(js_errors.NotFoundError):
                await self._bus.js.delete_consumer(self.stream, self.durable)
        try:
            await self._bus.js.add_consumer(self.stream, config)
        except js_errors.APIError:  # exists with another config (a changed ack policy is a 500: 10012)
            info = await self._bus.js.consumer_info(self.stream, self.durable)
            if info.config.ack_policy != api.AckPolicy.EXPLICIT:
                # made by an older tmcd (ack-all): the ack policy cannot change in place; go on
                # from the first message it has not acknowledged
                start = info.ack_floor.stream_seq + 1
                log.warning(
                    "consumer %s/%s has ack policy %s; recreating it with explicit acks from stream sequence %d",
                    self.stream,
                    self.durable,
                    info.config.ack_policy,
                    start,
                )
                config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = start
                await self._bus.js.delete_consumer(self.stream, self.durable)
                await self._bus.js.add_consumer(self.stream, config)

    async def _on_msg(self, msg: Msg) -> None:
        # JetStream's own status messages (404, 408, 409, 100) have no reply subject; a stored message
        # always has one (its ack subject), so an empty one a publisher gave a Status header is not a status
        if not msg.reply and not msg.data and msg.headers and _STATUS in msg.headers:
            status = msg.headers[_STATUS]
            if status in _DONE_STATUSES:
                self._done.set()
            elif status != "100":  # 100 = idle heartbeat / flow control
                log.debug("%s/%s: status %s %s", self.stream, self.durable, status, msg.headers.get("Description"))
            return
        if msg.reply and not self._seen.first_time(msg.metadata.sequence.stream):
            self.duplicates += 1
            log.debug("%s/%s: %s delivered again; handled already", self.stream, self.durable, msg.reply)
        elif self._is_async:
            await self._bus.handle_delivery(msg, cast(AsyncHandler, self._handler), self._label)
        else:
            self._bus.handle_delivery_sync(msg, cast(SyncHandler, self._handler), self._label)
        self._last = msg
        self._acks.append(msg.reply)
        self._received += 1
        if self._received >= self._batch:
            self._done.set()

    async def _request(self, batch: int) -> None:
        self._done.clear()
        self._received = 0
        max_bytes = max(PULL_MAX_BYTES, 2 * int(self._bus.nc.max_payload or 0))
        body = json.dumps({"batch": batch, "expires": int(self._expires * 1e9), "max_bytes": max_bytes}).encode()
        await self._bus.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}", body, reply=self._inbox)

    async def _finish_batch(self) -> int | None:
        """Ack every processed message of the batch; returns the last one's stream sequence."""
        last, self._last = self._last, None
        acks, self._acks = self._acks, []
        if last is None:
            return None
        publish = self._bus.nc.publish
        for subject in acks:
            await publish(subject, b"")
        meta = last.metadata
        if self._on_pending is not None:
            self._on_pending(meta.num_pending)
        seq: int = meta.sequence.stream
        return seq

    async def run(self) -> None:
        """Consume until stop; then drain what was published before the stop (bounded)."""
        await self._ensure_consumer()
        nc = self._bus.nc
        self._inbox = nc.new_inbox()
        sub = await nc.subscribe(self._inbox, cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1)
        if self._on_ready is not None:
            self._on_ready()
        loop = asyncio.get_running_loop()
        cutoff: int | None = None
        drain_until = 0.0
        last_seq = 0
        try:
            while True:
                if self._stop.is_set():
                    if cutoff is None:
                        cutoff = await self._bus.stream_last_seq(self.stream)
                        drain_until = loop.time() + self._drain_timeout
                        log.debug("%s/%s: draining up to stream sequence %d", self.stream, self.durable, cutoff)
                    if last_seq >= cutoff or loop.time() >= drain_until:
                        break
                try:
                    await self._request(self._batch)
                except (nats_errors.Error, OSError) as exc:
                    log.warning("%s/%s: pull request failed (%s)", self.stream, self.durable, exc)
                    await self._pause(0.5)
                    continue
                try:
                    await asyncio.wait_for(self._done.wait(), self._expires + 2.0)
                except TimeoutError:
                    # the request was lost (reconnect?): whatever arrived is handled; ask again
                    log.debug("%s/%s: pull request timed out", self.stream, self.durable)
                got = self._received
                seq = await self._finish_batch()
                if seq is not None:
                    last_seq = seq
                elif cutoff is not None and got == 0:
                    break  # nothing left that was there before the stop
        finally:
            await self._finish_batch()
            with contextlib.suppress(nats_errors.Error, OSError):
                await sub.unsubscribe()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
