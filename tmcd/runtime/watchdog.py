"""An event-loop watchdog: a task that sleeps ``interval`` and measures how late it wakes up.

It feeds the ``eventloop`` check of ``/livez``.  That probe is answered on the same event
loop, so a loop that is blocked outright cannot answer at all: the orchestrator's probe
timeout (kubelet ``timeoutSeconds``) covers that case.  The watchdog catches the cases the
loop can still report: it was late (blocking calls, CPU starvation) or the watchdog itself
stopped ticking.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from tmcd.runtime.aio import cancel_and_wait


class LoopWatchdog:
    """Measures event-loop lag; ``lag`` is the worst lateness over the last ``window`` seconds."""

    def __init__(
        self,
        interval: float = 0.25,
        *,
        window: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._samples: deque[tuple[float, float]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.last_tick: float | None = None
        self.ticks = 0

    def start(self) -> None:
        """Start ticking (idempotent)."""
        if self.running:
            return
        self.last_tick = self._clock()
        self._task = asyncio.create_task(self._run(), name="loop-watchdog")

    async def stop(self) -> None:
        """Stop ticking."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    @property
    def running(self) -> bool:
        """True while the watchdog task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def lag(self) -> float:
        """Seconds the latest wake-ups were late (max over the window; 0 when on time)."""
        self._prune(self._clock())
        return max((late for _, late in self._samples), default=0.0)

    @property
    def since_tick(self) -> float:
        """Seconds since the last tick (or since start); 0 before start."""
        return 0.0 if self.last_tick is None else max(0.0, self._clock() - self.last_tick)

    async def _run(self) -> None:
        while True:
            due = self._clock() + self.interval
            await self._sleep(self.interval)
            now = self._clock()
            self._samples.append((now, max(0.0, now - due)))
            self._prune(now)
            self.last_tick = now
            self.ticks += 1

    def _prune(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()
