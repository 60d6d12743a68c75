"""The metrics agent's state: syncer, cluster, connection and placement metrics, updated
from decoded messages.  No I/O; time comes in as arguments.

The hot path (sync events) never calls ``.labels()`` per event: children are cached per
cluster, counts are aggregated per batch, and histogram observations are binned locally
and added once per batch.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress, filterfalse, repeat
from math import fsum
from operator import attrgetter, eq, sub
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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


@dataclass
class ClusterSeries:
    """Cached metric children of one cluster, and which label sets exist (for removal)."""

    name: str
    last_seen: float
    resources: dict[str, str] = field(default_factory=dict)
    """Raw resource -> label value (capped; overflow maps to 'other')."""
    synced: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    errors: dict[tuple[str, str], Any] = field(default_factory=dict)
    duration: dict[str, Any] = field(default_factory=dict)
    last_heartbeat: float | None = None
    last_sequence: int = -1
    info: tuple[str, str, str] | None = None
    connected: bool | None = None


class FleetMetrics:
    """Syncer, cluster, connection and placement metrics on one registry."""

    def __init__(self, registry: CollectorRegistry, lag: Histogram, *, max_resources_per_cluster: int = 20) -> None:
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
        self._lag_bounds = catalog.EVENT_LAG_BUCKETS
        self._sync_bounds = catalog.SYNC_DURATION_BUCKETS
        self.max_resources = max_resources_per_cluster
        self.clusters: dict[str, ClusterSeries] = {}

    # -- clusters -----------------------------------------------------------------

    def _cluster(self, name: str, now: float) -> ClusterSeries:
        cs = self.clusters.get(name)
        if cs is None:
            cs = self.clusters[name] = ClusterSeries(name, now)
        cs.last_seen = now
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

        The per-event work runs in C (attrgetter, map, bisect, Counter); Python code runs
        once per distinct (resource, operation, direction) and bucket, not per event.
        """
        n = len(events)
        if not n:
            return 0
        cs = self._cluster(cluster, now)
        # counts per (resource, op, direction)
        for (resource, op, direction), c in Tally(map(_KEY, events)).items():
            res = cs.resources.get(resource) or self._resource(cs, resource)
            skey = (res, op, direction)
            child = cs.synced.get(skey)
            if child is None:
                child = cs.synced[skey] = self.synced.labels(cluster, *skey)
            child.inc(c)
        # sync latency per direction, binned
        lats = list(map(_LATENCY, events))
        dirs = list(map(_DIRECTION, events))
        per_dir = Tally(zip(dirs, map(bisect_left, repeat(self._sync_bounds, n), lats), strict=True))
        total = fsum(lats)
        up = fsum(compress(lats, map(eq, dirs, repeat("up", n))))
        for direction, dsum in (("down", total - up), ("up", up)):
            hits = [(i, c) for (d, i), c in per_dir.items() if d == direction]
            if not hits:
                continue
            child = cs.duration.get(direction)
            if child is None:
                child = cs.duration[direction] = self.sync_duration.labels(cluster, direction)
            buckets = child._buckets
            for i, c in hits:
                buckets[i].inc(c)
            child._sum.inc(dsum)
        # event lag (clock time -> processed), binned
        stamps = list(map(_TIMESTAMP, events))
        lag_idx = Tally(map(bisect_left, repeat(self._lag_bounds, n), map(sub, repeat(now, n), stamps)))
        lag_buckets = self.lag._buckets
        for i, c in lag_idx.items():
            lag_buckets[i].inc(c)
        self.lag._sum.inc(max(0.0, now * n - fsum(stamps)))
        # failures per (resource, reason)
        failed = list(filterfalse(_OK, events))
        if failed:
            for (resource, reason), c in Tally(map(_ERROR_KEY, failed)).items():
                res = cs.resources.get(resource) or self._resource(cs, resource)
                ekey = (res, reason_label(reason))
                child = cs.errors.get(ekey)
                if child is None:
                    child = cs.errors[ekey] = self.errors.labels(cluster, *ekey)
                child.inc(c)
        return n

    # -- heartbeats ---------------------------------------------------------------

    def on_heartbeat(self, hb: SyncerHeartbeat, now: float) -> None:
        """Capacity, allocatable, utilisation, queue depth, info, heartbeat gap."""
        cs = self._cluster(hb.cluster, now)
        c = hb.cluster
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
        """Connection up/down, reconnects and the time of the last change."""
        cs = self._cluster(ev.cluster, now)
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
        """Decisions by result, decision time, clusters selected."""
        self.decisions.labels(d.placement, d.result).inc()
        self.decision_duration.observe(d.latency_seconds)
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

    def sweep(self, now: float, forget_after: float) -> list[str]:
        """Forget clusters not heard from for ``forget_after`` seconds; returns their names."""
        stale = [name for name, cs in self.clusters.items() if now - cs.last_seen > forget_after]
        for name in stale:
            self.forget(name)
        return stale


def _amount(q: ResourceQuantities, resource: str) -> float:
    return float(getattr(q, resource))


def _remove(metric: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
