"""Accounting for malformed messages: count, log (rate-limited), dead-letter."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from tmcd.bus.metrics import BusMetrics
from tmcd.contracts.codec import InvalidMessage

log = logging.getLogger("tmcd.bus")


class RateLimiter:
    """Allows one event per key per ``period`` seconds, remembering at most ``max_keys`` keys."""

    def __init__(self, clock: Callable[[], float], period: float = 60.0, max_keys: int = 10000) -> None:
        self._clock = clock
        self._period = period
        self._max_keys = max_keys
        self._last: OrderedDict[str, float] = OrderedDict()

    def allow(self, key: str) -> bool:
        """True when ``key`` has not been allowed within the period."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._period:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self._max_keys:
            self._last.popitem(last=False)
        return True


class InvalidMessages:
    """Counts and logs malformed messages; the bus republishes them to tmc.dead.<subject>."""

    def __init__(self, metrics: BusMetrics, clock: Callable[[], float]) -> None:
        self._metrics = metrics
        self._limiter = RateLimiter(clock)

    def record(self, subject: str, err: InvalidMessage) -> None:
        """Count the message and log it at most once per subject per minute."""
        self._metrics.events_invalid.labels(err.kind, err.reason).inc()
        if self._limiter.allow(subject):
            log.warning(
                "invalid message on %s: %s (%s); dead-lettered to tmc.dead.%s",
                subject,
                err.reason,
                err.detail[:200],
                subject,
            )
