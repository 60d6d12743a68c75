"""The metrics agent's state: syncer, cluster, connection and placement metrics, updated
from decoded messages.  No I/O (but one warning if the C path is given up); time comes in
as arguments.

The hot path (sync events) never calls ``.labels()`` per event: children are cached per
cluster, counts are aggregated per batch, and histogram observations are binned locally
and added once per batch.  The per-event pass runs in the optional C extension
:mod:`tmcd.metrics._fastagg` when it was built (a wheel built with a C compiler), else in
C-level Python builtins; both give the same counts and buckets.  ``TMCD_NO_SPEEDUPS=1``
forces the pure-Python path.

The C path is fail-safe: once per process it must give the Python path's series on a
small batch (:func:`tmcd.metrics.selfcheck.self_check`), and if it ever raises, the batch is counted in Python
and the process stays on the Python path (one warning; ``tmc_build_info{speedups}``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from bisect import bisect_left, bisect_right
from collections import Counter as Tally
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, filterfalse, repeat
from math import fsum
from operator import attrgetter, eq, ne, sub
from typing import Any, Literal, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

from tmcd.config import parse_bool
from tmcd.contracts.messages import (
    ConnectionEvent,
    PlacementDecision,
    ResourceQuantities,
    SyncerHeartbeat,
    SyncEvent,
)
from tmcd.metrics import catalog
from tmcd.metrics.labels import OTHER_RESOURCE, free_label, reason_label, resource_label

RESOURCES = ("cpu", "memory", "pods")
_KEY = attrgetter("resource", "op", "direction")
_ERROR_KEY = attrgetter("resource", "error_reason")
_LATENCY = attrgetter("latency_seconds")
_DIRECTION = attrgetter("direction")
_TIMESTAMP = attrgetter("timestamp")
_OK = attrgetter("ok")

try:
    from tmcd.metrics import _fastagg
except ImportError:  # built without a C compiler: the pure-Python path
    _fastagg = None  # type: ignore[assignment]

SPEEDUPS_AVAILABLE = _fastagg is not None and values.ValueClass is values.MutexValue
"""Whether the C extension was built and imports (and prometheus-client is not in
multiprocess mode: the C path adds to the children's values directly, see ``_add_counts``)."""

NO_SPEEDUPS_ENV = "TMCD_NO_SPEEDUPS"
Aggregation = Literal["c", "python"]
log = logging.getLogger("tmcd.metrics")


def speedups_disabled(env: Mapping[str, str] | None = None) -> bool:
    """``TMCD_NO_SPEEDUPS`` read as every boolean setting is (unset or empty: False);
    :class:`tmcd.config.ConfigError` (one line naming the variable) if it is no boolean."""
    text = (os.environ if env is None else env).get(NO_SPEEDUPS_ENV, "")
    return bool(text.strip()) and parse_bool(text, NO_SPEEDUPS_ENV)


def speedups_mode(env: Mapping[str, str] | None = None) -> Aggregation:
    """The per-event path a :class:`FleetMetrics` runs by default: "c" when the extension
    is built, ``TMCD_NO_SPEEDUPS`` is not true, and the C path passed its self-check and
    has not failed since; else "python".  The first call in a process runs the self-check."""
    if speedups_disabled(env) or not SPEEDUPS_AVAILABLE:
        return "python"
    return "c" if _SPEEDUPS.usable() else "python"


@dataclass
class _Speedups:
    """The C path's standing in this process: self-checked once, given up for good."""

    checked: bool = False
    failure: str | None = None

    def usable(self) -> bool:
        if not self.checked:
            self.checked = True
            from tmcd.metrics.selfcheck import self_check  # it builds FleetMetrics: import when first used

            reason = self_check()
            if reason is not None:
                self.give_up(f"the start-up self-check of the C aggregation failed: {reason}")
        return self.failure is None

    def give_up(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.warning("%s; the metrics agent now runs the pure-Python aggregation", reason)


_SPEEDUPS = _Speedups()


@dataclass
class ClusterSeries:
    """Cached metric children of one cluster, and which label sets exist (for removal)."""

    name: str
    last_seen: float
    resources: dict[str, str] = field(default_factory=dict)
    """Raw resource -> label value (capped; overflow maps to 'other')."""
    synced: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    """Label values (resource label, op, direction) -> Counter child."""
    synced_fast: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    """Raw (resource, op, direction) -> the child's value, for the hot path."""
    errors: dict[tuple[str, str], Any] = field(default_factory=dict)
    duration: dict[str, Any] = field(default_factory=dict)
    last_heartbeat: float | None = None
    last_sequence: int = -1
    info: tuple[str, str, str] | None = None
    connected: bool | None = None
    conn_event_at: float = float("-inf")
    """Timestamp of the last connection event applied."""


class FleetMetrics:
    """Syncer, cluster, connection and placement metrics on one registry."""

    def __init__(
        self,
        registry: CollectorRegistry,
        lag: Histogram,
        *,
        max_resources_per_cluster: int = 20,
        speedups: bool | None = None,
        on_fallback: Callable[[], None] | None = None,
    ) -> None:
        """``speedups``: use the C extension (None: as :func:`speedups_mode` says);
        ``on_fallback`` is called when a C failure switches this instance to Python."""

        def make(name: str) -> Any:
            return catalog.create(name, registry)

        self.sync_duration = cast(Histogram, make("tmc_syncer_sync_duration_seconds"))
        self.synced = cast(Counter, make("tmc_syncer_resources_synced_total"))
        self.errors = cast(Counter, make("tmc_syncer_errors_total"))
        self.queue_depth = cast(Gauge, make("tmc_syncer_queue_depth"))
        self.heartbeat_interval = cast(Histogram, make("tmc_syncer_heartbeat_interval_seconds"))
        self.decisions = cast(Counter, make("tmc_placement_decisions_total"))
        self.decision_duration = cast(Histogram, make("tmc_placement_decision_duration_seconds"))
        self.selected = cast(Gauge, make("tmc_placement_selected_clusters"))
        self.capacity = cast(Gauge, make("tmc_cluster_capacity"))
        self.allocatable = cast(Gauge, make("tmc_cluster_allocatable"))
        self.utilization = cast(Gauge, make("tmc_cluster_utilization_ratio"))
        self.info = cast(Gauge, make("tmc_cluster_info"))
        self.conn_up = cast(Gauge, make("tmc_connection_up"))
        self.reconnects = cast(Counter, make("tmc_connection_reconnects_total"))
        self.conn_changed = cast(Gauge, make("tmc_connection_last_change_timestamp_seconds"))
        self.lag = lag
        if speedups is None:
            speedups = speedups_mode() == "c"
        if speedups and not SPEEDUPS_AVAILABLE:
            raise RuntimeError("tmcd.metrics._fastagg is not built (install from a wheel built with a C compiler)")
        self.aggregation: Aggregation = "c" if speedups else "python"
        """Which per-event path runs: "c" or "python"."""
        self._on_fallback = on_fallback
        self._sync_bounds = tuple(self.sync_duration._upper_bounds)
        self._lag_bounds = tuple(lag._upper_bounds)
        self.max_resources = max_resources_per_cluster
        self.clusters: dict[str, ClusterSeries] = {}
        self._decided_at: dict[str, float] = {}

    # -- clusters -----------------------------------------------------------------

    def _cluster(self, name: str, now: float) -> ClusterSeries:
        cs = self.clusters.get(name)
        if cs is None:
            cs = self.clusters[name] = ClusterSeries(name, now)
        cs.last_seen = max(cs.last_seen, now)  # a message re-read from the stream is older
        return cs

    def _resource(self, cs: ClusterSeries, resource: str) -> str:
        label = cs.resources.get(resource)
        if label is None:
            label = resource_label(resource)
            if label != OTHER_RESOURCE and sum(1 for v in cs.resources.values() if v != OTHER_RESOURCE) >= (
                self.max_resources
            ):
                label = OTHER_RESOURCE
            cs.resources[resource] = label
        return label

    # -- sync events (hot path) -----------------------------------------------------

    def on_sync_events(self, cluster: str, events: Sequence[SyncEvent], now: float) -> int:
        """Count a batch of one cluster's sync events; returns how many.

        The per-event work runs in C (attrgetter, map, Counter, sort); Python code runs
        once per distinct (resource, operation, direction) and per histogram bucket, not
        per event.  Histograms are binned by sorting the batch's values and bisecting the
        bucket bounds into them, which gives the same buckets as ``observe()`` per value.
        """
        n = len(events)
        if not n:
            return 0
        cs = self._cluster(cluster, now)
        if self.aggregation != "c" or not self._aggregate_c(cs, events, now):
            self._aggregate_py(cs, events, now, n)
        return n

    def _aggregate_c(self, cs: ClusterSeries, events: Sequence[SyncEvent], now: float, *, strict: bool = False) -> bool:
        """Count a batch in C; False, with nothing counted, when the C pass raised (and from
        then on this instance runs the Python path).  ``strict``: raise instead."""
        # Known keys are added to their children's values in C; the metric children are
        # only written from the event loop's thread, so adding without taking each value's
        # lock loses nothing (readers still lock).
        try:
            counts, down, up, down_sum, up_sum, lag, lag_sum, failed = _fastagg.aggregate(
                events, now, self._sync_bounds, self._lag_bounds, cs.synced_fast
            )
        except Exception as exc:
            # aggregate() changes nothing when it raises, so the caller can count the batch again
            if strict:
                raise
            self._fall_back(f"the C aggregation raised {_describe(exc)}")
            return False
        for key, c in counts.items():
            self._synced_value(cs, key)._value += c
        for direction, buckets, total in (("down", down, down_sum), ("up", up, up_sum)):
            if any(buckets):
                _add_counts(self._duration(cs, direction), buckets, total)
        _add_counts(self.lag, lag, lag_sum)
        if failed:
            self._count_errors(cs, failed)
        return True

    def _fall_back(self, reason: str) -> None:
        self.aggregation = "python"
        _SPEEDUPS.give_up(reason)
        if self._on_fallback is not None:
            self._on_fallback()

    def _aggregate_py(self, cs: ClusterSeries, events: Sequence[SyncEvent], now: float, n: int) -> None:
        # counts per (resource, op, direction); cached per raw key, incremented once per batch
        fast = cs.synced_fast
        up = 0
        for key, c in Tally(map(_KEY, events)).items():
            value = fast.get(key)
            if value is None:
                value = self._synced_value(cs, key)
            value.inc(c)
            if key[2] == "up":
                up += c
        # sync latency per direction
        lats = list(map(_LATENCY, events))
        if up == 0:
            self._observe_sorted(cs, "down", lats)
        elif up == n:
            self._observe_sorted(cs, "up", lats)
        else:
            dirs = list(map(_DIRECTION, events))
            self._observe_sorted(cs, "down", list(compress(lats, map(ne, dirs, repeat("up", n)))))
            self._observe_sorted(cs, "up", list(compress(lats, map(eq, dirs, repeat("up", n)))))
        # event lag (clock time -> processed); events come oldest first, so this sort is O(n)
        lags = list(map(sub, repeat(now, n), map(_TIMESTAMP, events)))
        lags.sort()
        _add_sorted(self.lag, lags, floor=0.0)
        failed = list(filterfalse(_OK, events))
        if failed:
            self._count_errors(cs, failed)

    def _count_errors(self, cs: ClusterSeries, failed: Sequence[SyncEvent]) -> None:
        """Failures per (resource, reason)."""
        for (resource, reason), c in Tally(map(_ERROR_KEY, failed)).items():
            res = cs.resources.get(resource) or self._resource(cs, resource)
            ekey = (res, reason_label(reason))
            child = cs.errors.get(ekey)
            if child is None:
                child = cs.errors[ekey] = self.errors.labels(cs.name, *ekey)
            child.inc(c)

    def _duration(self, cs: ClusterSeries, direction: str) -> Any:
        child = cs.duration.get(direction)
        if child is None:
            child = cs.duration[direction] = self.sync_duration.labels(cs.name, direction)
        return child

    def _synced_value(self, cs: ClusterSeries, key: tuple[str, str, str]) -> Any:
        resource, op, direction = key
        res = cs.resources.get(resource) or self._resource(cs, resource)
        skey = (res, op, direction)
        child = cs.synced.get(skey)
        if child is None:
            child = cs.synced[skey] = self.synced.labels(cs.name, *skey)
        value = cs.synced_fast[key] = child._value
        return value

    def _observe_sorted(self, cs: ClusterSeries, direction: str, values: list[float]) -> None:
        values.sort()
        _add_sorted(self._duration(cs, direction), values)

    # -- heartbeats ---------------------------------------------------------------

    def on_heartbeat(self, hb: SyncerHeartbeat, now: float) -> None:
        """Capacity, allocatable, utilisation, queue depth, info, heartbeat gap.  A heartbeat older
        than the last one applied changes nothing, so the order of delivery does not matter."""
        cs = self._cluster(hb.cluster, now)
        c = hb.cluster
        if cs.last_heartbeat is not None and hb.timestamp < cs.last_heartbeat:
            return  # older than what the gauges show: one re-read from the stream, or late
        if cs.last_heartbeat is not None and hb.sequence != cs.last_sequence and hb.timestamp > cs.last_heartbeat:
            self.heartbeat_interval.labels(c).observe(hb.timestamp - cs.last_heartbeat)
        if cs.last_heartbeat is None or hb.timestamp >= cs.last_heartbeat:
            cs.last_heartbeat = hb.timestamp
            cs.last_sequence = hb.sequence
        self.queue_depth.labels(c).set(hb.queue_depth)
        for r in RESOURCES:
            cap, alloc, used = _amount(hb.capacity, r), _amount(hb.allocatable, r), _amount(hb.used, r)
            self.capacity.labels(c, r).set(cap)
            self.allocatable.labels(c, r).set(alloc)
            self.utilization.labels(c, r).set(min(1.0, used / alloc) if alloc > 0 else 0.0)
        info = (
            free_label(hb.labels.get("region", "")),
            free_label(hb.labels.get("zone", "")),
            free_label(hb.labels.get("provider", "")),
        )
        if info != cs.info:
            if cs.info is not None:
                self.info.remove(c, *cs.info)
            self.info.labels(c, *info).set(1)
            cs.info = info
        if cs.connected is None:
            self._set_connected(cs, hb.connected, hb.timestamp, count_reconnect=False)

    # -- connection events -----------------------------------------------------------

    def on_connection(self, ev: ConnectionEvent, now: float) -> None:
        """Connection up/down, reconnects and the time of the last change; an event older than the
        last one applied changes nothing."""
        cs = self._cluster(ev.cluster, now)
        if ev.timestamp < cs.conn_event_at:
            return
        cs.conn_event_at = ev.timestamp
        self._set_connected(cs, ev.state == "connected", ev.timestamp, count_reconnect=True)

    def _set_connected(self, cs: ClusterSeries, up: bool, at: float, *, count_reconnect: bool) -> None:
        if cs.connected == up:
            return
        if up and cs.connected is False and count_reconnect:
            self.reconnects.labels(cs.name).inc()
        elif cs.connected is None:
            self.reconnects.labels(cs.name)  # the series exists from the start, at 0
        cs.connected = up
        self.conn_up.labels(cs.name).set(1 if up else 0)
        self.conn_changed.labels(cs.name).set(at)

    # -- placement -----------------------------------------------------------------

    def on_placement(self, d: PlacementDecision) -> None:
        """Decisions by result and decision time (each decision counted by one replica)."""
        self.decisions.labels(d.placement, d.result).inc()
        self.decision_duration.observe(d.latency_seconds)

    def on_selected(self, d: PlacementDecision) -> None:
        """Clusters the placement's latest decision selected (every replica sees every decision);
        a decision older than the last one applied changes nothing."""
        if d.timestamp >= self._decided_at.get(d.placement, float("-inf")):
            self._decided_at[d.placement] = d.timestamp
            self.selected.labels(d.placement).set(len(d.selected))

    # -- forgetting --------------------------------------------------------------------

    def forget(self, cluster: str) -> bool:
        """Remove every series of a cluster; True if it was known."""
        cs = self.clusters.pop(cluster, None)
        if cs is None:
            return False
        for key in cs.synced:
            self.synced.remove(cluster, *key)
        for ekey in cs.errors:
            self.errors.remove(cluster, *ekey)
        for direction in cs.duration:
            self.sync_duration.remove(cluster, direction)
        for metric in (self.queue_depth, self.heartbeat_interval, self.conn_up, self.reconnects, self.conn_changed):
            _remove(metric, cluster)
        for metric in (self.capacity, self.allocatable, self.utilization):
            for r in RESOURCES:
                _remove(metric, cluster, r)
        if cs.info is not None:
            self.info.remove(cluster, *cs.info)
        return True

    def stale(self, now: float, forget_after: float) -> list[str]:
        """Clusters not heard from for ``forget_after`` seconds."""
        return [name for name, cs in self.clusters.items() if now - cs.last_seen > forget_after]

    def forget_if_stale(self, cluster: str, now: float, forget_after: float) -> bool:
        """Forget ``cluster`` if it is (still) not heard from for ``forget_after`` seconds."""
        cs = self.clusters.get(cluster)
        return cs is not None and now - cs.last_seen > forget_after and self.forget(cluster)

    def sweep(self, now: float, forget_after: float) -> list[str]:
        """Forget clusters not heard from for ``forget_after`` seconds; returns their names."""
        stale = self.stale(now, forget_after)
        for name in stale:
            self.forget(name)
        return stale


def _add_sorted(histogram: Any, values: list[float], *, floor: float | None = None) -> None:
    """Add sorted ``values`` to a histogram (or child), as ``observe()`` on each would.

    ``observe(v)`` counts ``v`` in the first bucket whose bound is >= v, so bucket i holds
    the values in (bounds[i-1], bounds[i]]: differences of ``bisect_right``.  With
    ``floor``, values below it add ``floor`` to the sum (a clock-skewed negative lag).
    """
    bounds = histogram._upper_bounds
    buckets = histogram._buckets
    below = 0
    for i, at in enumerate(map(bisect_right, repeat(values, len(bounds)), bounds)):
        if at != below:
            buckets[i].inc(at - below)
            below = at
    if floor is not None and values[0] < floor:
        k = bisect_left(values, floor)
        histogram._sum.inc(fsum(values[k:]) + floor * k)
    else:
        histogram._sum.inc(fsum(values))


def _add_counts(histogram: Any, counts: list[int], total: float) -> None:
    """Add per-bucket (not cumulative) counts and their sum to a histogram (or child).

    Writes the values without their locks: only the event loop's thread writes them.
    """
    buckets = histogram._buckets
    for i, c in enumerate(counts):
        if c:
            buckets[i]._value += c
    histogram._sum._value += total


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _amount(q: ResourceQuantities, resource: str) -> float:
    return float(getattr(q, resource))


def _remove(metric: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
