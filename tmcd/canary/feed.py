"""The mesh's WorkloadStats, pooled per running analysis run (in memory; rebuilt by replay).

A window counts for a run when it is for the rollout's workload (namespace and
``workloadRef.name``), comes from one of the rollout's canary clusters (both tracks: the
stable track on the same clusters is the baseline, as Kayenta compares baseline and canary in
one environment), and ends after the run started.  Each window carries the share of the
cluster's traffic its track had (the weight), so request rates compare per unit of traffic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tmcd.canary.samples import RunData
from tmcd.canary.schedule import RunKey, parse_time, run_key
from tmcd.contracts.messages import WorkloadStats
from tmcd.resources.canary import CanaryRollout

__all__ = ["RunFeeds"]

log = logging.getLogger("tmcd.canary")


@dataclass
class _Watch:
    workload: tuple[str, str]
    clusters: frozenset[str]
    weight: int
    runs: dict[RunKey, tuple[float, RunData]] = field(default_factory=dict)


class RunFeeds:
    """Which rollouts collect which workload's stats, and the pooled data of each running run."""

    def __init__(self) -> None:
        self._watches: dict[str, _Watch] = {}
        self._by_workload: dict[tuple[str, str], set[str]] = {}
        self.rejected = 0
        """Windows that could not be pooled (inconsistent counts)."""

    def track(self, key: str, r: CanaryRollout) -> None:
        """Follow the rollout's running runs, canary clusters and weight (call on every status)."""
        workload = (r.metadata.namespace, r.spec.workload_ref.name)
        running = {
            run_key(run): parse_time(run.start_time) or 0.0
            for run in r.status.analysis_runs
            if run.phase in ("Running", "Pending")
        }
        w = self._watches.get(key)
        if w is None or w.workload != workload:
            self.forget(key)
            w = self._watches[key] = _Watch(workload, frozenset(), 0)
            self._by_workload.setdefault(workload, set()).add(key)
        w.clusters = frozenset(r.status.canary_clusters)
        w.weight = r.status.current_weight
        for k in [k for k in w.runs if k not in running]:
            del w.runs[k]  # ended: its data is no longer needed
        for k, start in running.items():
            if k not in w.runs:
                w.runs[k] = (start, RunData())

    def data(self, key: str, run: RunKey) -> RunData:
        """The pooled data of a run (empty if it is not followed yet)."""
        w = self._watches.get(key)
        if w is None or run not in w.runs:
            return RunData()
        return w.runs[run][1]

    def add(self, stats: WorkloadStats) -> list[str]:
        """Pool one window into every run it counts for; the rollouts that got it."""
        keys = self._by_workload.get((stats.namespace, stats.workload))
        if not keys:
            return []
        got: list[str] = []
        for key in keys:
            w = self._watches[key]
            if stats.cluster not in w.clusters or not w.runs:
                continue
            weight = w.weight if stats.track == "canary" else 100 - w.weight
            if weight <= 0:
                continue
            added = False
            for start, data in w.runs.values():
                if stats.timestamp < start:
                    continue
                try:
                    added = data.add_stats(stats, weight / 100.0) or added
                except ValueError as exc:
                    self.rejected += 1
                    log.warning("workload stats of %s/%s not pooled: %s", stats.cluster, stats.workload, exc)
            if added:
                got.append(key)
        return got

    def forget(self, key: str) -> None:
        """Stop following a rollout."""
        w = self._watches.pop(key, None)
        if w is not None:
            keys = self._by_workload.get(w.workload)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_workload[w.workload]
