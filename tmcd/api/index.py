"""The in-memory index behind the watch cache (pure: no I/O, no clock).

One :class:`KindIndex` per kind holds every object by its KV key (kept sorted, for pages
and ``continue`` tokens), the revision it reflects, and a bounded :class:`EventRing` of the
latest changes, from which watches are served: a watch can resume from any resourceVersion
at or after :attr:`KindIndex.floor` (the revision of the newest event the ring dropped);
an older one is :class:`Expired`, and its client lists again, as with Kubernetes' 410 Gone.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from tmcd.resources.kinds import Kind, parse_kv_key
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.selectors import Selector

WINDOW = 4096
"""Events kept per kind for watches to resume from: about two minutes of a 1,000-cluster
fleet's SyncTarget writes (the health agent writes each cluster at most every 30 s)."""

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


class Expired(Exception):
    """A resourceVersion the window no longer covers: list again, then watch from the list's."""


@dataclass(frozen=True, slots=True)
class Event:
    """One change as the index saw it."""

    type: str
    """ADDED, MODIFIED or DELETED."""
    namespace: str
    name: str
    object: Any
    """The new state; for DELETED the last state, at the deletion's resourceVersion."""
    previous: Any
    """The state before (None for ADDED): label selections need both sides."""
    revision: int
    raw: msgspec.Raw
    """``object`` as JSON, encoded once for every watcher."""


class Entry(NamedTuple):
    """One object in the index."""

    key: str
    namespace: str
    name: str
    object: Any
    raw: msgspec.Raw
    """``object`` as JSON, encoded once when it was stored (lists and gets send these bytes)."""


class Stub(msgspec.Struct, kw_only=True, rename="camel"):
    """A deleted object the index never saw (its earlier revisions were purged): its metadata only."""

    api_version: str
    kind: str
    metadata: ObjectMeta


Seen = tuple[str, Any, msgspec.Raw]
"""An event as a watcher sees it: (type, object, object as JSON)."""

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Filter:
    """What one list or watch selects: a namespace, a name, a label selector (each optional)."""

    namespace: str = ""
    name: str = ""
    selector: Selector | None = None

    def scope(self, namespace: str, name: str) -> bool:
        """Whether an object of this namespace and name is in scope (labels aside)."""
        return (not self.namespace or namespace == self.namespace) and (not self.name or name == self.name)

    def labels(self, obj: Any) -> bool:
        """Whether the object's labels match."""
        return self.selector is None or self.selector.matches(obj.metadata.labels)

    def event(self, ev: Event) -> Seen | None:
        """The event as this watcher sees it: an object entering the selection is ADDED to it,
        one leaving it DELETED (with its new state), as kube-apiserver's cacher does."""
        if not self.scope(ev.namespace, ev.name):
            return None
        if self.selector is None:
            return ev.type, ev.object, ev.raw
        if ev.type == DELETED:
            return (DELETED, ev.object, ev.raw) if self.labels(ev.object) else None
        now = self.labels(ev.object)
        before = ev.previous is not None and self.labels(ev.previous)
        if now:
            return (MODIFIED if before else ADDED), ev.object, ev.raw
        return (DELETED, ev.object, ev.raw) if before else None


def _order(key: str) -> str:
    """A KV key as it sorts: ``namespace.name`` by namespace, then name ("a.x" before "a-b.x")."""
    return key.replace(".", "\x00")


class EventRing:
    """The last ``capacity`` events, numbered 0, 1, 2, ... in the order they happened."""

    def __init__(self, capacity: int) -> None:
        self._cap = max(1, capacity)
        self._buf: list[Event | None] = [None] * self._cap
        self.end = 0
        """The number the next event gets (events ``start`` .. ``end - 1`` are held)."""
        self.size = 0

    @property
    def start(self) -> int:
        """The number of the oldest event held."""
        return self.end - self.size

    def append(self, event: Event) -> Event | None:
        """Add an event; returns the one that dropped out, if any."""
        slot = self.end % self._cap
        dropped = self._buf[slot] if self.size == self._cap else None
        self._buf[slot] = event
        self.end += 1
        self.size = min(self.size + 1, self._cap)
        return dropped

    def get(self, number: int) -> Event:
        """Event ``number`` (``start <= number < end``)."""
        event = self._buf[number % self._cap]
        assert event is not None and self.start <= number < self.end
        return event

    def after(self, revision: int) -> int:
        """The number of the first event held with a revision above ``revision`` (``end`` if none)."""
        lo, hi = self.start, self.end
        while lo < hi:
            mid = (lo + hi) // 2
            if self.get(mid).revision <= revision:
                lo = mid + 1
            else:
                hi = mid
        return lo


class KindIndex:
    """One kind's objects at :attr:`revision`, and its recent events."""

    def __init__(self, kind: Kind, window: int = WINDOW) -> None:
        self.kind = kind
        self.revision = 0
        """Every change of the bucket up to this revision is applied."""
        self.floor = 0
        """Watches can resume from this revision or a later one."""
        self.ring = EventRing(window)
        self._objects: dict[str, Entry] = {}
        self._keys: list[str] = []
        """The keys as they sort (see :func:`_order`)."""
        self._sorted: list[Entry] = []
        """The entries in the order of ``_keys`` (a page is a slice)."""
        self._unreadable: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._objects)

    # -- changes ---------------------------------------------------------------------------

    def apply(self, key: str, value: Any, revision: int, *, invalid: bool = False) -> Event | None:
        """Apply one change of the bucket (``value`` None: deleted; ``invalid``: it does not decode).

        Changes at or below :attr:`revision` were applied already (a resumed feed) and are ignored.
        """
        if revision <= self.revision:
            return None
        self.revision = revision
        try:
            namespace, name = parse_kv_key(self.kind, key)
        except ValueError:
            return None  # a key no object of this kind can have (written by hand): not served
        old = self._objects.get(key)
        previous = None if old is None else old.object
        if value is not None and not invalid:
            self._unreadable.pop(key, None)
            value.metadata.resource_version = str(revision)
            entry = Entry(key, namespace, name, value, msgspec.Raw(_encoder.encode(value)))
            order = _order(key)
            at = bisect.bisect_left(self._keys, order)
            if old is None:
                self._keys.insert(at, order)
                self._sorted.insert(at, entry)
            else:
                self._sorted[at] = entry
            self._objects[key] = entry
            event = Event(MODIFIED if old else ADDED, namespace, name, value, previous, revision, entry.raw)
            return self._record(event)
        if invalid:
            self._unreadable[key] = revision
        else:
            self._unreadable.pop(key, None)
        if old is not None:
            del self._objects[key]
            at = bisect.bisect_left(self._keys, _order(key))
            del self._keys[at]
            del self._sorted[at]
            last = old.object
        elif invalid:
            return None
        else:  # deleted before this index saw it (its earlier revisions were purged)
            last = self._stub(namespace, name)
        gone = msgspec.structs.replace(last, metadata=msgspec.structs.replace(last.metadata))
        gone.metadata.resource_version = str(revision)
        return self._record(
            Event(DELETED, namespace, name, gone, previous, revision, msgspec.Raw(_encoder.encode(gone)))
        )

    def _stub(self, namespace: str, name: str) -> Any:
        """An object of which only the name is known: of the kind's type if it has no required
        fields beyond the metadata, else just the metadata."""
        meta = {"name": name, "namespace": namespace} if namespace else {"name": name}
        data = {"apiVersion": self.kind.api_version, "kind": self.kind.kind, "metadata": meta}
        try:
            return msgspec.convert(data, self.kind.type)
        except msgspec.ValidationError:
            return msgspec.convert(data, Stub)

    def _record(self, event: Event) -> Event:
        dropped = self.ring.append(event)
        if dropped is not None:
            self.floor = dropped.revision
        return event

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The entry at ``key``, or None."""
        return self._objects.get(key)

    def unreadable(self, key: str) -> bool:
        """True when the key's stored value does not decode."""
        return key in self._unreadable

    def select(self, f: Filter, after: str = "", limit: int = 0) -> list[Entry]:
        """The selected entries in key order after the key ``after``, at most ``limit`` (0: all)."""
        keys = self._keys
        lo, hi = bisect.bisect_right(keys, _order(after)) if after else 0, len(keys)
        if self.kind.namespaced and f.namespace:  # a namespace's keys are one run
            lo = max(lo, bisect.bisect_left(keys, f.namespace + "\x00"))
            hi = bisect.bisect_left(keys, f.namespace + "\x01")
        if f.selector is None and not f.name:
            return self._sorted[lo : min(hi, lo + limit) if limit else hi]
        out: list[Entry] = []
        for i in range(lo, hi):
            e = self._sorted[i]
            if f.scope(e.namespace, e.name) and f.labels(e.object):
                out.append(e)
                if len(out) == limit:
                    break
        return out

    def page(self, f: Filter, limit: int = 0, continue_token: str = "") -> tuple[list[Entry], str]:
        """One page of the selection (at most ``limit`` entries; 0: all) and the next page's token.

        The token is the page's last key: the next page starts after it (so any string is a
        token, and a page never repeats or skips an object that stayed in the selection).
        """
        entries = self.select(f, continue_token, limit + 1 if limit else 0)
        if limit and len(entries) > limit:
            del entries[limit:]
            return entries, entries[-1].key
        return entries, ""

    def changes(self, f: Filter, number: int) -> tuple[list[Seen], int]:
        """The events from event ``number`` on as ``f`` sees them, and the number to go on from.

        Raises :class:`Expired` when event ``number`` has dropped out of the ring already.
        """
        ring = self.ring
        if number < ring.start:
            raise Expired(f"the watch fell more than {ring.size} events behind")
        out = []
        for n in range(number, ring.end):
            seen = f.event(ring.get(n))
            if seen is not None:
                out.append(seen)
        return out, ring.end

    def resume(self, revision: int) -> int:
        """The event number a watch from ``revision`` starts at; :class:`Expired` when too old."""
        if revision < self.floor:
            raise Expired(f"too old resource version: {revision} ({self.floor})")
        return self.ring.after(revision)
