"""NATS micro services (``$SRV.PING|INFO|STATS``, request counts and errors) over nats-py's
``nats.micro``: tmcd code supplies plain async handlers ``(subject, payload, headers) -> Reply``, or,
for an endpoint whose answer is a stream of messages, ``(subject, payload, headers, ReplyStream) ->
Reply | None``; ``headers`` are the request's NATS headers (empty when it has none)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nats import errors as nats_errors
from nats import micro

log = logging.getLogger("tmcd.bus")


@dataclass(frozen=True)
class Reply:
    """A handler's answer: the body, and an error code (e.g. "404") and description on failure."""

    data: bytes
    error_code: str = ""
    error: str = ""


Headers = Mapping[str, str]
ServiceHandler = Callable[[str, bytes, Headers], Awaitable[Reply]]


class ReplyStream:
    """The reply subject of a request answered by a stream of messages (e.g. a watch)."""

    def __init__(self, nc: Any, subject: str) -> None:
        self._nc = nc
        self.subject = subject

    async def send(self, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish one message of the stream."""
        await self._nc.publish(self.subject, data, headers=headers)

    async def listening(self, data: bytes, headers: dict[str, str] | None = None, timeout: float = 1.0) -> bool:
        """Send ``data`` as a request: False once nobody subscribes to the subject any more.

        The server answers "no responders" at once when the requester's subscription is gone
        (it unsubscribed, or its connection closed); a requester that is still there receives
        the message and need not answer (the wait for an answer times out).
        """
        try:
            await self._nc.request(self.subject, data, timeout=timeout, headers=headers)
        except nats_errors.NoRespondersError:
            return False
        except (nats_errors.TimeoutError, TimeoutError):
            return True
        except nats_errors.Error:  # our own connection is closed or draining: the stream cannot go on
            return False
        return True


StreamHandler = Callable[[str, bytes, Headers, ReplyStream], Awaitable[Reply | None]]


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a service."""

    name: str
    subject: str
    handler: ServiceHandler
    metadata: dict[str, str] | None = None
    """Shown in ``$SRV.INFO`` (e.g. the KV bucket a list endpoint reads, for watchers)."""
    concurrency: int = 1
    """Requests handled at once: 1 answers them one after another; more lets a request that
    waits (on JetStream, say) not hold up the others.  With that many in flight, the endpoint
    reads no further request until one is answered."""


@dataclass(frozen=True)
class StreamEndpoint:
    """An endpoint that answers with a stream of messages on the request's reply subject.

    The handler's Reply, if any, is sent first (an error ends the exchange there); anything
    after that the handler publishes itself through the :class:`ReplyStream`, typically from
    a task of its own (requests on one endpoint are handled one at a time).
    """

    name: str
    subject: str
    handler: StreamHandler
    metadata: dict[str, str] | None = None
    concurrency: int = 1
    """Requests handled at once (see :attr:`Endpoint.concurrency`)."""


class Service:
    """A running micro service."""

    def __init__(self, svc: Any) -> None:
        self._svc = svc
        self._running: set[asyncio.Task[None]] = set()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking requests, then wait (at most ``timeout`` s) for those being handled."""
        await self._svc.stop()
        if self._running:
            _, late = await asyncio.wait(set(self._running), timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)


async def start_service(
    nc: Any,
    name: str,
    version: str,
    description: str,
    endpoints: Sequence[Endpoint | StreamEndpoint],
    queue_group: str,
) -> Service:
    """Start a micro service; returns it (``await service.stop()`` to stop)."""
    svc = await micro.add_service(nc, name=name, version=version, description=description, queue_group=queue_group)
    service = Service(svc)
    for ep in endpoints:
        stats: list[Any] = []
        handler = _adapt_stream(ep.handler, nc) if isinstance(ep, StreamEndpoint) else _adapt(ep.handler)
        if ep.concurrency > 1:
            handler = _concurrent(handler, ep.concurrency, service._running, stats)
        await svc.add_endpoint(name=ep.name, subject=ep.subject, handler=handler, metadata=ep.metadata)
        stats.extend(getattr(svc, "_endpoints", [])[-1:])  # nats.micro's endpoint, for its statistics
    return service


async def _send(req: Any, reply: Reply) -> None:
    if reply.error_code:
        await req.respond_error(reply.error_code, reply.error, reply.data)
    else:
        await req.respond(reply.data)


def _adapt(handler: ServiceHandler) -> Callable[[Any], Awaitable[None]]:
    async def run(req: Any) -> None:
        try:
            reply = await handler(req.subject, req.data, req.headers or {})
        except Exception as exc:  # never let a bug kill the subscription
            log.exception("service handler failed for %s", req.subject)
            await req.respond_error("500", f"internal error: {type(exc).__name__}")
            return
        await _send(req, reply)

    return run


def _concurrent(
    run: Callable[[Any], Awaitable[None]], concurrency: int, running: set[asyncio.Task[None]], stats: list[Any]
) -> Callable[[Any], Awaitable[None]]:
    """Each request in a task of its own, at most ``concurrency`` at once (``stats``: nats.micro's endpoint)."""
    slots = asyncio.Semaphore(concurrency)

    async def handle(req: Any) -> None:
        t0 = time.perf_counter_ns()
        try:
            await run(req)
        finally:
            slots.release()
            # nats.micro times the handler, which only starts this task: add the real time
            for ep in stats:
                if hasattr(ep, "_processing_time") and ep._num_requests:
                    ep._processing_time += time.perf_counter_ns() - t0
                    ep._average_processing_time = int(ep._processing_time / ep._num_requests)

    async def dispatch(req: Any) -> None:
        await slots.acquire()  # all slots taken: the endpoint reads no more requests until one frees
        task = asyncio.create_task(handle(req))
        running.add(task)
        task.add_done_callback(running.discard)

    return dispatch


def _adapt_stream(handler: StreamHandler, nc: Any) -> Callable[[Any], Awaitable[None]]:
    async def run(req: Any) -> None:
        reply_to = req._msg.reply  # nats.micro's Request keeps the message's reply subject there
        if not reply_to:
            return  # a stream needs somewhere to go
        try:
            reply = await handler(req.subject, req.data, req.headers or {}, ReplyStream(nc, reply_to))
        except Exception as exc:
            log.exception("service handler failed for %s", req.subject)
            await req.respond_error("500", f"internal error: {type(exc).__name__}")
            return
        if reply is not None:
            await _send(req, reply)

    return run
