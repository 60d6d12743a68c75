"""Watch mode's view of its API server: reachable or not, which watches have listed once, backoff.

The kube agent's loops (one list+watch per kind and namespace, and the status writer) report each
answer and each failure here.  Whatever many loops see the API server go away, one line is logged
when it goes and one when it answers again; a loop whose requests fail for another reason (403,
a missing CRD) logs one line when that starts and one when it ends.  The daemon's ``kube`` check
(readyz) and ``kube-api`` check (healthz) read it, and ``tmc_kube_api_up`` follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Gauge

from tmcd.kube.client import KubeError

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "ApiHealth", "Backoff", "Sleep", "down", "interruptible_sleep", "retryable"]

log = logging.getLogger("tmcd.kube.watch")

BACKOFF_MIN, BACKOFF_MAX = 1.0, 30.0
"""Seconds between attempts while the API server is unreachable or refuses (doubling)."""
DOWN_STATUSES = frozenset({502, 503, 504})
"""Answers that mean the API server is not there (from it, or from a proxy in front of it)."""

Sleep = Callable[[float, asyncio.Event], Awaitable[None]]
"""Sleep for a number of seconds or until the event is set (injected: tests release it by hand)."""


async def interruptible_sleep(delay: float, wake: asyncio.Event) -> None:
    """Sleep ``delay`` seconds, or less when ``wake`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), delay)


def down(exc: KubeError) -> bool:
    """True when the error says the API server cannot be reached (no answer, 502/503/504)."""
    return exc.status == 0 or exc.status in DOWN_STATUSES


def retryable(exc: KubeError) -> bool:
    """True when the same request may succeed later unchanged (unreachable, 429, 5xx)."""
    return exc.status == 0 or exc.status == 429 or exc.status >= 500


class Backoff:
    """Capped exponential backoff: ``low``, 2 * ``low``, ... up to ``high``; :meth:`reset` after a success."""

    def __init__(self, low: float = BACKOFF_MIN, high: float = BACKOFF_MAX) -> None:
        self.low, self.high = low, high
        self._next = low

    def next(self) -> float:
        """The delay before the next attempt (and double the one after)."""
        delay = self._next
        self._next = min(self.high, delay * 2)
        return delay

    def reset(self) -> None:
        """Start again from ``low``."""
        self._next = self.low


class ApiHealth:
    """Whether the API server answers (``up``: None before the first attempt), and which watches have
    completed their first list; logs one line per change of either."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.where = ""
        """The API server in words (its context), for messages."""
        self.up: bool | None = None
        self.error = ""
        """Why the API server is down (the last failure while down)."""
        self.down_since: float | None = None
        self.expected: list[str] = []
        """Every watch (``<resource> in <namespace>``) the agent runs."""
        self.listed: set[str] = set()
        """Watches whose first list completed (kept across the agent's restarts)."""
        self.failing: dict[str, KubeError] = {}
        """Watch (or ``status``) -> its current failure other than the API server being down."""
        self.gauge: Gauge | None = None
        self.on_up: list[Callable[[], None]] = []
        """Called when the API server answers again after it could not be reached."""

    def expect(self, where: str, watches: list[str]) -> None:
        """The API server (in words) and the watches the agent is about to run."""
        self.where, self.expected = where, watches

    def answered(self, loop: str = "") -> None:
        """A request got an answer (the API server is up; ``loop``'s failure, if any, is over)."""
        if self.up is not True:
            if self.up is False and self.down_since is not None:
                gone = self._clock() - self.down_since
                log.info("watch mode: the API server (%s) answers again after %.0f s", self.where, gone)
                for fn in self.on_up:
                    fn()
            self.up, self.error, self.down_since = True, "", None
            if self.gauge is not None:
                self.gauge.set(1)
        if loop and self.failing.pop(loop, None) is not None:
            log.info("watch mode: %s works again", loop)

    def failed(self, loop: str, exc: KubeError) -> None:
        """A request of ``loop`` failed: the API server is down, or ``loop`` has a problem of its own."""
        if down(exc):
            self.error = str(exc)
            if self.up is not False:
                self.up, self.down_since = False, self._clock()
                log.warning(
                    "watch mode: the API server (%s) cannot be reached: %s; trying again with backoff (%g s to %g s)",
                    self.where,
                    exc,
                    BACKOFF_MIN,
                    BACKOFF_MAX,
                )
                if self.gauge is not None:
                    self.gauge.set(0)
            return
        self.answered()  # an error answer is still an answer
        before = self.failing.get(loop)
        self.failing[loop] = exc
        if before is None or before.status != exc.status:
            log.warning("watch mode: %s: %s; trying again with backoff", loop, exc)

    def done_listing(self, loop: str) -> None:
        """``loop`` completed a full list (the first one makes it ready)."""
        if loop not in self.listed:
            self.listed.add(loop)
            if self.expected and all(w in self.listed for w in self.expected):
                log.info("watch mode: every watch has listed once (%s)", ", ".join(self.expected))
        self.answered(loop)

    def ready(self) -> str | None:
        """The ``kube`` check (readyz): fails until every watch has listed once, then passes for good
        (a later outage shows in :meth:`serving`, not here: mirrored rollouts keep running)."""
        if not self.expected:
            return "watch mode starting"
        waiting = [w for w in self.expected if w not in self.listed]
        if not waiting:
            return None
        why = self.error if self.up is False else "; ".join(str(e) for w, e in self.failing.items() if w in waiting)
        return f"waiting for the first list of {', '.join(waiting)} ({self.where})" + (f": {why}" if why else "")

    def serving(self) -> str | None:
        """The ``kube-api`` check (healthz): fails while the API server cannot be reached or a watch or
        the status writes keep failing."""
        if self.up is False:
            since = self._clock() - (self.down_since or self._clock())
            return f"API server ({self.where}) unreachable for {since:.0f} s: {self.error}; retrying with backoff"
        if self.failing:
            return "; ".join(f"{w}: {e}" for w, e in sorted(self.failing.items(), key=lambda kv: kv[0]))
        return None
