"""NATS micro services (``$SRV.PING|INFO|STATS``, request counts and errors) over nats-py's
``nats.micro``: tmcd code supplies plain async handlers ``(subject, payload) -> Reply``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nats import micro

log = logging.getLogger("tmcd.bus")


@dataclass(frozen=True)
class Reply:
    """A handler's answer: the body, and an error code (e.g. "404") and description on failure."""

    data: bytes
    error_code: str = ""
    error: str = ""


ServiceHandler = Callable[[str, bytes], Awaitable[Reply]]


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a service."""

    name: str
    subject: str
    handler: ServiceHandler
    metadata: dict[str, str] | None = None
    """Shown in ``$SRV.INFO`` (e.g. the KV bucket a list endpoint reads, for watchers)."""


async def start_service(
    nc: Any, name: str, version: str, description: str, endpoints: Sequence[Endpoint], queue_group: str
) -> Any:
    """Start a micro service; returns it (``await svc.stop()`` to stop)."""
    svc = await micro.add_service(nc, name=name, version=version, description=description, queue_group=queue_group)
    for ep in endpoints:
        await svc.add_endpoint(name=ep.name, subject=ep.subject, handler=_adapt(ep.handler), metadata=ep.metadata)
    return svc


def _adapt(handler: ServiceHandler) -> Callable[[Any], Awaitable[None]]:
    async def run(req: Any) -> None:
        try:
            reply = await handler(req.subject, req.data)
        except Exception as exc:  # never let a bug kill the subscription
            log.exception("service handler failed for %s", req.subject)
            await req.respond_error("500", f"internal error: {type(exc).__name__}")
            return
        if reply.error_code:
            await req.respond_error(reply.error_code, reply.error, reply.data)
        else:
            await req.respond(reply.data)

    return run
