"""The syncer provider's data: a rollout's workload as the syncers see it, per cluster and window.

A sync event counts for a rollout when it is about the rollout's workload (its namespace and
``workloadRef.name``) on one of its eligible clusters: on a canary cluster it is the canary
track, elsewhere the stable track, so a canary whose manifests the clusters reject (admission
errors, conflicts) fails a ``sync_error_ratio`` comparison before it serves traffic.  Events
are counted per (cluster, window) -- requests = events, errors = failed syncs, latency = the
sync latency histogram -- and a window is pooled into the rollout's running runs once a later
window has begun (:meth:`SyncPool.flush`), so every window enters a run whole, once.
Pure: the time comes in as an argument.
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass, field

from tmcd.canary.samples import RunData, TrackName
from tmcd.canary.schedule import RunKey, parse_time, run_key
from tmcd.contracts.messages import SyncEvent
from tmcd.resources.canary import AnalysisTemplate, CanaryRollout

__all__ = ["SYNC_BOUNDS", "WINDOW_SECONDS", "SyncPool", "uses_syncer"]

log = logging.getLogger("tmcd.canary")

WINDOW_SECONDS = 10.0
SYNC_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds (seconds) of the sync latency histogram the windows carry."""


def uses_syncer(r: CanaryRollout, templates: dict[str, AnalysisTemplate]) -> bool:
    """Whether any template the rollout runs has a syncer metric."""
    names = [t for s in r.spec.steps if s.analysis for t in s.analysis.templates]
    if r.spec.analysis is not None:
        names += r.spec.analysis.templates
    return any(m.provider.syncer is not None for n in names if (t := templates.get(n)) for m in t.spec.metrics)


@dataclass
class _Bucket:
    events: int = 0
    errors: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * len(SYNC_BOUNDS))


@dataclass
class _Follow:
    workload: tuple[str, str]
    canary: frozenset[str]
    clusters: frozenset[str]
    runs: dict[RunKey, tuple[float, RunData]] = field(default_factory=dict)
    open: dict[tuple[str, int], _Bucket] = field(default_factory=dict)


class SyncPool:
    """Rollouts that use the syncer provider, the clusters they need, and their runs' pooled windows."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._follows: dict[str, _Follow] = {}

    def track(self, key: str, r: CanaryRollout, clusters: list[str], wanted: bool) -> None:
        """Follow (or stop following) a rollout: its eligible clusters, canary clusters and running runs."""
        if not wanted or r.status.phase not in ("Progressing", "Paused", "Promoting"):
            self._follows.pop(key, None)
            return
        workload = (r.metadata.namespace, r.spec.workload_ref.name)
        f = self._follows.get(key)
        if f is None or f.workload != workload:
            f = self._follows[key] = _Follow(workload, frozenset(), frozenset())
        f.canary = frozenset(r.status.canary_clusters)
        f.clusters = frozenset(clusters)
        running = {
            run_key(x): parse_time(x.start_time) or 0.0
            for x in r.status.analysis_runs
            if x.phase in ("Running", "Pending")
        }
        for k in [k for k in f.runs if k not in running]:
            del f.runs[k]
        for k, start in running.items():
            f.runs.setdefault(k, (start, RunData()))

    def interest(self) -> set[str]:
        """Every cluster some followed rollout needs sync events from."""
        out: set[str] = set()
        for f in self._follows.values():
            out |= f.clusters
        return out

    def add(self, ev: SyncEvent) -> None:
        """Count one sync event in the open window of every rollout it concerns."""
        if not math.isfinite(ev.timestamp):
            return
        index = math.floor(ev.timestamp / self.window)
        for f in self._follows.values():
            if ev.cluster not in f.clusters or (ev.namespace, ev.name) != f.workload:
                continue
            b = f.open.get((ev.cluster, index))
            if b is None:
                b = f.open[(ev.cluster, index)] = _Bucket()
            b.events += 1
            b.errors += 0 if ev.ok else 1
            i = bisect.bisect_left(SYNC_BOUNDS, ev.latency_seconds)
            if i < len(SYNC_BOUNDS):
                b.counts[i] += 1

    def flush(self, now: float) -> list[str]:
        """Pool every window that has ended into the runs it belongs to; the rollouts that got data."""
        current = math.floor(now / self.window)
        touched: list[str] = []
        for key, f in self._follows.items():
            done = [k for k in f.open if k[1] < current]
            for cluster, index in done:
                b = f.open.pop((cluster, index))
                track: TrackName = "canary" if cluster in f.canary else "stable"
                start = index * self.window
                cumulative = [sum(b.counts[: i + 1]) for i in range(len(b.counts))]
                for run_start, data in f.runs.values():
                    if start + self.window <= run_start:
                        continue
                    try:
                        data.add_window(
                            track,
                            cluster,
                            start + self.window,  # the window's end, as WorkloadStats stamps it
                            self.window,
                            requests=b.events,
                            errors=b.errors,
                            bounds=SYNC_BOUNDS,
                            cumulative=cumulative,
                        )
                    except ValueError as exc:  # cannot happen with counts made here; never stop the agent
                        log.warning("sync window of %s not pooled: %s", cluster, exc)
                if key not in touched:
                    touched.append(key)
        return touched

    def data(self, key: str, run: RunKey) -> RunData | None:
        """The pooled sync windows of a run, or None when the rollout is not followed."""
        f = self._follows.get(key)
        if f is None:
            return None
        got = f.runs.get(run)
        return got[1] if got is not None else None
