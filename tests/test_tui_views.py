"""The cluster and sync views: the per-kind/per-cluster aggregation (pure), and the views through Pilot."""

from __future__ import annotations

import math

import pytest

from tmcd.contracts.messages import SyncEvent, SyncEventBatch
from tmcd.tui.kinds import GROWTH, OTHER, SyncStats, bucket_bound, latency_bucket, percentiles

NOW = 1_700_000_000.0


def ev(cluster: str, resource: str, latency: float = 0.01, ok: bool = True, at: float = NOW) -> SyncEvent:
    return SyncEvent(
        cluster=cluster,
        timestamp=at,
        resource=resource,
        namespace="shop",
        name="web",
        latency_seconds=latency,
        ok=ok,
        error_reason="" if ok else "Conflict",
    )


def batch(cluster: str, events: list[SyncEvent], at: float = NOW) -> SyncEventBatch:
    return SyncEventBatch(cluster=cluster, timestamp=at, events=events)


# --- the aggregation (pure) -----------------------------------------------------------------------------------


def test_rates_and_error_ratios_per_kind_and_per_cluster() -> None:
    stats = SyncStats(window=60)
    for s in reversed(range(30)):  # 30 s of traffic: sim-1 4 deployments/s (1 failing) + 2 pods/s; sim-2 2 pods/s
        at = NOW - s
        deps = [ev("sim-1", "apps/v1/deployments", ok=i != 0, at=at) for i in range(4)]
        stats.sync_batch(batch("sim-1", deps + [ev("sim-1", "v1/pods", at=at)] * 2, at))
        stats.sync_batch(batch("sim-2", [ev("sim-2", "v1/pods", at=at)] * 2, at))
    kinds = stats.kinds(NOW)
    assert [k.name for k in kinds] == ["apps/v1/deployments", "v1/pods"]
    deps, pods = kinds
    assert (deps.events, deps.errors, deps.rate, deps.error_ratio) == (120, 30, 2.0, 0.25)
    assert (pods.events, pods.errors, pods.rate, pods.error_ratio) == (120, 0, 2.0, 0.0)
    one = stats.cluster("sim-1", NOW)
    assert (one.events, one.errors, one.rate) == (180, 30, 3.0)
    assert [(k.name, k.events, k.errors) for k in stats.cluster_kinds("sim-1", NOW)] == [
        ("apps/v1/deployments", 120, 30),
        ("v1/pods", 60, 0),
    ]
    assert [e.reason for e in stats.recent_errors("sim-1")][:1] == ["Conflict"]
    assert stats.recent_errors("sim-1")[0].timestamp == NOW  # newest first
    assert stats.cluster("nowhere", NOW).events == 0 and stats.cluster("nowhere", NOW).error_ratio is None


def test_latency_percentiles_are_within_one_bucket() -> None:
    stats = SyncStats()
    # 1..100 ms, one event each: p50 = 50 ms, p90 = 90 ms, p99 = 99 ms
    stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods", latency=(i + 1) / 1000) for i in range(100)]))
    fig = stats.cluster("sim-1", NOW)
    for got, want in ((fig.p50, 0.050), (fig.p90, 0.090), (fig.p99, 0.099)):
        assert got is not None and want <= got <= want * GROWTH + 1e-12
    assert stats.kinds(NOW)[0].p99 == fig.p99
    assert percentiles({}, (0.5,)) == [None]
    # the bucket of a value has the value at or under its bound and above the previous bound
    for v in (1e-5, 1e-4, 0.0123, 1.0, 42.0):
        b = latency_bucket(v)
        assert v <= bucket_bound(b) + 1e-15 and (b == 0 or v > bucket_bound(b - 1))
    assert latency_bucket(math.nan) == 0 and latency_bucket(-1.0) == 0


def test_window_expiry_and_late_events() -> None:
    stats = SyncStats(window=60)
    stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods", ok=False)], NOW - 59))
    stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods")], NOW))
    assert stats.cluster("sim-1", NOW).events == 2
    assert stats.cluster("sim-1", NOW + 1).events == 1  # the first one left the window
    assert stats.kinds(NOW + 1)[0].errors == 0
    assert stats.kinds(NOW + 61) == []  # nothing recent: an idle kind is not listed
    before = stats.version
    stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods")], NOW - 120))  # older than the window
    assert stats.cluster("sim-1", NOW).events == 2 and stats.version == before
    # slots are reused, not piled up: an hour of traffic keeps one window of slots
    for s in range(3_600):
        stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods")], NOW + s))
    assert stats.cluster("sim-1", NOW + 3_599).events == 60


def test_kinds_clusters_and_errors_are_capped() -> None:
    stats = SyncStats(max_kinds=3, max_clusters=2)
    for i in range(5):
        stats.sync_batch(batch(f"sim-{i}", [ev(f"sim-{i}", f"g/v1/kind{i}", ok=False)] * 100))
    names = {k.name for k in stats.kinds(NOW)}
    assert names == {"g/v1/kind0", "g/v1/kind1", "g/v1/kind2", OTHER}
    assert next(k for k in stats.kinds(NOW) if k.name == OTHER).events == 200  # kind3 and kind4
    assert stats.cluster("sim-4", NOW).events == 0  # beyond the cluster cap: only the kind figures count it
    assert len(stats.recent_errors("sim-0")) == 50 and stats.recent_errors("sim-4") == []
    stats.forget("sim-0")
    assert stats.cluster("sim-0", NOW).events == 0 and stats.recent_errors("sim-0") == []


def test_the_state_feeds_the_aggregation() -> None:
    from tmcd.tui.state import DashboardState

    state = DashboardState()
    v = state.version
    state.apply(batch("sim-1", [ev("sim-1", "v1/pods", ok=False)]))
    state.apply(ev("sim-1", "v1/secrets"))
    assert state.version > v
    assert [k.name for k in state.sync.kinds(NOW)] == ["v1/pods", "v1/secrets"]
    assert state.fleet.row("sim-1", NOW) is not None and state.fleet.row("sim-1", NOW).error_ratio == 0.5  # type: ignore[union-attr]


@pytest.mark.parametrize("n", [0, 1])
def test_nothing_counted_in_an_empty_batch(n: int) -> None:
    stats = SyncStats()
    stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods")] * n))
    assert stats.cluster("sim-1", NOW).events == n
