"""Resync: a read of stored state retried until it works, and again after each reconnection."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tmcd.bus import Bus, BusError, Resync
from tmcd.bus.resync import RETRY_MAX, RETRY_MIN
from tmcd.config import NatsConfig
from tmcd.runtime.selfmetrics import SelfMetrics


class Reader:
    """A read that fails ``fails`` times, then succeeds; it can be held mid-read."""

    def __init__(self, fails: int = 0, error: Exception | None = None) -> None:
        self.fails, self.error = fails, error or BusError("nats: timeout")
        self.calls = 0
        self.done = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.calls <= self.fails:
            raise self.error
        self.done += 1


class Pauses:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


async def test_a_failed_read_is_retried_with_a_growing_capped_pause(caplog: pytest.LogCaptureFixture) -> None:
    read, pauses = Reader(fails=7), Pauses()
    resync = Resync(read, "the weights", pause=pauses)
    with caplog.at_level(logging.INFO, "tmcd.bus"):
        resync.request()
        await resync.idle()
    assert read.calls == 8 and read.done == 1 and resync.failures == 7
    assert pauses.waits == [RETRY_MIN, 1.0, 2.0, 4.0, RETRY_MAX, RETRY_MAX, RETRY_MAX]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "cannot read the weights (nats: timeout); trying again",
        "read the weights after 7 failed attempts",
    ]
    await resync.close()


async def test_any_error_is_retried_not_lost() -> None:
    read = Reader(fails=1, error=RuntimeError("outbound buffer full"))
    resync = Resync(read, "x", pause=Pauses())
    resync.request()
    await resync.idle()
    assert read.done == 1


async def test_requests_during_a_read_make_one_more_read() -> None:
    read = Reader()
    read.gate = asyncio.Event()
    resync = Resync(read, "x", pause=Pauses())
    resync.request()
    await read.entered.wait()
    for _ in range(1000):  # a flapping connection: one read more, not a thousand
        resync.request()
    read.gate.set()
    await resync.idle()
    assert read.calls == 2 and read.done == 2
    resync.request()
    await resync.idle()
    assert read.calls == 3


async def test_a_successful_read_resets_the_pause() -> None:
    read, pauses = Reader(fails=2), Pauses()
    resync = Resync(read, "x", pause=pauses)
    resync.request()
    await resync.idle()
    read.calls, read.fails = 0, 1
    resync.request()
    await resync.idle()
    assert pauses.waits == [RETRY_MIN, 1.0, RETRY_MIN]


async def test_it_reads_after_each_reconnection_and_close_detaches_it() -> None:
    bus = Bus(NatsConfig(name="test"), SelfMetrics(), url="nats://127.0.0.1:1")
    read = Reader()
    resync = Resync(read, "x", pause=Pauses())
    resync.attach(bus)
    for cb in list(bus.state_listeners):
        cb(False)  # a disconnection: nothing to read yet
    await resync.idle()
    assert read.calls == 0
    for cb in list(bus.state_listeners):
        cb(True)
    await resync.idle()
    assert read.calls == 1
    await resync.close()
    assert bus.state_listeners == []


async def test_close_stops_a_read_that_keeps_failing() -> None:
    read = Reader(fails=10**9)
    never = asyncio.Event()

    async def pause(seconds: float) -> None:
        await never.wait()

    resync = Resync(read, "x", pause=pause)
    resync.request()
    await read.entered.wait()
    await asyncio.sleep(0)
    await asyncio.wait_for(resync.close(), 5)
    assert read.calls == 1
