"""FleetMetrics: what each message does to the exported series (pure, no sockets)."""

from __future__ import annotations

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_generate

from tests import tools
from tests.helpers import sample
from tmcd.contracts.messages import (
    ConnectionEvent,
    PlacementDecision,
    ResourceQuantities,
    SyncerHeartbeat,
    SyncEvent,
)
from tmcd.metrics.exposition import FastExposition
from tmcd.metrics.labels import free_label, reason_label, resource_label
from tmcd.metrics.model import FleetMetrics
from tmcd.runtime.selfmetrics import SelfMetrics


@pytest.fixture(params=["c", "python"])
def fm(request: pytest.FixtureRequest) -> tuple[FleetMetrics, CollectorRegistry]:
    """Each test runs on both per-event paths: the C extension and pure Python."""
    if request.param == "c":
        tools.require_c_extension()
    sm = SelfMetrics()
    m = FleetMetrics(sm.registry, sm.event_lag, max_resources_per_cluster=3, speedups=request.param == "c")
    return m, sm.registry


def text(reg: CollectorRegistry) -> str:
    return FastExposition(reg).render().decode()


def ev(cluster: str = "c-1", **kw: object) -> SyncEvent:
    base: dict[str, object] = {"cluster": cluster, "timestamp": 100.0, "resource": "apps/v1/deployments"}
    base.update(kw)
    return SyncEvent(**base)  # type: ignore[arg-type]


def test_sync_events_counts_errors_latency_and_lag(fm: tuple[FleetMetrics, CollectorRegistry]) -> None:
    m, reg = fm
    events = [
        ev(op="update", latency_seconds=0.02),
        ev(op="update", latency_seconds=0.2),
        ev(op="status", direction="up", latency_seconds=3.0, ok=False, error_reason="Conflict"),
        ev(op="create", ok=False, error_reason="something weird", latency_seconds=0.001),
    ]
    assert m.on_sync_events("c-1", events, now=100.5) == 4
    t = text(reg)
    synced = "tmc_syncer_resources_synced_total"
    assert sample(t, synced, cluster="c-1", resource="apps/v1/deployments", operation="update", direction="down") == 2
    assert sample(t, synced, cluster="c-1", operation="status", direction="up") == 1
    assert sample(t, "tmc_syncer_errors_total", cluster="c-1", reason="Conflict") == 1
    assert sample(t, "tmc_syncer_errors_total", cluster="c-1", reason="Other") == 1
    dur = "tmc_syncer_sync_duration_seconds_bucket"
    assert sample(t, dur, cluster="c-1", direction="down", le="0.025") == 2  # 0.001 and 0.02
    assert sample(t, dur, cluster="c-1", direction="down", le="0.25") == 3
    assert sample(t, dur, cluster="c-1", direction="up", le="2.5") == 0
    assert sample(t, dur, cluster="c-1", direction="up", le="5.0") == 1
    assert sample(t, "tmc_syncer_sync_duration_seconds_count", cluster="c-1", direction="down") == 3
    assert sample(t, "tmc_syncer_sync_duration_seconds_sum", cluster="c-1", direction="down") == pytest.approx(0.221)
    assert sample(t, "tmc_event_lag_seconds_bucket", le="0.5") == 4
    assert sample(t, "tmc_event_lag_seconds_count") == 4
    # a second batch adds to the cached children
    m.on_sync_events("c-1", [ev(op="update")], now=101.0)
    synced_n = sample(text(reg), synced, cluster="c-1", operation="update", direction="down")
    assert synced_n == 3


def test_resource_cap_folds_into_other(fm: tuple[FleetMetrics, CollectorRegistry]) -> None:
    m, reg = fm
    kinds = ["v1/pods", "v1/services", "apps/v1/deployments", "v1/secrets", "batch/v1/jobs", "Not A GVR!"]
    m.on_sync_events("c-1", [ev(resource=k) for k in kinds], now=100.0)
    t = text(reg)
    resources = {
        line.split('resource="')[1].split('"')[0]
        for line in t.splitlines()
        if line.startswith("tmc_syncer_resources_synced_total{")
    }
    assert resources == {"v1/pods", "v1/services", "apps/v1/deployments", "other"}
    assert sample(t, "tmc_syncer_resources_synced_total", resource="other") == 3


def test_heartbeat_capacity_utilization_info_and_interval(fm: tuple[FleetMetrics, CollectorRegistry]) -> None:
    m, reg = fm
    q = ResourceQuantities
    hb = SyncerHeartbeat(
        cluster="c-1",
        timestamp=1000.0,
        sequence=1,
        labels={"region": "eu-west-1", "zone": "eu-west-1a", "provider": "aws"},
        capacity=q(cpu=16, memory=64 << 30, pods=110),
        allocatable=q(cpu=15.5, memory=60 << 30, pods=110),
        used=q(cpu=7.75, memory=15 << 30, pods=55),
        queue_depth=42,
    )
    m.on_heartbeat(hb, now=1000.0)
    m.on_heartbeat(SyncerHeartbeat(cluster="c-1", timestamp=1021.0, sequence=2, queue_depth=7), now=1021.0)
    m.on_heartbeat(SyncerHeartbeat(cluster="c-1", timestamp=1021.0, sequence=2), now=1022.0)  # duplicate
    t = text(reg)
    assert sample(t, "tmc_cluster_capacity", cluster="c-1", resource="cpu") == 0  # the latest heartbeat wins
    assert sample(t, "tmc_syncer_queue_depth", cluster="c-1") == 0
    m.on_heartbeat(msgspec.structs.replace(hb, timestamp=1040.0, sequence=3), now=1040.0)
    t = text(reg)
    assert sample(t, "tmc_cluster_capacity", cluster="c-1", resource="memory") == 64 << 30
    assert sample(t, "tmc_cluster_allocatable", cluster="c-1", resource="cpu") == 15.5
    assert sample(t, "tmc_cluster_utilization_ratio", cluster="c-1", resource="cpu") == 0.5
    assert sample(t, "tmc_cluster_utilization_ratio", cluster="c-1", resource="pods") == 0.5
    assert sample(t, "tmc_cluster_info", cluster="c-1", region="eu-west-1", zone="eu-west-1a", provider="aws") == 1
    assert sample(t, "tmc_syncer_queue_depth", cluster="c-1") == 42
    # gaps 21 s and 19 s observed; the duplicate (same sequence) was not
    assert sample(t, "tmc_syncer_heartbeat_interval_seconds_count", cluster="c-1") == 2
    assert sample(t, "tmc_syncer_heartbeat_interval_seconds_bucket", cluster="c-1", le="20.0") == 1
    assert sample(t, "tmc_syncer_heartbeat_interval_seconds_bucket", cluster="c-1", le="25.0") == 2
    assert sample(t, "tmc_connection_up", cluster="c-1") == 1


def test_info_labels_change_replaces_the_series(fm: tuple[FleetMetrics, CollectorRegistry]) -> None:
    m, reg = fm
    m.on_heartbeat(SyncerHeartbeat(cluster="c-1", timestamp=1.0, labels={"region": "a"}), now=1.0)
    m.on_heartbeat(SyncerHeartbeat(cluster="c-1", timestamp=2.0, labels={"region": "b", "zone": "bad zone!"}), now=2.0)
    info = [line for line in text(reg).splitlines() if line.startswith("tmc_cluster_info{")]
    assert info == ['tmc_cluster_info{cluster="c-1",provider="unknown",region="b",zone="unknown"} 1.0']


def test_connection_transitions(fm: tuple[FleetMetrics, CollectorRegistry]) -> None:
    m, reg = fm
    m.on_connection(ConnectionEvent(cluster="c-1", timestamp=10.0, state="connected"), now=10.0)
    m.on_connection(ConnectionEvent(cluster="c-1", timestamp=20.0, state="disconnected"), now=20.0)
    t = text(reg)
    assert sample(t, "tmc_connection_up", cluster="c-1") == 0
    assert sample(t, "tmc_connection_last_change_timestamp_seconds", cluster="c-1") == 20.0
    assert sample(t, "tmc_connection_reconnects_total", cluster="c-1") == 0
    m.on_connection(ConnectionEvent(cluster="c-1", timestamp=25.0, state="reconnecting", attempt=1), now=25.0)
    m.on_connection(ConnectionEvent(cluster="c-1", timestamp=30.0, state="connected"), now=30.0)
    m.on_connection(ConnectionEvent(cluster="c-1", timestamp=31.0, state="connected"), now=31.0)  # no change
    t = text(reg)
    assert sample(t, "tmc_connection_up", cluster="c-1") == 1
    assert sample(t, "tmc_connection_reconnects_total", cluster="c-1") == 1
    assert sample(t, "tmc_connection_last_change_timestamp_seconds", cluster="c-1") == 30.0


def test_placement_decisions(fm: tuple[FleetMetrics, CollectorRegistry]) -> None:
    m, reg = fm
    first = PlacementDecision(placement="web", timestamp=1.0, selected=["a", "b"], latency_seconds=0.002)
    second = PlacementDecision(placement="web", timestamp=2.0, result="unbound", latency_seconds=0.3)
    for d in (first, second):
        m.on_placement(d)  # from the durable consumer: counted once per deployment
    m.on_selected(second)  # observed by every replica, in any order: the latest decision wins
    m.on_selected(first)
    t = text(reg)
    assert sample(t, "tmc_placement_decisions_total", placement="web", result="bound") == 1
    assert sample(t, "tmc_placement_decisions_total", placement="web", result="unbound") == 1
    assert sample(t, "tmc_placement_selected_clusters", placement="web") == 0
    assert sample(t, "tmc_placement_decision_duration_seconds_count") == 2
    assert sample(t, "tmc_placement_decision_duration_seconds_bucket", le="0.0025") == 1


def test_forget_removes_every_series_of_the_cluster(fm: tuple[FleetMetrics, CollectorRegistry]) -> None:
    m, reg = fm
    for c in ("c-1", "c-2"):
        m.on_sync_events(c, [ev(c, ok=False, error_reason="Timeout"), ev(c, op="status", direction="up")], 1.0)
        m.on_heartbeat(SyncerHeartbeat(cluster=c, timestamp=1.0, labels={"region": "r"}), 1.0)
        m.on_heartbeat(SyncerHeartbeat(cluster=c, timestamp=21.0, sequence=1), 21.0)
        m.on_connection(ConnectionEvent(cluster=c, timestamp=2.0, state="disconnected"), 2.0)
    m.on_heartbeat(SyncerHeartbeat(cluster="c-2", timestamp=5000.0, sequence=9), 5000.0)
    assert m.stale(now=5000.0, forget_after=3600.0) == ["c-1"]
    assert m.sweep(now=5000.0, forget_after=3600.0) == ["c-1"]
    assert not m.forget_if_stale("c-1", now=5000.0, forget_after=3600.0)  # already gone
    t = text(reg)
    assert 'cluster="c-1"' not in t
    assert 'cluster="c-2"' in t
    assert not m.forget("c-1")
    # a forgotten cluster that comes back starts fresh
    m.on_sync_events("c-1", [ev("c-1")], 6000.0)
    assert sample(text(reg), "tmc_syncer_resources_synced_total", cluster="c-1") == 1


def test_label_sanitizers() -> None:
    assert resource_label("apps/v1/deployments") == "apps/v1/deployments"
    assert resource_label("v1/configmaps") == "v1/configmaps"
    assert resource_label("networking.k8s.io/v1/ingresses") == "networking.k8s.io/v1/ingresses"
    for bad in ("", "deployments", 'a"b/v1/x', "APPS/v1/Deployments", "x/" * 200):
        assert resource_label(bad) == "other"
    assert reason_label("") == "Unknown"
    assert reason_label("Conflict") == "Conflict"
    assert reason_label("disk on fire") == "Other"
    assert free_label("eu-west-1") == "eu-west-1"
    assert free_label("") == "unknown"
    assert free_label('x"y') == "unknown"


def test_fast_exposition_matches_prometheus_client_byte_for_byte(fm: tuple[FleetMetrics, CollectorRegistry]) -> None:
    del fm  # a fresh registry of its own below
    reg = CollectorRegistry()
    sm_reg = SelfMetrics(reg)
    fleet = FleetMetrics(reg, sm_reg.event_lag)
    for i in range(5):
        c = f"c-{i}"
        fleet.on_sync_events(c, [ev(c, latency_seconds=0.01 * i, ok=i % 2 == 0, error_reason="NotFound")], 10.0)
        fleet.on_heartbeat(SyncerHeartbeat(cluster=c, timestamp=1.0, labels={"region": "r"}), 1.0)
    fleet.on_placement(PlacementDecision(placement="p", timestamp=1.0))
    sm_reg.events_invalid.labels('we"ird\\kind', "line\nbreak").inc()
    fx = FastExposition(reg)

    def strip_process(b: bytes) -> list[str]:
        return [line for line in b.decode().splitlines() if not line.startswith(("process_", "python_"))]

    for _ in range(2):  # second render uses the cached label strings
        assert strip_process(fx.render()) == strip_process(generate_latest(reg))
        assert strip_process(fx.render(openmetrics=True)) == strip_process(om_generate(reg))
    fleet.forget("c-1")
    assert strip_process(fx.render()) == strip_process(generate_latest(reg))


def test_forget_if_stale_keeps_a_cluster_heard_from_again(fm: tuple[FleetMetrics, CollectorRegistry]) -> None:
    m, _ = fm
    m.on_sync_events("c-1", [ev("c-1")], 1.0)
    assert m.stale(now=5000.0, forget_after=3600.0) == ["c-1"]
    m.on_sync_events("c-1", [ev("c-1")], 4999.0)  # arrives between listing and forgetting
    assert not m.forget_if_stale("c-1", now=5000.0, forget_after=3600.0)
    assert m.forget_if_stale("c-1", now=9000.0, forget_after=3600.0)


def test_older_heartbeats_and_connection_events_change_nothing(fm: tuple[FleetMetrics, CollectorRegistry]) -> None:
    """A replica applies a cluster's last stored heartbeat and connection event at start and
    after a reconnection, possibly after newer live ones: the newest stays."""
    m, reg = fm
    m.on_heartbeat(SyncerHeartbeat(cluster="c-1", timestamp=100.0, sequence=5, queue_depth=9), now=100.0)
    m.on_heartbeat(SyncerHeartbeat(cluster="c-1", timestamp=80.0, sequence=4, queue_depth=1), now=101.0)
    m.on_connection(ConnectionEvent(cluster="c-1", timestamp=90.0, state="disconnected"), now=101.0)
    m.on_connection(ConnectionEvent(cluster="c-1", timestamp=70.0, state="connected"), now=102.0)
    t = text(reg)
    assert sample(t, "tmc_syncer_queue_depth", cluster="c-1") == 9
    assert sample(t, "tmc_syncer_heartbeat_interval_seconds_count", cluster="c-1") == 0
    assert sample(t, "tmc_connection_up", cluster="c-1") == 0
    assert sample(t, "tmc_connection_reconnects_total", cluster="c-1") == 0
    assert sample(t, "tmc_connection_last_change_timestamp_seconds", cluster="c-1") == 90.0
    # a stored message is as old as its timestamp: it does not keep a silent cluster alive
    m.on_heartbeat(SyncerHeartbeat(cluster="c-1", timestamp=100.0, sequence=5, queue_depth=9), now=100.0)
    assert m.stale(now=200.0, forget_after=50.0) == ["c-1"]
