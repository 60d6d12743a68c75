"""The health outbox: HealthChange events and registry writes waiting to reach NATS.

Pure bookkeeping (no I/O): the agent adds what a sweep concludes, asks for the work due,
and reports what JetStream and the KV acknowledged.  Nothing leaves the outbox until it has
been acknowledged, so a NATS outage delays events and writes but loses none of them.

* Events are kept in order per key (``kind``, ``name``); a key's next event is sent only
  after the previous one was acknowledged.
* A registry write is a flag per cluster: what is written is the cluster's state at the time
  of the write, so many changes during an outage cost one write.
* A forgotten cluster's ``Forgotten`` event is queued behind its other events; the cluster
  may be deleted only once that event has been acknowledged.
* Bounded: up to ``cap`` events are kept one by one; beyond that, a key's new event is merged
  into its last queued one (never into its first, which may be in flight), so each key holds
  at most two events and the outbox at most ``cap`` + 2 per key.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from tmcd.contracts.messages import HealthChange

Key = tuple[str, str]
"""(kind, name) of a health event: ("cluster", "sim-001"), ("location", "eu-west-1"), ("fleet", "fleet")."""

MAX_EVENTS = 10_000
"""Events kept one by one before later transitions of a key are merged."""

FORGOTTEN = "Forgotten"


def msg_id(event: HealthChange) -> str:
    """A stable JetStream ``Nats-Msg-Id`` for one transition, so a retried publish is not stored twice."""
    return f"health.{event.kind}.{event.name}.{event.from_status}.{event.to_status}.{event.timestamp!r}"


@dataclass(frozen=True, slots=True)
class Pending:
    """A HealthChange waiting for JetStream's acknowledgement, with its de-duplication id."""

    event: HealthChange
    msg_id: str


def _pending(event: HealthChange) -> Pending:
    return Pending(event, msg_id(event))


def merge(first: HealthChange, last: HealthChange) -> HealthChange | None:
    """One event for two consecutive ones of a key: ``first``'s from, the rest from ``last``.

    None when the status came back to where it started (nothing left to tell), unless ``last``
    is a ``Forgotten`` event, which always stays.
    """
    if first.from_status == last.to_status and last.reason != FORGOTTEN:
        return None
    return msgspec.structs.replace(last, from_status=first.from_status)


@dataclass(slots=True)
class Outbox:
    """Undelivered health events per key, pending registry writes and forgets per cluster."""

    cap: int = MAX_EVENTS
    coalesced: int = 0
    """Events merged into another (or dropped as a round trip) because the cap was reached."""
    _queues: dict[Key, deque[Pending]] = field(default_factory=dict)
    _events: int = 0
    _writes: dict[str, None] = field(default_factory=dict)
    _forgets: dict[str, float] = field(default_factory=dict)

    # -- adding ------------------------------------------------------------------------

    def add(self, event: HealthChange) -> None:
        """Queue an event behind the key's earlier ones (merged into the last when over the cap)."""
        key = (event.kind, event.name)
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = deque()
        if self._events >= self.cap and len(q) >= 2:
            self.coalesced += 1
            merged = merge(q[-1].event, event)
            if merged is None:
                q.pop()
                self._events -= 1
            else:
                q[-1] = _pending(merged)
            return
        q.append(_pending(event))
        self._events += 1

    def persist(self, cluster: str) -> None:
        """Write the cluster's current state to the registry at the next delivery."""
        if cluster not in self._forgets:
            self._writes[cluster] = None

    def forget(self, event: HealthChange) -> None:
        """Queue a cluster's ``Forgotten`` event; the cluster is to be deleted once it is acknowledged."""
        self.add(event)
        self._forgets[event.name] = event.timestamp
        self._writes.pop(event.name, None)

    # -- reading -----------------------------------------------------------------------

    def __len__(self) -> int:
        """Events, writes and forgets not yet done."""
        return self._events + len(self._writes) + len(self._forgets)

    @property
    def events(self) -> int:
        """Events waiting for an acknowledgement."""
        return self._events

    def keys(self) -> list[Key]:
        """Every key with work, those with events first, each in the order it was first queued."""
        out = list(self._queues)
        seen = set(out)
        out.extend(k for k in self._cluster_keys() if k not in seen)
        return out

    def _cluster_keys(self) -> Iterator[Key]:
        for name in (*self._forgets, *self._writes):
            yield ("cluster", name)

    def head(self, key: Key) -> Pending | None:
        """The key's oldest unacknowledged event, or None."""
        q = self._queues.get(key)
        return q[0] if q else None

    def queued(self, key: Key) -> list[HealthChange]:
        """The key's events, oldest first."""
        return [p.event for p in self._queues.get(key, ())]

    def forgetting(self, cluster: str) -> bool:
        """True while the cluster waits to be deleted."""
        return cluster in self._forgets

    def write_due(self, cluster: str) -> bool:
        """True when the cluster's state is to be written."""
        return cluster in self._writes

    def ready_to_delete(self, cluster: str) -> bool:
        """True when the cluster is being forgotten and every event of it has been acknowledged."""
        return cluster in self._forgets and not self._queues.get(("cluster", cluster))

    # -- acknowledgements ----------------------------------------------------------------

    def published(self, key: Key, pending: Pending) -> None:
        """JetStream acknowledged the key's head event ``pending``."""
        q = self._queues.get(key)
        if not q or q[0] is not pending:
            return
        q.popleft()
        self._events -= 1
        if not q:
            del self._queues[key]

    def written(self, cluster: str) -> None:
        """The registry holds the cluster's state."""
        self._writes.pop(cluster, None)

    def deleted(self, cluster: str) -> None:
        """The forgotten cluster is out of the registry: nothing of it is left to do."""
        self._forgets.pop(cluster, None)
        self._writes.pop(cluster, None)
        q = self._queues.pop(("cluster", cluster), None)
        if q:
            self._events -= len(q)
