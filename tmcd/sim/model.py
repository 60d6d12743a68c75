"""A deterministic model of a fleet of syncers: heartbeats, sync events, connection changes.

Pure: no clock and no I/O.  Time is passed in as ``now`` (Unix seconds), and every random
draw comes from generators seeded by :attr:`SimOptions.seed`, so the same seed and the same
sequence of calls give the same messages.  Heartbeats, sync events and connection events
draw from separate generators, so one stream's draws never shift another's; and since
nothing happens between due times, polling more often does not change what is emitted.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Set
from dataclasses import dataclass, field
from itertools import accumulate

from tmcd.contracts.messages import ConnectionEvent, ControlReply, SyncDirection, SyncerHeartbeat, SyncEvent, SyncOp
from tmcd.sim.fleet import SimCluster, cluster_names, make_cluster, object_name

__all__ = ["FleetModel", "SimOptionError", "SimOptions", "cluster_names", "validate_options"]

BASE_ERROR_RATIO = 0.005
ERROR_REASONS: dict[str, float] = {"Conflict": 40, "NotFound": 20, "Timeout": 20, "Forbidden": 10, "WebhookDenied": 10}
DOWN_OPS: dict[SyncOp, float] = {"update": 70, "create": 18, "delete": 12}
UP_SHARE = 0.3
"""Fraction of sync events that carry status up to the control plane."""
LATENCY_MEDIAN = 0.05
LATENCY_SIGMA = 0.5
TAIL_SHARE = 0.02
OUTAGES_PER_CLUSTER_HOUR = 1.0
BURST_MEAN_GAP = 600.0
"""Mean seconds between error bursts somewhere in the fleet."""
RESYNC_BATCH = 64
"""At most this many forced re-sync events are returned by one :meth:`FleetModel.sync_events` call."""
DISCONNECT_REASONS = ("ConnectionReset", "WatchTimeout", "APIServerUnavailable", "TLSHandshakeTimeout")


@dataclass
class SimOptions:
    """What to simulate, and which faults to inject."""

    clusters: int = 20
    rate: float = 100.0
    """Sync events per second across the whole fleet."""
    seed: int = 1
    heartbeat_interval: float = 20.0
    stop_heartbeats: Set[str] = field(default_factory=frozenset)
    """Clusters that stop heartbeating ``fault_after`` seconds after their first heartbeat."""
    error_ratio: dict[str, float] = field(default_factory=dict)
    """Cluster -> fraction (0..1) of its sync events that fail once the fault starts."""
    disconnect: Set[str] = field(default_factory=frozenset)
    """Clusters that disconnect for good once the fault starts."""
    fault_after: float = 5.0
    batch: bool = True
    """Publish sync events as SyncEventBatch messages (as a syncer flushes), not one by one."""
    batch_max: int = 500
    """A cluster's batch is flushed when it holds this many events ..."""
    batch_interval: float = 0.1
    """... or when it is this old (seconds)."""
    per_cluster_control: bool = False
    """Answer control requests on each cluster's own subject (``tmc.ctl.sync.<cluster>.*``), as
    real syncers do, instead of on ``tmc.ctl.sync.*.*`` for the whole fleet: a syncer's NATS user
    may subscribe to its own subject only.  Requests for clusters outside the fleet then get no
    answer (no responders) rather than a 404."""


class SimOptionError(ValueError):
    """A bad simulator option; ``option`` is the SimOptions field name."""

    def __init__(self, option: str, expected: str) -> None:
        self.option = option
        self.expected = expected
        super().__init__(f"{option}: {expected}")


def validate_options(opts: SimOptions) -> None:
    """Raise :class:`SimOptionError` for the first invalid option."""
    if opts.clusters < 1:
        raise SimOptionError("clusters", f"expected at least 1 cluster, got {opts.clusters}")
    if not (opts.rate >= 0 and math.isfinite(opts.rate)):
        raise SimOptionError("rate", f"expected a rate >= 0 events/s, got {opts.rate}")
    if not (opts.heartbeat_interval > 0 and math.isfinite(opts.heartbeat_interval)):
        raise SimOptionError("heartbeat_interval", f"expected seconds > 0, got {opts.heartbeat_interval}")
    if not (opts.fault_after >= 0 and math.isfinite(opts.fault_after)):
        raise SimOptionError("fault_after", f"expected seconds >= 0, got {opts.fault_after}")
    names = cluster_names(opts.clusters)
    known = set(names)
    expected = f"expected cluster names {names[0]}..{names[-1]}"
    for option, given in (
        ("stop_heartbeats", opts.stop_heartbeats),
        ("error_ratio", opts.error_ratio.keys()),
        ("disconnect", opts.disconnect),
    ):
        unknown = sorted(set(given) - known)
        if unknown:
            raise SimOptionError(option, f"unknown cluster {unknown[0]!r} ({expected})")
    for name, ratio in sorted(opts.error_ratio.items()):
        if not 0.0 <= ratio <= 1.0:
            raise SimOptionError("error_ratio", f"expected a ratio between 0 and 1 for {name}, got {ratio}")


class FleetModel:
    """The simulated fleet: call :meth:`start`, then poll it with increasing ``now``."""

    def __init__(self, opts: SimOptions) -> None:
        validate_options(opts)
        self.opts = opts
        seed = opts.seed
        setup = random.Random(f"tmcd-sim/{seed}/fleet")
        self._hb_rng = random.Random(f"tmcd-sim/{seed}/heartbeat")
        self._sync_rng = random.Random(f"tmcd-sim/{seed}/sync")
        self._conn_rng = random.Random(f"tmcd-sim/{seed}/conn")
        self.clusters: list[SimCluster] = [
            make_cluster(n, i, setup) for i, n in enumerate(cluster_names(opts.clusters))
        ]
        self._by_name = {c.name: c for c in self.clusters}
        self._started = False
        self._next_outage = math.inf
        self._next_burst = math.inf

    def cluster(self, name: str) -> SimCluster | None:
        """The simulated cluster called ``name``, if any."""
        return self._by_name.get(name)

    def start(self, now: float) -> None:
        """Start the clock: every cluster heartbeats at once, as a syncer does when it starts,
        and then in its own slot of the interval, so the fleet's heartbeats are spread out."""
        n = len(self.clusters)
        interval = self.opts.heartbeat_interval
        for c in self.clusters:
            c.next_heartbeat = now
            c.heartbeat_slot = interval * (c.index + self._hb_rng.random()) / n
        self._next_outage = now + self._conn_rng.expovariate(n * OUTAGES_PER_CLUSTER_HOUR / 3600.0)
        self._next_burst = now + self._sync_rng.expovariate(1.0 / BURST_MEAN_GAP)
        self._started = True

    def _ensure_started(self, now: float) -> None:
        if not self._started:
            self.start(now)

    def _fault_on(self, c: SimCluster, now: float) -> bool:
        return c.first_heartbeat is not None and now >= c.first_heartbeat + self.opts.fault_after

    def _disconnected(self, c: SimCluster, now: float) -> bool:
        return c.conn_state != "connected" or (c.name in self.opts.disconnect and self._fault_on(c, now))

    def _can_sync(self, c: SimCluster, now: float) -> bool:
        return not c.paused and not self._disconnected(c, now)

    # -- heartbeats ---------------------------------------------------------

    def heartbeats_due(self, now: float) -> list[SyncerHeartbeat]:
        """Heartbeats of every cluster whose next heartbeat is due at ``now``."""
        self._ensure_started(now)
        interval = self.opts.heartbeat_interval
        out: list[SyncerHeartbeat] = []
        for c in self.clusters:
            if c.next_heartbeat > now:
                continue
            if c.heartbeat_slot is not None:
                # the start-up heartbeat: the next one is due in the cluster's slot (at the next
                # poll if that has passed already, so how often the model is polled does not matter)
                c.next_heartbeat += c.heartbeat_slot
                c.heartbeat_slot = None
            else:
                c.next_heartbeat += interval
                if c.next_heartbeat <= now:  # fell behind: do not catch up with a burst
                    c.next_heartbeat = now + interval
            if c.name in self.opts.stop_heartbeats and self._fault_on(c, now):
                continue
            if c.first_heartbeat is None:
                c.first_heartbeat = now
            c.drift(self._hb_rng)
            c.sequence += 1
            out.append(
                SyncerHeartbeat(
                    cluster=c.name,
                    timestamp=now,
                    sequence=c.sequence,
                    interval_seconds=interval,
                    labels=dict(c.labels),
                    capacity=c.capacity,
                    allocatable=c.allocatable,
                    used=c.used(),
                    queue_depth=c.heartbeat_queue_depth(now),
                    synced_resources=list(c.resources),
                    connected=not self._disconnected(c, now),
                    paused=c.paused,
                    syncer_version=c.syncer_version,
                )
            )
        return out

    # -- sync events --------------------------------------------------------

    def sync_events(self, count: int, now: float) -> list[SyncEvent]:
        """Pending forced re-sync events (at most RESYNC_BATCH) first, then ``count`` random ones.

        Random events come from the clusters that can sync (not paused, connected), chosen
        by their uneven weights; with none able to sync, they are dropped.
        """
        self._ensure_started(now)
        self._maybe_burst(now)
        out: list[SyncEvent] = []
        budget = RESYNC_BATCH
        for c in self.clusters:
            while c.resync and budget > 0 and self._can_sync(c, now):
                out.append(self._event(c, c.resync.popleft(), "update", "down", "", "", now))
                budget -= 1
        if count <= 0:
            return out
        eligible = [c for c in self.clusters if self._can_sync(c, now)]
        if not eligible:
            return out
        rng = self._sync_rng
        cum = list(accumulate(c.weight for c in eligible))
        for c in rng.choices(eligible, cum_weights=cum, k=count):
            resource = rng.choices(c.resources, cum_weights=c.resource_cum)[0]
            if rng.random() < UP_SHARE:
                op: SyncOp = "status"
                direction: SyncDirection = "up"
            else:
                op = rng.choices(list(DOWN_OPS), weights=list(DOWN_OPS.values()))[0]
                direction = "down"
            namespace = rng.choice(c.namespaces)
            out.append(self._event(c, resource, op, direction, namespace, object_name(rng, resource), now))
        return out

    def _maybe_burst(self, now: float) -> None:
        rng = self._sync_rng
        while self._next_burst <= now:
            c = rng.choice(self.clusters)
            c.burst_until = self._next_burst + rng.uniform(30.0, 180.0)
            c.burst_ratio = rng.uniform(0.05, 0.3)
            self._next_burst += rng.expovariate(1.0 / BURST_MEAN_GAP)

    def _failure_ratio(self, c: SimCluster, now: float) -> float:
        fault = self.opts.error_ratio.get(c.name)
        if fault is not None and self._fault_on(c, now):
            return fault
        return max(BASE_ERROR_RATIO, c.burst_ratio if c.burst_until > now else 0.0)

    def _event(
        self, c: SimCluster, resource: str, op: SyncOp, direction: SyncDirection, ns: str, name: str, now: float
    ) -> SyncEvent:
        rng = self._sync_rng
        latency = rng.lognormvariate(math.log(LATENCY_MEDIAN), LATENCY_SIGMA) * (1.0 + c.queue_depth / 50.0)
        if rng.random() < TAIL_SHARE:
            latency *= rng.uniform(4.0, 20.0)
        reason = ""
        if rng.random() < self._failure_ratio(c, now):
            reason = rng.choices(list(ERROR_REASONS), weights=list(ERROR_REASONS.values()))[0]
            if reason == "Timeout":
                latency = max(latency, rng.uniform(10.0, 30.0))
        return SyncEvent(
            cluster=c.name,
            timestamp=now,
            resource=resource,
            namespace=ns,
            name=name,
            op=op,
            direction=direction,
            latency_seconds=round(latency, 6),
            ok=not reason,
            error_reason=reason,
        )

    # -- connection events ----------------------------------------------------

    def connection_events(self, now: float) -> list[ConnectionEvent]:
        """Connection changes up to ``now``: rare random outages, and injected disconnects."""
        self._ensure_started(now)
        self._schedule_outages(now)
        out: list[ConnectionEvent] = []
        for c in self.clusters:
            if c.name in self.opts.disconnect and not c.fault_disconnected and self._fault_on(c, now):
                assert c.first_heartbeat is not None
                c.fault_disconnected = True
                c.pending_conn.clear()
                c.conn_state = "disconnected"
                at = c.first_heartbeat + self.opts.fault_after
                out.append(ConnectionEvent(cluster=c.name, timestamp=at, state="disconnected", reason="SimulatedFault"))
            while c.pending_conn and c.pending_conn[0][0] <= now:
                at, state, reason, attempt = c.pending_conn.popleft()
                c.conn_state = state
                out.append(ConnectionEvent(cluster=c.name, timestamp=at, state=state, reason=reason, attempt=attempt))
        out.sort(key=lambda e: e.timestamp)
        return out

    def _schedule_outages(self, now: float) -> None:
        rng = self._conn_rng
        rate = len(self.clusters) * OUTAGES_PER_CLUSTER_HOUR / 3600.0
        while self._next_outage <= now:
            at = self._next_outage
            self._next_outage += rng.expovariate(rate)
            c = rng.choice(self.clusters)
            if c.pending_conn or c.conn_state != "connected" or c.name in self.opts.disconnect:
                continue
            c.pending_conn.append((at, "disconnected", rng.choice(DISCONNECT_REASONS), 0))
            t = at
            for attempt in range(1, rng.randint(1, 3) + 1):
                t += rng.uniform(0.5, 1.5) * 2.0 ** (attempt - 1)
                c.pending_conn.append((t, "reconnecting", "Backoff", attempt))
            c.pending_conn.append((t + rng.uniform(0.1, 1.0), "connected", "Reconnected", 0))

    # -- control --------------------------------------------------------------

    def control(self, cluster: str, action: str, now: float) -> ControlReply:
        """Pause, resume or force a full re-sync of one cluster's syncer."""
        c = self._by_name.get(cluster)
        if c is None:
            return ControlReply(
                ok=False, target=cluster, code=404, message=f"unknown cluster {cluster!r}", timestamp=now
            )
        if action == "pause":
            was = c.paused
            c.paused = True
            message = "already paused" if was else "sync paused"
            return ControlReply(ok=True, target=cluster, message=message, state="paused", timestamp=now)
        if action == "resume":
            was = c.paused
            c.paused = False
            message = "sync resumed" if was else "already running"
            return ControlReply(ok=True, target=cluster, message=message, state="running", timestamp=now)
        if action == "force":
            if c.paused:
                return ControlReply(
                    ok=False,
                    target=cluster,
                    code=409,
                    message=f"cluster {cluster} is paused; resume it before forcing a re-sync",
                    state="paused",
                    timestamp=now,
                )
            c.resync = deque(c.resources)
            message = f"full re-sync of {len(c.resources)} resource kinds queued"
            return ControlReply(ok=True, target=cluster, message=message, state="resyncing", timestamp=now)
        return ControlReply(
            ok=False,
            target=cluster,
            code=400,
            message=f"unknown action {action!r}: expected pause, resume or force",
            timestamp=now,
        )
