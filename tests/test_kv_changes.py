"""KV change streams against a real nats-server: every change in order even for a slow
reader, with a bounded buffer; abandoned streams leave no consumer, subscription or task."""

from __future__ import annotations

import asyncio
import gc
import secrets
from collections.abc import AsyncIterator

import pytest

from tests.helpers import wait_for
from tmcd.bus import Bus, KvStore
from tmcd.bus.kv import KvChange
from tmcd.config import NatsConfig
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import SyncerHeartbeat
from tmcd.runtime.selfmetrics import SelfMetrics


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = Bus(NatsConfig(), SelfMetrics(), url=nats_url)
    await b.connect(retry=False)
    yield b
    await b.close()


async def new_bucket(bus: Bus) -> tuple[str, KvStore[SyncerHeartbeat]]:
    name = f"feed-test-{secrets.token_hex(4)}"  # its own, on the shared server, however often it runs
    await bus.js.create_key_value(bucket=name, history=5)
    return name, await bus.kv(name, SyncerHeartbeat)


async def fill(bus: Bus, bucket: str, kv: KvStore[SyncerHeartbeat], n: int) -> None:
    """``n`` keys ``c-<i>`` (KV puts are publishes on $KV.<bucket>.<key>)."""
    for i in range(n):
        hb = SyncerHeartbeat(cluster=f"c-{i}", timestamp=float(i))
        await bus.publish_raw(f"$KV.{bucket}.c-{i}", encode(hb))
    await bus.flush()

    async def stored() -> bool:
        return await kv.revision() == n

    await wait_for(stored, what=f"{n} revisions stored")


async def consumers(bus: Bus, bucket: str) -> int:
    info = await bus.js.stream_info(f"KV_{bucket}")
    count: int = info.state.consumer_count
    return count


async def test_slow_reader_gets_every_change_with_a_bounded_buffer(bus: Bus) -> None:
    bucket, kv = await new_bucket(bus)
    await fill(bus, bucket, kv, 2000)
    await kv.delete("c-7")
    stop = asyncio.Event()
    async with kv.change_feed(0, stop, max_pending=50) as feed:
        first = await feed.next()
        assert first == KvChange("c-0", SyncerHeartbeat(cluster="c-0", timestamp=0.0), 1)

        # the reader dawdles: the feed fills its buffer, then stops its server-side consumer
        async def paused() -> bool:
            return feed.paused and await consumers(bus, bucket) == 0

        await wait_for(paused, what="the feed to pause")
        assert 49 <= feed.buffered <= 50  # the reader may have taken one since

        revisions = [first.revision]
        most = 0
        while len(revisions) < 2001:
            change = await feed.next()
            assert change is not None
            most = max(most, feed.buffered)
            revisions.append(change.revision)
            if change.revision == 2001:
                assert change.key == "c-7" and change.value is None  # the deletion
            else:
                assert change.value == SyncerHeartbeat(cluster=change.key, timestamp=float(change.revision - 1))
        assert revisions == list(range(1, 2002))  # nothing lost or repeated across the pauses
        assert most <= 50
        assert await consumers(bus, bucket) == 1
    assert await consumers(bus, bucket) == 0  # closing deleted it


async def test_stop_ends_the_stream(bus: Bus) -> None:
    bucket, kv = await new_bucket(bus)
    await fill(bus, bucket, kv, 3)
    stop = asyncio.Event()
    got: list[int] = []

    async def read() -> None:
        async for change in kv.changes(0, stop):
            got.append(change.revision)

    reader = asyncio.create_task(read())

    async def three() -> bool:
        return len(got) == 3

    await wait_for(three, what="three changes")
    stop.set()
    await asyncio.wait_for(reader, 5)
    assert got == [1, 2, 3]
    assert await consumers(bus, bucket) == 0


async def test_abandoned_streams_leave_nothing_behind(bus: Bus) -> None:
    bucket, kv = await new_bucket(bus)
    await fill(bus, bucket, kv, 20)
    stop = asyncio.Event()
    subs_before = len(bus.nc._subs)  # nats-py's subscriptions (the bus package owns nats-py)
    tasks_before = asyncio.all_tasks()

    async def break_out() -> None:  # stops iterating; the iterator is left to the garbage collector
        async for _ in kv.changes(0, stop):
            break

    async def close_explicitly() -> None:
        it = kv.changes(5, stop)
        await anext(it)
        await it.aclose()

    async def cancelled_while_waiting() -> None:
        started = asyncio.Event()

        async def read() -> None:
            async for _ in kv.changes(19, stop):  # one change, then nothing new
                started.set()

        task = asyncio.create_task(read())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def cancelled_while_starting() -> None:
        async def read() -> None:
            async for _ in kv.changes(0, stop):
                pass

        task = asyncio.create_task(read())
        await asyncio.sleep(0)  # its consumer is being created
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    ways = [break_out, close_explicitly, cancelled_while_waiting, cancelled_while_starting]
    for start in range(0, 2000, 100):
        await asyncio.gather(*(ways[i % 4]() for i in range(start, start + 100)))
    gc.collect()

    async def clean() -> bool:
        leftover = [t for t in asyncio.all_tasks() - tasks_before if not t.done()]
        return not leftover and len(bus.nc._subs) == subs_before and await consumers(bus, bucket) == 0

    await wait_for(clean, what="no consumer, subscription or task left", timeout=20)
