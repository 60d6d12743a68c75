"""A KV bucket's changes after a revision, in order, with a bounded buffer.

Backpressure policy: at most ``max_pending`` changes wait in memory for the reader.  When
a slow reader lets that many pile up, the feed stops its server-side consumer (deleting
it) and drops what was still arriving; once the reader has taken everything buffered, the
feed starts a new consumer at the first revision it had not buffered.  A slow reader
thus costs at most ``max_pending`` values of memory, and the server holds the rest, as it
does for any reader.  Closing the feed (or abandoning the iterator) deletes the consumer,
unsubscribes and cancels everything the feed started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from nats import errors as nats_errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js import errors as js_errors

T = TypeVar("T")
log = logging.getLogger("tmcd.bus")

MAX_PENDING = 256
"""Changes buffered per feed, at most (each is one KV value)."""


class ChangeFeed(Generic[T]):
    """The changes of one bucket after ``after_revision`` until ``stop`` is set or it is closed.

    Use as ``async with feed: async for change in feed: ...``; each change is built by
    ``make(key, data_or_None, revision)`` (None data means the key was deleted); a change
    ``make`` returns None for (a value it cannot use) is skipped.
    """

    def __init__(
        self,
        js: Any,
        bucket: str,
        make: Callable[[str, bytes | None, int], T | None],
        after_revision: int,
        stop: asyncio.Event,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._js = js
        self._bucket = bucket
        self._stream = f"KV_{bucket}"
        self._prefix = len(f"$KV.{bucket}.")
        self._make = make
        self._stop = stop
        self._max = max(1, max_pending)
        self._next = max(1, after_revision + 1)  # the first revision not yet buffered
        self._buf: deque[Msg] = deque()
        self._sub: Any = None
        self._paused = False
        self._stopping: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._stop_task: asyncio.Task[bool] | None = None
        self._closed = False

    @property
    def buffered(self) -> int:
        """Changes received and not yet read (at most ``max_pending``)."""
        return len(self._buf)

    @property
    def paused(self) -> bool:
        """True while the reader is ``max_pending`` changes behind and the consumer is stopped."""
        return self._paused

    async def __aenter__(self) -> ChangeFeed[T]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> ChangeFeed[T]:
        return self

    async def __anext__(self) -> T:
        change = await self.next()
        if change is None:
            raise StopAsyncIteration
        return change

    async def start(self) -> None:
        """Subscribe from ``after_revision + 1``."""
        self._stop_task = asyncio.ensure_future(self._stop.wait())
        self._stop_task.add_done_callback(lambda _: self._wake())
        try:
            await self._subscribe()
        except BaseException:  # cancelled or failed: `async with` will not call close()
            await self.close()
            raise

    async def next(self) -> T | None:
        """The next change, or None once ``stop`` is set or the feed is closed."""
        while True:
            if self._closed or self._stop.is_set():
                return None
            if self._buf:
                msg = self._buf.popleft()
                op = (msg.headers or {}).get("KV-Operation")
                data = None if op in ("DEL", "PURGE") or not msg.data else msg.data
                change = self._make(msg.subject[self._prefix :], data, msg.metadata.sequence.stream)
                if change is None:
                    continue
                return change
            if self._paused:
                await self._resume()
                continue
            # A plain future, not a task: a reader cancelled here leaves nothing running.
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def close(self) -> None:
        """Delete the consumer, unsubscribe and cancel the feed's own task (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._stop_task is not None:
            self._stop_task.cancel()
        sub, self._sub = self._sub, None
        if self._stopping is not None:
            await asyncio.wait({self._stopping})
        if sub is not None:
            await self._unsubscribe(sub)
        self._buf.clear()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _subscribe(self) -> None:
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._next)
        pending = asyncio.ensure_future(
            self._js.subscribe(
                f"$KV.{self._bucket}.>", stream=self._stream, cb=self._on_msg, ordered_consumer=True, config=config
            )
        )
        try:
            self._sub = await asyncio.shield(pending)
        except asyncio.CancelledError:
            # The server may have made the consumer already: finish, so that close() deletes it.
            with contextlib.suppress(Exception):
                self._sub = await pending
            raise

    async def _on_msg(self, msg: Msg) -> None:
        # Never blocks: nats-py drops (and, for an ordered consumer, skips) messages of a
        # subscription whose callback falls behind, so the bound is kept here instead.
        if self._paused or self._closed:
            return
        seq: int = msg.metadata.sequence.stream
        if seq < self._next:
            return
        if len(self._buf) >= self._max:
            self._paused = True
            sub, self._sub = self._sub, None
            if sub is not None:
                self._stopping = asyncio.ensure_future(self._unsubscribe(sub))
            return
        self._buf.append(msg)
        self._next = seq + 1
        self._wake()

    async def _resume(self) -> None:
        if self._stopping is not None:
            await asyncio.wait({self._stopping})
            self._stopping = None
        self._paused = False
        log.debug("change feed of %s resumes at revision %d", self._bucket, self._next)
        await self._subscribe()

    async def _unsubscribe(self, sub: Any) -> None:
        consumer = getattr(sub, "_consumer", None)
        try:
            await sub.unsubscribe()
        except nats_errors.Error:  # closed or draining connection: nothing to tell the server
            pass
        finally:
            # nats-py leaves an ordered consumer's heartbeat and flow-control tasks running
            # when the connection is already closed (its unsubscribe raises first).
            jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)
            for task in (getattr(jsi, "_hbtask", None), getattr(jsi, "_fctask", None)):
                if task is not None:
                    task.cancel()
        nc = getattr(self._js, "_nc", None)
        if consumer and nc is not None and nc.is_connected:
            # without this the server keeps the ephemeral consumer until its inactivity timeout
            with contextlib.suppress(nats_errors.Error, js_errors.Error, TimeoutError):
                await self._js.delete_consumer(self._stream, consumer)
