"""A task's own cancellation always propagates: the SSE watch handler, the runtime's
cancel-and-wait helper and the supervisor never swallow the caller's CancelledError."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import make_mocked_request

from tests.helpers import wait_for
from tmcd.api.http import ApiContext, watch
from tmcd.api.store import ResourceStore
from tmcd.bus import Bus
from tmcd.config import ApiConfig, Config, NatsConfig
from tmcd.resources.examples import example
from tmcd.resources.kinds import CANARY_ROLLOUT
from tmcd.runtime.aio import cancel_and_wait
from tmcd.runtime.selfmetrics import SelfMetrics


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = Bus(NatsConfig(), SelfMetrics(), url=nats_url)
    await b.connect(retry=False)
    await b.provision(Config())
    yield b
    await b.close()


async def test_cancelling_a_watch_request_propagates(bus: Bus) -> None:
    namespace = f"cancel-{secrets.token_hex(4)}"
    obj = example("CanaryRollout")
    obj.metadata.name, obj.metadata.namespace = "checkout", namespace  # type: ignore[attr-defined]
    await ResourceStore(bus).create(CANARY_ROLLOUT, obj, namespace)

    async with api_context(bus) as ctx:
        request = make_mocked_request("GET", f"/api/v1/namespaces/{namespace}/canaryrollouts?watch=1")
        handler = asyncio.create_task(watch(ctx, request, CANARY_ROLLOUT, namespace))
        written = request._payload_writer.write  # type: ignore[attr-defined]

        async def streamed() -> bool:
            return any(b"event: ADDED" in call.args[0] for call in written.call_args_list)

        await wait_for(streamed, what="the ADDED event")  # the handler now waits for the next change
        handler.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handler
        assert handler.cancelled()
        assert ctx.reads().watching == 0  # the cancelled watch gave its slot back


@contextlib.asynccontextmanager
async def api_context(bus: Bus) -> AsyncIterator[ApiContext]:
    """The API's context with its watch cache running, as the daemon has it."""
    ctx = ApiContext(ApiConfig(), lambda: bus)
    ctx.start_cache()
    try:
        yield ctx
    finally:
        await ctx.close_cache()


async def test_watch_ends_on_shutdown_without_cancellation(bus: Bus) -> None:
    namespace = f"cancel-{secrets.token_hex(4)}"
    async with api_context(bus) as ctx:
        request = make_mocked_request("GET", f"/api/v1/namespaces/{namespace}/canaryrollouts?watch=1")
        handler = asyncio.create_task(watch(ctx, request, CANARY_ROLLOUT, namespace))
        written = request._payload_writer.write_headers  # type: ignore[attr-defined]

        async def prepared() -> bool:
            return written.call_count > 0

        await wait_for(prepared, what="the stream to start")
        ctx.stopping.set()  # what the daemon does first when it stops
        response = await asyncio.wait_for(handler, 5)
        assert response.prepared


async def test_cancel_and_wait_absorbs_only_the_tasks_own_cancellation() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    await asyncio.sleep(0)
    await cancel_and_wait(task)  # returns: the CancelledError was the task's
    assert task.cancelled()
    await cancel_and_wait(None)


async def test_cancel_and_wait_does_not_swallow_the_callers_cancellation() -> None:
    cleaning = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await asyncio.Event().wait()  # a long clean-up: the caller is cancelled meanwhile
            raise

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    outer = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.wait_for(cleaning.wait(), 5)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert outer.cancelled()
    await asyncio.wait({inner}, timeout=5)  # the second cancel reached it too
    assert inner.cancelled()
