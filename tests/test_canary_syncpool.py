"""The syncer provider's pooling: a workload's sync events per cluster and window, canary vs the rest."""

from __future__ import annotations

from tests.test_canary_model import STEPS, Driver, rollout
from tmcd.canary.analysis import measure
from tmcd.canary.schedule import run_key
from tmcd.canary.syncpool import SyncPool, uses_syncer
from tmcd.contracts.messages import SyncEvent
from tmcd.resources.canary import (
    AnalysisMetric,
    AnalysisTemplate,
    AnalysisTemplateSpec,
    Comparison,
    MetricCondition,
    MetricProvider,
    SyncerProvider,
)
from tmcd.resources.meta import ObjectMeta


def syncer_template() -> AnalysisTemplate:
    m = AnalysisMetric(
        name="sync-errors",
        interval=10.0,
        count=3,
        provider=MetricProvider(syncer=SyncerProvider(metric="sync_error_ratio")),
        condition=MetricCondition(comparison=Comparison(test="proportion", max_increase=0.5, max_difference=0.01)),
    )
    return AnalysisTemplate(metadata=ObjectMeta(name="err", namespace="shop"), spec=AnalysisTemplateSpec(metrics=[m]))


def test_a_canary_that_breaks_syncing_fails_against_the_other_clusters() -> None:
    tpl = syncer_template()
    d = Driver(rollout(STEPS), {"err": tpl})
    d.tick()  # at the analysis step, 2 canary clusters at 20 %
    r = d.r
    assert uses_syncer(r, {"err": tpl})
    pool = SyncPool(window=10.0)
    clusters = [t.metadata.name for t in d.pool]
    pool.track("shop.checkout", r, clusters, True)
    assert pool.interest() == set(clusters)
    canary = set(r.status.canary_clusters)
    t = d.now
    for w in range(6):
        for c in clusters:
            for i in range(50):
                bad = c in canary and i % 5 == 0  # 20 % of the canary's syncs are rejected
                ev = SyncEvent(
                    cluster=c,
                    timestamp=t + w * 10 + i * 0.1,
                    resource="apps/v1/deployments",
                    namespace="shop",
                    name="checkout",
                    latency_seconds=0.02,
                    ok=not bad,
                )
                pool.add(ev)
            other = SyncEvent(cluster=c, timestamp=t + w * 10, resource="v1/services", namespace="shop", name="x")
            pool.add(other)  # another object: not counted
    assert pool.flush(t + 60) == ["shop.checkout"]
    run = next(x for x in r.status.analysis_runs if x.step_index == 2)
    data = pool.data("shop.checkout", run_key(run))
    assert data is not None
    assert data.tracks["canary"].requests == 2 * 50 * 6 and data.tracks["canary"].errors == 2 * 10 * 6
    assert data.tracks["stable"].requests == 4 * 50 * 6 and data.tracks["stable"].errors == 0
    a = measure(tpl.spec.metrics[0], None, data, t + 60)
    assert a.measurement.phase == "Failed", a.measurement.message
    pool.track("shop.checkout", r, clusters, False)
    assert pool.interest() == set()
