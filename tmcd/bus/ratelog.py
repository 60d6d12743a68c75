"""Rate-limited reporting: one log line per key per period, with a count of what was held back."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

REPORT_PERIOD = 60.0
"""Seconds between two log lines about the same thing (subject, error kind)."""


class Throttle:
    """Lets one event per key through per ``period`` and counts the ones it holds back.

    Remembers at most ``max_keys`` keys (least recently seen forgotten first), so keys taken
    from the wire (subjects) cannot grow it without limit.  A clock that jumps backwards
    lets the next event through rather than silencing a key until it catches up.
    """

    def __init__(self, clock: Callable[[], float], period: float = REPORT_PERIOD, max_keys: int = 10000) -> None:
        self._clock = clock
        self._period = period
        self._max_keys = max_keys
        self._state: OrderedDict[str, list[float]] = OrderedDict()  # key -> [last report time, held back]

    def hit(self, key: str) -> int | None:
        """Record one event: None when it should stay quiet, else how many were held back since the last report."""
        now = self._clock()
        state = self._state.get(key)
        if state is not None:
            self._state.move_to_end(key)
            if 0.0 <= now - state[0] < self._period:
                state[1] += 1
                return None
            held = int(state[1])
            state[0], state[1] = now, 0
            return held
        self._state[key] = [now, 0]
        while len(self._state) > self._max_keys:
            self._state.popitem(last=False)
        return 0


def more(held: int, what: str) -> str:
    """The suffix of a rate-limited log line: ``; 37 more failures on X since the last report``."""
    return f"; {held} more {what} since the last report" if held else ""
