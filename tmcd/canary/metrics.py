"""The canary agent's Prometheus series (defined in :mod:`tmcd.metrics.catalog`)."""

from __future__ import annotations

import contextlib
from typing import cast, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tmcd.canary.model import Note
from tmcd.canary.schedule import parse_time
from tmcd.metrics.catalog import create
from tmcd.resources.canary import CanaryRollout, CanaryRolloutStatus, RolloutPhase

__all__ = ["CanaryMetrics"]

PHASES: tuple[str, ...] = get_args(RolloutPhase)


class CanaryMetrics:
    """Per-rollout gauges kept in step with status, counters fed by the events."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.phase = cast(Gauge, create("tmc_canary_phase", registry))
        self.weight = cast(Gauge, create("tmc_canary_weight", registry))
        self.applied = cast(Gauge, create("tmc_canary_applied_weight", registry))
        self.step = cast(Gauge, create("tmc_canary_step", registry))
        self.clusters = cast(Gauge, create("tmc_canary_clusters", registry))
        self.analysis = cast(Counter, create("tmc_canary_analysis_total", registry))
        self.value = cast(Gauge, create("tmc_canary_analysis_value", registry))
        self.rollbacks = cast(Counter, create("tmc_canary_rollbacks_total", registry))
        self.duration = cast(Histogram, create("tmc_canary_duration_seconds", registry))
        self._seen: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._phase: dict[tuple[str, str], str] = {}
        """The phase each rollout was last seen in (transitions are counted once)."""

    def clear(self) -> None:
        """Remove every rollout's gauges (phase, weights, step, clusters, analysis values): this
        replica no longer leads the canary agent, and the new leader counts what follows.
        Counters and histograms stay (they add up over replicas)."""
        for gauge in (self.phase, self.weight, self.applied, self.step, self.clusters, self.value):
            gauge.clear()
        self._seen.clear()
        self._phase.clear()

    def observe(self, r: CanaryRollout, st: CanaryRolloutStatus) -> None:
        """Set the rollout's gauges from its status."""
        ns, name = r.metadata.namespace, r.metadata.name
        self._seen.setdefault((ns, name), set())
        before = self._phase.get((ns, name))
        self._phase[(ns, name)] = st.phase
        if before is not None and before != st.phase:
            self._transition(r, before, st)
        for p in PHASES:
            self.phase.labels(ns, name, p).set(1 if st.phase == p else 0)
        self.weight.labels(ns, name).set(st.current_weight)
        self.applied.labels(ns, name).set(st.applied_weight or 0)
        self.step.labels(ns, name).set(st.current_step_index + 1)
        self.clusters.labels(ns, name).set(len(st.canary_clusters))

    def event(self, r: CanaryRollout, note: Note, st: CanaryRolloutStatus) -> None:
        """Count what an event says: measurements, values, rollbacks, and durations at the end."""
        ns, name = r.metadata.namespace, r.metadata.name
        ev = note.evidence
        if note.type == "analysis" and "phase" in ev and "metric" in ev:
            metric = str(ev["metric"])
            self.analysis.labels(ns, name, metric, str(ev["phase"])).inc()
            measurement = ev.get("measurement") or {}
            raw = measurement.get("tracks") if isinstance(measurement, dict) else None
            tracks = {k: v for k, v in (raw or {}).items() if k in ("canary", "stable") and isinstance(v, dict)}
            for track, detail in tracks.items():
                v = detail.get("value")
                if isinstance(v, (int, float)):
                    self.value.labels(ns, name, metric, track).set(float(v))
                    self._seen.setdefault((ns, name), set()).add((metric, track))
            if not tracks and isinstance(ev.get("value"), (int, float)):
                self.value.labels(ns, name, metric, "value").set(float(ev["value"]))
                self._seen.setdefault((ns, name), set()).add((metric, "value"))

    def _transition(self, r: CanaryRollout, before: str, st: CanaryRolloutStatus) -> None:
        ns, name = r.metadata.namespace, r.metadata.name
        if st.phase == "RollingBack":
            self.rollbacks.labels(ns, name, st.abort_reason or "Unknown").inc()
        if st.phase in ("Succeeded", "RolledBack"):
            started = parse_time(st.start_time)
            ended = parse_time(st.rollback.end_time) if st.phase == "RolledBack" and st.rollback else None
            ended = ended or parse_time(st.progress_time)
            if started is not None and ended is not None and ended >= started:
                self.duration.labels(st.phase).observe(ended - started)

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted rollout's series."""
        for p in PHASES:
            with contextlib.suppress(KeyError):
                self.phase.remove(namespace, name, p)
        for g in (self.weight, self.applied, self.step, self.clusters):
            with contextlib.suppress(KeyError):
                g.remove(namespace, name)
        self._phase.pop((namespace, name), None)
        for metric, track in self._seen.pop((namespace, name), set()):
            with contextlib.suppress(KeyError):
                self.value.remove(namespace, name, metric, track)
