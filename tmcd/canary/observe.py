"""What the analysis runs of a rollout observe now: pooled mesh and syncer data, Prometheus answers (I/O).

The canary agent calls :func:`observations` for every reconcile; a Prometheus metric is queried
only when its next measurement is due, the pooled data is read from memory.
"""

from __future__ import annotations

from collections.abc import Mapping

from tmcd.canary.analysis import Observation, ProviderError
from tmcd.canary.feed import RunFeeds
from tmcd.canary.prometheus import query_prometheus
from tmcd.canary.samples import RunData
from tmcd.canary.schedule import RunKey, due_at, effective_metrics, parse_time, run_key
from tmcd.canary.syncpool import SyncPool
from tmcd.resources.canary import AnalysisTemplate, CanaryRollout

__all__ = ["observations"]


async def observations(
    r: CanaryRollout, templates: Mapping[str, AnalysisTemplate], feeds: RunFeeds, syncpool: SyncPool, now: float
) -> dict[RunKey, Mapping[str, Observation]]:
    """Per running (or pending) analysis run, each metric's observation: the run's pooled data for
    the nats and syncer providers, a fresh query for a due prometheus metric."""
    out: dict[RunKey, Mapping[str, Observation]] = {}
    key = f"{r.metadata.namespace}.{r.metadata.name}"
    for run in r.status.analysis_runs:
        if run.phase not in ("Running", "Pending"):
            continue
        t = templates.get(run.template)
        if t is None:
            continue
        step = None
        if run.step_index is not None and run.step_index < len(r.spec.steps):
            step = r.spec.steps[run.step_index].analysis
        metrics = effective_metrics(t, step if run.step_index is not None else None)
        args = (step.args if step else r.spec.analysis.args if r.spec.analysis else {}) or {}
        data = feeds.data(key, run_key(run))
        obs: dict[str, Observation] = {}
        started = parse_time(run.start_time) or now
        results = {m.name: m for m in run.metrics}
        for m in metrics:
            if m.provider.nats is not None:
                obs[m.name] = data
            elif m.provider.syncer is not None:
                obs[m.name] = syncpool.data(key, run_key(run)) or RunData()
            elif m.provider.prometheus is not None:
                due = due_at(m, results.get(m.name), started)
                if due is not None and now >= due:
                    obs[m.name] = await query_prometheus(m.provider.prometheus, args)
            else:
                obs[m.name] = ProviderError("the metric has no provider")
        out[run_key(run)] = obs
    return out
