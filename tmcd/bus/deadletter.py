"""Accounting for malformed messages and failing handlers: count, log (rate-limited), and
a bounded backlog of copies waiting to be published to tmc.dead.<subject>."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tmcd.bus.metrics import BusMetrics
from tmcd.bus.ratelog import Throttle, more
from tmcd.contracts.codec import InvalidMessage
from tmcd.contracts.subjects import dead_letter_subject

log = logging.getLogger("tmcd.bus")

MAX_DEAD_LETTERS = 10000
"""Dead letters waiting to be published, at most (a flood of garbage must not grow memory)."""
MAX_DEAD_LETTER_BYTES = 64 * 1024 * 1024
"""Their payload bytes, at most."""


class InvalidMessages:
    """Counts and logs malformed messages and handler failures."""

    def __init__(self, metrics: BusMetrics, clock: Callable[[], float]) -> None:
        self._metrics = metrics
        self._invalid = Throttle(clock)
        self._failures = Throttle(clock)

    def record(self, subject: str, err: InvalidMessage) -> None:
        """Count the message and log it at most once per subject per minute."""
        self._metrics.events_invalid.labels(err.kind, err.reason).inc()
        held = self._invalid.hit(subject)
        if held is not None:
            log.warning(
                "invalid message on %s: %s (%s); dead-lettered to %s%s",
                subject,
                err.reason,
                err.detail[:200],
                dead_letter_subject(subject),
                more(held, f"invalid messages on {subject}"),
            )

    def handler_failed(self, subject: str, exc: BaseException, kind: str, dead_lettered: bool = True) -> None:
        """Count a handler's exception; log its traceback at most once per subject per minute."""
        if dead_lettered:
            self._metrics.events_invalid.labels(kind, "handler_error").inc()
        held = self._failures.hit(subject)
        if held is not None:
            where = f"; dead-lettered to {dead_letter_subject(subject)}" if dead_lettered else ""
            log.error("handler failed for %s%s%s", subject, where, more(held, f"failures on {subject}"), exc_info=exc)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A copy of a message on its way to tmc.dead.<subject>."""

    subject: str
    data: bytes
    headers: dict[str, str]


Publish = Callable[[str, bytes, dict[str, str]], Awaitable[None]]


class DeadLetterQueue:
    """Copies waiting to be published to tmc.dead.<subject>, bounded by count and bytes.

    Handlers run synchronously on the hot path, so :meth:`add` only queues; one task
    publishes the backlog while there is one, and :meth:`settle` waits for it (shutdown).
    """

    def __init__(
        self,
        publish: Publish,
        clock: Callable[[], float],
        max_messages: int = MAX_DEAD_LETTERS,
        max_bytes: int = MAX_DEAD_LETTER_BYTES,
        on_drop: Callable[[int], object] | None = None,
    ) -> None:
        self._publish = publish
        self._on_drop = on_drop
        self._task: asyncio.Task[None] | None = None
        self._queue: deque[DeadLetter] = deque()
        self._bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._dropped = Throttle(clock)
        self._failed = Throttle(clock)

    def __len__(self) -> int:
        return len(self._queue)

    def _drop(self, n: int) -> None:
        """``n`` copies will never reach tmc.dead (counted in tmc_dead_letters_dropped_total)."""
        if self._on_drop is not None and n:
            self._on_drop(n)

    def add(self, subject: str, data: bytes, err: InvalidMessage) -> bool:
        """Queue a copy of a message; False (and a rate-limited warning) when the backlog is full."""
        if len(self._queue) >= self._max_messages or self._bytes + len(data) > self._max_bytes:
            self._drop(1)
            held = self._dropped.hit("backlog")
            if held is not None:
                log.warning(
                    "dead-letter backlog full (%d messages, %d bytes): message on %s not copied to %s%s",
                    len(self._queue),
                    self._bytes,
                    subject,
                    dead_letter_subject(subject),
                    more(held, "dead letters dropped"),
                )
            return False
        headers = {"Tmc-Reason": err.reason, "Tmc-Subject": subject, "Tmc-Kind": err.kind}
        self._queue.append(DeadLetter(dead_letter_subject(subject), data, headers))
        self._bytes += len(data)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return True

    async def _run(self) -> None:
        while self._queue:
            letter = self._queue.popleft()
            self._bytes -= len(letter.data)
            try:
                await self._publish(letter.subject, letter.data, letter.headers)
            except Exception as exc:  # a lost copy is logged; the next one may still go out
                self._drop(1)
                held = self._failed.hit("publish")
                if held is not None:
                    lost = more(held, "dead letters lost")
                    log.warning("could not dead-letter message to %s: %s%s", letter.subject, exc, lost)

    async def settle(self, timeout: float, closed: bool) -> None:
        """Wait up to ``timeout`` seconds for the backlog to be published, then stop the publisher.

        When the connection is ``closed``, whatever is still queued is dropped with one warning.
        """
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if closed and self._queue:
            log.warning("%d dead letters not published: the NATS connection is closed", len(self._queue))
            self._drop(len(self._queue))
            self._queue.clear()
            self._bytes = 0
