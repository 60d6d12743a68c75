"""Watches over NATS: ``tmc.api.watch.<plural>``, served from the watch cache.

A client subscribes to an inbox and publishes a request with that inbox as its reply
subject.  An error (a bad or too old resourceVersion: 400, 410 Expired; 429, 503, 504) is the
one reply, a ``Status`` with the micro-service error headers, as for every other endpoint.
Otherwise every message on the inbox is a watch event ``{"type", "object"}``:

* first a ``BOOKMARK`` whose object carries the ``resourceVersion`` the watch starts at;
* ``ADDED``, ``MODIFIED``, ``DELETED`` (without a resourceVersion in the request, the current
  objects first, as ADDED);
* every :data:`HEARTBEAT` seconds a ``BOOKMARK`` with the resourceVersion to resume from,
  sent as a request: when the server answers that nobody subscribes to the inbox any more
  (the client unsubscribed or disconnected), the watch ends at once and leaves nothing behind;
* last, a message with the header ``Tmc-Watch-End``: ``timeout`` (the watch lasted
  ``timeoutSeconds``, at most :data:`WATCH_TIMEOUT`; a BOOKMARK: watch again from its
  resourceVersion), ``shutdown`` (tmcd is stopping; a BOOKMARK likewise) or ``expired`` (an
  ``ERROR`` event with a 410 Status: the client fell behind the cache's window; list again).

A client that hears nothing for a few heartbeats can assume tmcd went away and watch again
from the last resourceVersion it saw.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from tmcd.api import errors
from tmcd.api.index import Expired
from tmcd.api.reads import Reads, Watch, bookmark, expired, list_filters
from tmcd.bus.service import Headers, Reply, ReplyStream, StreamEndpoint
from tmcd.resources.kinds import Kind

log = logging.getLogger("tmcd.api")

HEARTBEAT = 5.0
"""Seconds between BOOKMARKs; each one also finds out whether the client is still there."""
WATCH_TIMEOUT = 300.0
"""Seconds a NATS watch lasts at most; the client watches again from its last resourceVersion."""
LIVENESS_TIMEOUT = 2.0
"""Seconds to wait for the server's "no responders" to a heartbeat before taking the client as there."""
END_HEADER = "Tmc-Watch-End"
START_CONCURRENCY = 64
"""Watch requests of one kind started at once (each waits for the cache to catch up first)."""

_encoder = msgspec.json.Encoder()


class WatchRequest(msgspec.Struct, kw_only=True, rename="camel"):
    """The body of a ``tmc.api.watch.<plural>`` request."""

    namespace: str = ""
    """Only this namespace (namespaced kinds); empty: all."""
    label_selector: str = ""
    field_selector: str = ""
    """Only ``metadata.name=NAME``."""
    resource_version: str = ""
    """Only changes after this resourceVersion (a list's); empty: the current objects first, as ADDED."""
    timeout_seconds: int = 0
    """End the watch after this many seconds (0: after WATCH_TIMEOUT, also the most)."""


def event(kind_: str, obj: Any) -> bytes:
    """A watch event as JSON."""
    return _encoder.encode({"type": kind_, "object": obj})


class NatsWatches:
    """The open NATS watches: one task each, ended by the client going away, their timeout or :meth:`close`."""

    def __init__(
        self,
        reads: Callable[[], Reads],
        heartbeat: float = HEARTBEAT,
        max_seconds: float = WATCH_TIMEOUT,
        authorize: Callable[[Headers], object] = lambda _headers: None,
    ) -> None:
        self._reads = reads
        self._authorize = authorize
        self.heartbeat = heartbeat
        self.max_seconds = max_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.get_running_loop().create_future()

    def __len__(self) -> int:
        return len(self._tasks)

    def endpoint(self, kind: Kind) -> StreamEndpoint:
        """The ``tmc.api.watch.<plural>`` endpoint of ``kind``."""

        async def handle(_subject: str, data: bytes, headers: Headers, stream: ReplyStream) -> Reply | None:
            try:
                self._authorize(headers)  # a read: a token only when api.require_auth_for_reads
                return await self._start(kind, data, stream)
            except errors.ApiError as err:
                return Reply(_encoder.encode(err.status()), str(err.code), err.message)

        meta = {
            "kind": kind.kind,
            "bucket": kind.bucket,
            "heartbeatSeconds": f"{self.heartbeat:g}",
            "timeoutSeconds": f"{self.max_seconds:g}",
        }
        return StreamEndpoint(f"watch-{kind.plural}", f"tmc.api.watch.{kind.plural}", handle, meta, START_CONCURRENCY)

    async def _start(self, kind: Kind, data: bytes, stream: ReplyStream) -> Reply | None:
        if self._stopping.done():
            raise errors.ApiError(503, "ServiceUnavailable", "tmcd is shutting down")
        try:
            req = msgspec.json.decode(data or b"{}", type=WatchRequest)
        except msgspec.DecodeError as exc:
            raise errors.bad_request(f"request is not a valid watch request: {exc}") from None
        if req.timeout_seconds < 0:
            raise errors.bad_request("timeoutSeconds must be >= 0")
        selector, name = list_filters(req.label_selector, req.field_selector)
        w = await self._reads().watch(
            kind, req.namespace, selector=selector, name=name, resource_version=req.resource_version
        )
        seconds = min(req.timeout_seconds or self.max_seconds, self.max_seconds)
        try:
            if self._stopping.done():  # closed while this one waited for the cache
                raise errors.ApiError(503, "ServiceUnavailable", "tmcd is shutting down")
            await stream.send(event("BOOKMARK", bookmark(kind, w.revision)))
        except BaseException:
            w.close()
            raise
        task = asyncio.create_task(self._run(w, stream, seconds), name=f"nats-watch-{kind.plural}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _run(self, w: Watch, stream: ReplyStream, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        next_beat = loop.time() + self.heartbeat
        probe: asyncio.Task[bool] | None = None
        try:
            while True:
                try:
                    for type_, _obj, raw in w.take():
                        await stream.send(event(type_, raw))
                except Expired as exc:
                    status = expired(str(exc)).status()
                    await stream.send(event("ERROR", status), {END_HEADER: "expired"})
                    return
                if probe is not None and probe.done():
                    if not probe.result():
                        return  # nobody listens any more
                    probe = None
                now = loop.time()
                if self._stopping.done() or w.closed or now >= end:
                    reason = "timeout" if now >= end else "shutdown"
                    await stream.send(event("BOOKMARK", bookmark(w.kind, w.revision)), {END_HEADER: reason})
                    return
                if now >= next_beat and probe is None:
                    beat = event("BOOKMARK", bookmark(w.kind, w.revision))
                    probe = asyncio.create_task(stream.listening(beat, timeout=LIVENESS_TIMEOUT))
                    next_beat = now + self.heartbeat
                await w.wait(max(0.0, min(next_beat, end) - now), self._stopping, probe)
        except Exception as exc:  # the connection closed under the watch, or a bug: end this watch only
            log.debug("NATS watch on %s ended: %r", stream.subject, exc)
        finally:
            w.close()
            if probe is not None:
                probe.cancel()

    async def close(self, timeout: float = 2.0) -> None:
        """End every watch (each gets its ``shutdown`` message) and wait for them, at most ``timeout`` s."""
        if not self._stopping.done():
            self._stopping.set_result(None)
        tasks = set(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
