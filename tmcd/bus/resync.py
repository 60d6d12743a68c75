"""Reading stored state again until it works: at start and after every reconnection.

A core subscription misses what is published while the connection is down, and the stream
that holds the last message per subject covers the gap, but only if reading it succeeds.  A
read right after a reconnection often meets a stream whose leader is still being elected
(``nats: timeout``); giving up then would leave the reader behind until the next change,
which for a route's weights may never come.  :class:`Resync` runs one read at a time, retries
a failed read with a capped backoff, and reads once more when asked again during a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from tmcd.bus.core import Bus

log = logging.getLogger("tmcd.bus")

RETRY_MIN = 0.5
"""Seconds before the first retry of a failed read."""
RETRY_MAX = 5.0
"""The longest wait between two retries."""


class Resync:
    """Run ``read`` when asked (and after each reconnection of ``bus`` once :meth:`attach`\\ ed)
    until it returns without raising; ``what`` names it in the log lines."""

    def __init__(
        self,
        read: Callable[[], Awaitable[object]],
        what: str,
        *,
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._read, self.what, self._pause = read, what, pause
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._bus: Bus | None = None
        self.failures = 0
        """Reads that failed, over the lifetime of this object."""

    def request(self) -> None:
        """Read (again) as soon as the read under way, if any, has finished."""
        self._wanted.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"resync {self.what}")

    def attach(self, bus: Bus) -> None:
        """Read again after every reconnection of ``bus``."""
        self._bus = bus
        bus.state_listeners.append(self._on_state)

    def _on_state(self, up: bool) -> None:
        if up:
            self.request()

    async def idle(self) -> None:
        """Wait until no read is under way or wanted (for tests and orderly shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Stop reading; detach from the bus."""
        if self._bus is not None:
            with contextlib.suppress(ValueError):
                self._bus.state_listeners.remove(self._on_state)
            self._bus = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = RETRY_MIN
        failed = 0
        while self._wanted.is_set():
            self._wanted.clear()
            try:
                await self._read()
            except Exception as exc:  # BusError, or a publish of what was read failing mid-reconnect
                self.failures += 1
                if not failed:
                    log.warning("cannot read %s (%s); trying again", self.what, exc or type(exc).__name__)
                failed += 1
                self._wanted.set()
                await self._pause(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if failed:
                log.info("read %s after %d failed attempts", self.what, failed)
            failed, delay = 0, RETRY_MIN
