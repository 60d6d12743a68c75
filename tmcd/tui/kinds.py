"""Sync figures per resource kind and per cluster for the cluster and sync views.  Pure: time passed in.

:class:`SyncStats` counts every sync event into per-second slots of a fixed ring (the last
:data:`WINDOW` seconds), fleet-wide per resource kind and per cluster (with the cluster's
per-kind counts inside its slots), and answers rates, error counts and ratios and latency
percentiles at a given ``now``.  Latencies go into a sparse log-scale histogram (buckets
:data:`GROWTH` apart), so a percentile is exact to within about 9 % and memory does not grow
with the event rate.  Everything is bounded: :data:`MAX_KINDS` kinds (the rest count as
:data:`OTHER`), :data:`MAX_CLUSTERS` clusters, :data:`RECENT_ERRORS` failed events per cluster.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from tmcd.contracts.messages import SyncEvent, SyncEventBatch

WINDOW = 60
"""Seconds the figures cover, in one-second slots."""
MAX_KINDS = 64
"""Resource kinds counted separately (fleet-wide and per cluster); any further kind counts as OTHER."""
OTHER = "(other)"
MAX_CLUSTERS = 20_000
"""Clusters counted; events of a cluster beyond it still count in the per-kind figures."""
RECENT_ERRORS = 50
"""Failed sync events kept per cluster for the cluster view."""
MIN_LATENCY = 1e-4
"""Latencies at or below 0.1 ms share the first histogram bucket."""
GROWTH = 2 ** (1 / 8)
"""Ratio between consecutive histogram bucket bounds (a percentile is at most ~9 % high)."""
_LOG_GROWTH = math.log(GROWTH)
_MAX_BUCKET = 400  # 0.1 ms * GROWTH**400 ~ 1e11 s: anything beyond is clipped


def latency_bucket(seconds: float) -> int:
    """The histogram bucket of a latency: its upper bound is ``MIN_LATENCY * GROWTH ** bucket``."""
    if not seconds > MIN_LATENCY:  # NaN, zero and negative land in the first bucket too
        return 0
    return min(_MAX_BUCKET, math.ceil(math.log(seconds / MIN_LATENCY) / _LOG_GROWTH - 1e-9))


def bucket_bound(bucket: int) -> float:
    """The upper bound of a histogram bucket, in seconds."""
    return MIN_LATENCY * GROWTH**bucket


@dataclass(slots=True)
class _Slot:
    """One second: events, errors, the latency histogram, and (per cluster) counts per kind."""

    second: int
    events: int = 0
    errors: int = 0
    latency: dict[int, int] = field(default_factory=dict)
    kinds: dict[str, list[int]] = field(default_factory=dict)  # kind -> [events, errors]


class _Ring:
    """:data:`WINDOW` one-second slots, reused as time moves on (a slot older than the window is reset)."""

    __slots__ = ("_slots", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots: list[_Slot | None] = [None] * size

    def slot(self, second: int) -> _Slot | None:
        """The slot for ``second``; None when that second has already left the window."""
        i = second % self.size
        s = self._slots[i]
        if s is None or s.second < second:
            s = self._slots[i] = _Slot(second)
        elif s.second > second:
            return None  # a second this slot held long ago: older than the window
        return s

    def window(self, now: float, seconds: int) -> list[_Slot]:
        """The slots of the ``seconds`` whole seconds ending at ``now``."""
        end = int(now)
        start = end - min(seconds, self.size) + 1
        return [s for s in self._slots if s is not None and start <= s.second <= end]


@dataclass(frozen=True, slots=True)
class SyncFigures:
    """What the views show for a resource kind or a cluster over the window."""

    name: str
    events: int
    errors: int
    window: float
    """Seconds the counts cover."""
    p50: float | None = None
    """Latency percentiles in seconds (None without events, or where latencies are not kept)."""
    p90: float | None = None
    p99: float | None = None

    @property
    def rate(self) -> float:
        """Sync events per second over the window."""
        return self.events / self.window if self.window > 0 else 0.0

    @property
    def error_ratio(self) -> float | None:
        """Failed / all events; None without events."""
        return self.errors / self.events if self.events else None


def percentiles(histogram: dict[int, int], qs: Iterable[float]) -> list[float | None]:
    """The ``qs`` quantiles (0-1) of a histogram, each as its bucket's upper bound; None when empty."""
    total = sum(histogram.values())
    wanted = list(qs)
    if total == 0:
        return [None] * len(wanted)
    out: list[float | None] = []
    items = sorted(histogram.items())
    for q in wanted:
        rank = max(1, math.ceil(q * total))  # the nearest-rank definition
        seen = 0
        for bucket, n in items:
            seen += n
            if seen >= rank:
                out.append(bucket_bound(bucket))
                break
    return out


def _figures(name: str, slots: Iterable[_Slot], window: float, latency: bool = True) -> SyncFigures:
    events = errors = 0
    hist: dict[int, int] = {}
    for s in slots:
        events += s.events
        errors += s.errors
        if latency:
            for b, n in s.latency.items():
                hist[b] = hist.get(b, 0) + n
    if not latency:
        return SyncFigures(name, events, errors, window)
    p50, p90, p99 = percentiles(hist, (0.5, 0.9, 0.99))
    return SyncFigures(name, events, errors, window, p50, p90, p99)


@dataclass(frozen=True, slots=True)
class SyncError:
    """A failed sync event, as the cluster view lists it."""

    timestamp: float
    resource: str
    object: str
    """``namespace/name`` (or just the name when cluster-scoped)."""
    reason: str


class SyncStats:
    """Sync events per resource kind and per cluster over the last ``window`` seconds."""

    def __init__(self, *, window: int = WINDOW, max_kinds: int = MAX_KINDS, max_clusters: int = MAX_CLUSTERS) -> None:
        self.window = window
        self.max_kinds = max_kinds
        self.max_clusters = max_clusters
        self._kinds: dict[str, _Ring] = {}
        self._clusters: dict[str, _Ring] = {}
        self._errors: dict[str, deque[SyncError]] = {}
        self.version = 0

    def sync_batch(self, batch: SyncEventBatch) -> None:
        """A batch of one cluster's events, counted at the batch's time (as the fleet view counts them)."""
        if batch.events:
            self._add(batch.cluster, batch.timestamp, batch.events)

    def sync_event(self, ev: SyncEvent) -> None:
        """One unbatched event."""
        self._add(ev.cluster, ev.timestamp, (ev,))

    def _kind(self, kinds: Collection[str], resource: str) -> str:
        return resource if resource in kinds or len(kinds) < self.max_kinds else OTHER

    def _add(self, cluster: str, at: float, events: Iterable[SyncEvent]) -> None:
        second = int(at)
        ring = self._clusters.get(cluster)
        if ring is None and len(self._clusters) < self.max_clusters:
            ring = self._clusters[cluster] = _Ring(self.window)
        cslot = ring.slot(second) if ring is not None else None
        counted = False
        for ev in events:
            kind = self._kind(self._kinds, ev.resource)
            kring = self._kinds.get(kind)
            if kring is None:
                kring = self._kinds[kind] = _Ring(self.window)
            # None: that second has left a ring's window (a late replay), nothing would show it there
            kslot = kring.slot(second)
            counted = counted or kslot is not None or cslot is not None
            bucket = latency_bucket(ev.latency_seconds)
            failed = 0 if ev.ok else 1
            for s in (kslot, cslot):
                if s is not None:
                    s.events += 1
                    s.errors += failed
                    s.latency[bucket] = s.latency.get(bucket, 0) + 1
            if cslot is not None:
                per = cslot.kinds.get(kind) or cslot.kinds.setdefault(kind, [0, 0])
                per[0] += 1
                per[1] += failed
            if failed and ring is not None:
                recent = self._errors.get(cluster)
                if recent is None:
                    recent = self._errors[cluster] = deque(maxlen=RECENT_ERRORS)
                obj = f"{ev.namespace}/{ev.name}" if ev.namespace else ev.name
                recent.append(SyncError(ev.timestamp, ev.resource, obj, ev.error_reason or "Failed"))
        if counted:
            self.version += 1

    def kinds(self, now: float) -> list[SyncFigures]:
        """Every resource kind across the fleet at ``now``, busiest first (ties by name); idle kinds left out."""
        rows = [_figures(k, r.window(now, self.window), self.window) for k, r in self._kinds.items()]
        return sorted((r for r in rows if r.events), key=lambda r: (-r.events, r.name))

    def cluster(self, name: str, now: float, *, latency: bool = True) -> SyncFigures:
        """One cluster's figures at ``now`` (zero events when unknown); ``latency=False`` skips the
        percentiles (about a fifth of the cost, for a list of every cluster)."""
        ring = self._clusters.get(name)
        return _figures(name, ring.window(now, self.window) if ring is not None else (), self.window, latency)

    def cluster_kinds(self, name: str, now: float) -> list[SyncFigures]:
        """One cluster's events per resource kind at ``now``, busiest first (no latencies: kept per cluster only)."""
        ring = self._clusters.get(name)
        totals: dict[str, list[int]] = {}
        for s in ring.window(now, self.window) if ring is not None else ():
            for kind, (n, e) in s.kinds.items():
                t = totals.setdefault(kind, [0, 0])
                t[0] += n
                t[1] += e
        rows = [SyncFigures(k, n, e, self.window) for k, (n, e) in totals.items()]
        return sorted(rows, key=lambda r: (-r.events, r.name))

    def recent_errors(self, name: str) -> list[SyncError]:
        """The cluster's latest failed events (at most :data:`RECENT_ERRORS`), latest received first."""
        return list(reversed(self._errors.get(name, ())))

    def forget(self, name: str) -> None:
        """A cluster left the fleet: drop what is kept about it."""
        had = self._clusters.pop(name, None) is not None
        if self._errors.pop(name, None) is not None or had:
            self.version += 1
