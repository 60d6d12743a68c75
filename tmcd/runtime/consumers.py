"""Helpers for agents that consume JetStream streams."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tmcd.bus.core import Delivery, Handler
from tmcd.runtime.agent import AgentContext


async def consume_streams(
    ctx: AgentContext,
    agent: str,
    handlers: dict[str, Handler | Callable[[Delivery[Any]], None]],
    *,
    primary: bool = True,
) -> None:
    """Run one durable pull consumer per stream until stop.

    The durable is ``<consumer.durable_prefix>-<agent>-<stream>`` (default ``tmcd-metrics-syncer``).

    ``ctx.started`` is set once every consumer is bound.  ``primary`` consumers count
    processed messages and dead-letter malformed ones; an agent that reads a stream
    another agent already accounts for passes ``primary=False``.
    """
    c = ctx.config.consumer
    bound = 0

    def ready() -> None:
        nonlocal bound
        bound += 1
        if bound == len(handlers):
            ctx.started.set()

    async with asyncio.TaskGroup() as tg:
        for stream, handler in handlers.items():
            durable = durable_name(c.durable_prefix, agent, stream)
            tg.create_task(
                ctx.bus.consume(
                    stream,
                    durable,
                    handler,
                    ctx.stop,
                    batch=c.batch,
                    fetch_timeout=c.fetch_timeout,
                    ack_wait=c.ack_wait,
                    max_ack_pending=c.max_ack_pending,
                    drain_timeout=ctx.config.runtime.shutdown_timeout * 0.4,
                    on_ready=ready,
                    primary=primary,
                ),
                name=f"consume-{durable}",
            )


def durable_name(prefix: str, agent: str, stream: str) -> str:
    """``<prefix>-<agent>-<stream>``, the stream without ``TMC_`` and in lower case: ``tmcd-metrics-syncer``."""
    return f"{prefix}-{agent}-{stream.removeprefix('TMC_').lower()}"
