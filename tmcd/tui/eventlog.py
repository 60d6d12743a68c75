"""The dashboard's event list: health, canary, rollback, placement and connection events,
newest first, bounded, filterable by kind and text.  Pure: no I/O, no clock."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from tmcd.contracts.messages import (
    CanaryEvent,
    ConnectionEvent,
    HealthChange,
    Message,
    PlacementDecision,
    RollbackEvent,
)

MAX_EVENTS = 5_000
"""Events kept; the oldest go first."""
EVENT_KINDS = ("health", "canary", "rollback", "placement", "connection")


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event as the events view shows it."""

    timestamp: float
    kind: str
    """health, canary, rollback, placement or connection."""
    object: str
    """What it is about: a cluster, ``namespace/rollout`` or a placement."""
    reason: str
    message: str
    warning: bool = False
    """Bad news (a cluster turning Unhealthy, a rollback, a disconnect): shown as a warning."""


def event_row(msg: Message) -> EventRow | None:
    """The row for a message the events view lists; None for any other message."""
    if isinstance(msg, HealthChange):
        text = msg.message or f"{msg.from_status} -> {msg.to_status}"
        return EventRow(
            msg.timestamp,
            "health",
            f"{msg.kind}/{msg.name}",
            msg.reason or msg.to_status,
            f"{msg.from_status} -> {msg.to_status}: {text}" if msg.message else text,
            msg.to_status in ("Unhealthy", "Degraded"),
        )
    if isinstance(msg, CanaryEvent):
        step = f" step {msg.step_index + 1}" if msg.step_index >= 0 else ""
        return EventRow(
            msg.timestamp,
            "canary",
            f"{msg.namespace}/{msg.name}",
            msg.type,
            msg.message or f"{msg.phase}{step}",
            msg.phase in ("RollingBack", "RolledBack", "Degraded"),
        )
    if isinstance(msg, RollbackEvent):
        revs = f" (revision {msg.from_revision} -> {msg.to_revision})" if msg.to_revision else ""
        return EventRow(
            msg.timestamp,
            "rollback",
            f"{msg.namespace}/{msg.name}",
            msg.stage,
            f"{msg.trigger or 'rollback'}: {msg.reason}{revs}".rstrip(": "),
            True,
        )
    if isinstance(msg, PlacementDecision):
        chosen = ", ".join(msg.selected[:5]) + (f" +{len(msg.selected) - 5}" if len(msg.selected) > 5 else "")
        return EventRow(
            msg.timestamp,
            "placement",
            msg.placement,
            msg.result,
            f"{len(msg.selected)} selected by {msg.decided_by}" + (f": {chosen}" if chosen else ""),
            msg.result in ("unbound", "error"),
        )
    if isinstance(msg, ConnectionEvent):
        return EventRow(
            msg.timestamp,
            "connection",
            msg.cluster,
            msg.state,
            msg.reason or msg.state,
            msg.state != "connected",
        )
    return None


class EventLog:
    """The newest ``limit`` events, each once (a replayed event that also arrived live is kept once)."""

    def __init__(self, limit: int = MAX_EVENTS) -> None:
        self.limit = limit
        self._rows: deque[EventRow] = deque()
        self._seen: set[EventRow] = set()
        self.version = 0

    def add(self, row: EventRow) -> bool:
        """Keep ``row``; False when it was already there or is older than everything kept in a full log."""
        if row in self._seen:
            return False
        if len(self._rows) >= self.limit:
            if row.timestamp < self._rows[0].timestamp:
                return False
            self._seen.discard(self._rows.popleft())
        self._rows.append(row)
        self._seen.add(row)
        # mostly in order; a late one moves back to its place (a short walk from the end)
        i = len(self._rows) - 1
        while i > 0 and self._rows[i - 1].timestamp > row.timestamp:
            self._rows[i] = self._rows[i - 1]
            i -= 1
        self._rows[i] = row
        self.version += 1
        return True

    def add_message(self, msg: Message) -> bool:
        """:meth:`add` the row of ``msg``, if the events view lists its kind."""
        row = event_row(msg)
        return row is not None and self.add(row)

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self, kinds: Iterable[str] | None = None, text: str = "") -> list[EventRow]:
        """Newest first; only ``kinds`` (all when None) and rows whose text matches ``text``
        (a case-insensitive regex, or a plain substring when it is not one)."""
        wanted = set(kinds) if kinds is not None else None
        pattern = _pattern(text)
        out = []
        for r in reversed(self._rows):
            if wanted is not None and r.kind not in wanted:
                continue
            if pattern is not None and not pattern.search(f"{r.kind} {r.object} {r.reason} {r.message}"):
                continue
            out.append(r)
        return out


def _pattern(text: str) -> re.Pattern[str] | None:
    if not text:
        return None
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error:
        return re.compile(re.escape(text), re.IGNORECASE)


def parse_event_filter(text: str) -> tuple[set[str] | None, str]:
    """``kind:health,canary text`` -> ({health, canary}, "text"); no ``kind:`` means every kind.

    An unknown kind is kept (it then matches nothing) so a typo shows an empty list, not everything.
    """
    kinds: set[str] | None = None
    rest: list[str] = []
    for word in text.split():
        if word.startswith(("kind:", "k:")):
            kinds = (kinds or set()) | {k for k in word.partition(":")[2].split(",") if k}
        else:
            rest.append(word)
    return kinds, " ".join(rest)
