"""Every metric tmcd exports: name, type, labels, buckets and help — the one source for
the registry, ``docs/metrics.md``, the dashboards test and the alert rules test."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from tmcd.metrics.catalog_kube import KUBE_SPECS
from tmcd.metrics.spec import Kind, MetricSpec

__all__ = [
    "BY_NAME",
    "DECISION_DURATION_BUCKETS",
    "EVENT_LAG_BUCKETS",
    "HEARTBEAT_INTERVAL_BUCKETS",
    "SPECS",
    "SYNC_DURATION_BUCKETS",
    "WORKLOAD_DURATION_BUCKETS",
    "WORKLOAD_LABELS",
    "Kind",
    "MetricSpec",
    "create",
    "exported_series_names",
    "spec",
]


def _leader(agent: str, selector: str) -> str:
    """PromQL for a leader-only agent's gauge: the leader's value (see tmcd/metrics/replicas.py)."""
    return f'max without (instance, pod) ({selector} unless on (instance) tmc_leader{{agent="{agent}"}} == 0)'


SYNC_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HEARTBEAT_INTERVAL_BUCKETS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 45.0, 60.0, 120.0, 300.0)
DECISION_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Fine between 0.1 s and 0.5 s, where the freshness objective (p99 < 250 ms) sits: a
# syncer batches for up to 100 ms, so most lags land just above 0.1 s, and with a coarse
# (0.1, 0.25] bucket histogram_quantile(0.99) could only say "about 0.25".  Unlabelled, so
# the extra buckets cost a handful of series.
EVENT_LAG_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# Every 8th bound of the mock service mesh's 129 (1 ms to 10 s, 32 per decade, as it rounds
# them: 6 significant digits), so 4 per decade: the mesh's counts at these bounds are exact.
# All 129 per workload and track would be ~130 series each; the canary analysis reads the
# full histograms from NATS, these are for dashboards (a quantile within about +-30 %).
WORKLOAD_DURATION_BUCKETS = (
    0.001, 0.00177828, 0.00316228, 0.00562341,
    0.01, 0.0177828, 0.0316228, 0.0562341,
    0.1, 0.177828, 0.316228, 0.562341,
    1.0, 1.77828, 3.16228, 5.62341,
    10.0,
)  # fmt: skip
WORKLOAD_LABELS = ("cluster", "namespace", "workload", "track")


SPECS: tuple[MetricSpec, ...] = (
    # -- syncer --
    MetricSpec(
        "tmc_syncer_sync_duration_seconds",
        "histogram",
        "Time from a change being seen to it being applied, per cluster and direction (down: spec, up: status).",
        ("cluster", "direction"),
        SYNC_DURATION_BUCKETS,
        "histogram_quantile(0.99, sum by (le, cluster) "
        '(rate(tmc_syncer_sync_duration_seconds_bucket{direction="down"}[5m])))',
        "syncer",
    ),
    MetricSpec(
        "tmc_syncer_resources_synced_total",
        "counter",
        "Sync attempts (successful or failed), by cluster, resource (group/version/resource, capped per "
        "cluster; the rest is 'other'), operation and direction.",
        ("cluster", "resource", "operation", "direction"),
        example="sum by (cluster) (rate(tmc_syncer_resources_synced_total[5m]))",
        group="syncer",
    ),
    MetricSpec(
        "tmc_syncer_errors_total",
        "counter",
        "Failed syncs, by cluster, resource and reason (known reasons; the rest is 'Other').",
        ("cluster", "resource", "reason"),
        example="sum by (cluster) (rate(tmc_syncer_errors_total[5m])) / sum by (cluster) "
        "(rate(tmc_syncer_resources_synced_total[5m]))",
        group="syncer",
    ),
    MetricSpec(
        "tmc_syncer_queue_depth",
        "gauge",
        "Objects waiting in the syncer's work queue, from its last heartbeat.",
        ("cluster",),
        example="topk(10, max without (instance, pod) (tmc_syncer_queue_depth))",
        group="syncer",
    ),
    MetricSpec(
        "tmc_syncer_heartbeat_interval_seconds",
        "histogram",
        "Observed gap between consecutive heartbeats of a cluster's syncer.",
        ("cluster",),
        HEARTBEAT_INTERVAL_BUCKETS,
        "histogram_quantile(0.9, max without (instance, pod) "
        "(rate(tmc_syncer_heartbeat_interval_seconds_bucket[15m])))",
        "syncer",
    ),
    # -- placement --
    MetricSpec(
        "tmc_placement_decisions_total",
        "counter",
        "Placement decisions, by placement and result (bound, unbound, pending, error).",
        ("placement", "result"),
        example='sum by (placement) (rate(tmc_placement_decisions_total{result!="bound"}[15m]))',
        group="placement",
    ),
    MetricSpec(
        "tmc_placement_decision_duration_seconds",
        "histogram",
        "Time a placement decision took.",
        (),
        DECISION_DURATION_BUCKETS,
        "histogram_quantile(0.99, sum by (le) (rate(tmc_placement_decision_duration_seconds_bucket[5m])))",
        "placement",
    ),
    MetricSpec(
        "tmc_placement_selected_clusters",
        "gauge",
        "Clusters selected by the placement's latest decision.",
        ("placement",),
        example="max without (instance, pod) (tmc_placement_selected_clusters) == 0",
        group="placement",
    ),
    # -- cluster --
    MetricSpec(
        "tmc_cluster_capacity",
        "gauge",
        "Total resources of a cluster: cpu in cores, memory in bytes, pods.",
        ("cluster", "resource"),
        example='sum(max by (cluster) (tmc_cluster_capacity{resource="cpu"}))',
        group="cluster",
    ),
    MetricSpec(
        "tmc_cluster_allocatable",
        "gauge",
        "Resources of a cluster available to workloads: cpu in cores, memory in bytes, pods.",
        ("cluster", "resource"),
        example='max by (cluster) (tmc_cluster_allocatable{resource="memory"})',
        group="cluster",
    ),
    MetricSpec(
        "tmc_cluster_utilization_ratio",
        "gauge",
        "Requested / allocatable per resource (0-1).",
        ("cluster", "resource"),
        example='topk(5, max without (instance, pod) (tmc_cluster_utilization_ratio{resource="cpu"}))',
        group="cluster",
    ),
    MetricSpec(
        "tmc_cluster_info",
        "gauge",
        "Cluster labels: always 1, join on cluster to group by region, zone or provider.",
        ("cluster", "region", "zone", "provider"),
        example="count by (region) (max without (instance, pod) (tmc_cluster_info))",
        group="cluster",
    ),
    # -- health --
    MetricSpec(
        "tmc_cluster_health_status",
        "gauge",
        "Cluster health as a state set: 1 for the current status (Healthy, Degraded, Unhealthy, Unknown), "
        "0 for the others.",
        ("cluster", "status"),
        example="count by (status) (" + _leader("health", "tmc_cluster_health_status") + " == 1)",
        group="health",
    ),
    MetricSpec(
        "tmc_cluster_condition",
        "gauge",
        "Cluster conditions (HeartbeatHealthy, SyncerReady, Ready) as a state set over True, False, Unknown.",
        ("cluster", "condition", "status"),
        example=_leader("health", 'tmc_cluster_condition{condition="Ready",status="False"}') + " == 1",
        group="health",
    ),
    MetricSpec(
        "tmc_cluster_last_heartbeat_timestamp_seconds",
        "gauge",
        "Unix time tmcd received the cluster's last syncer heartbeat.",
        ("cluster",),
        example="time() - " + _leader("health", "tmc_cluster_last_heartbeat_timestamp_seconds") + " > 60",
        group="health",
    ),
    MetricSpec(
        "tmc_health_outbox_pending",
        "gauge",
        "Health events, registry writes and forgets the health agent holds until NATS takes them "
        "(above 0 while NATS is unreachable; bounded, see docs/health.md).",
        example=_leader("health", "max_over_time(tmc_health_outbox_pending[10m])") + " > 0",
        group="health",
    ),
    MetricSpec(
        "tmc_fleet_clusters",
        "gauge",
        "Clusters per health status across the fleet.",
        ("status",),
        example=_leader("health", 'tmc_fleet_clusters{status="Unhealthy"}') + " > 0",
        group="health",
    ),
    # -- connection --
    MetricSpec(
        "tmc_connection_up",
        "gauge",
        "1 while the cluster's syncer is connected to the control plane, else 0.",
        ("cluster",),
        example="max without (instance, pod) (tmc_connection_up) == 0",
        group="connection",
    ),
    MetricSpec(
        "tmc_connection_reconnects_total",
        "counter",
        "Times the syncer reconnected after losing its connection.",
        ("cluster",),
        example="max without (instance, pod) (increase(tmc_connection_reconnects_total[1h])) > 3",
        group="connection",
    ),
    MetricSpec(
        "tmc_connection_last_change_timestamp_seconds",
        "gauge",
        "Unix time of the syncer's last connection state change.",
        ("cluster",),
        example="time() - max without (instance, pod) (tmc_connection_last_change_timestamp_seconds)",
        group="connection",
    ),
    # -- workload --
    MetricSpec(
        "tmc_workload_requests_total",
        "counter",
        "Requests a workload's track (stable, canary) served on a cluster, summed over the service mesh's "
        "WorkloadStats windows (at most metrics.max_workloads_per_cluster workloads per cluster).",
        WORKLOAD_LABELS,
        example='sum by (track) (rate(tmc_workload_requests_total{namespace="shop", workload="checkout"}[5m]))',
        group="workload",
    ),
    MetricSpec(
        "tmc_workload_errors_total",
        "counter",
        "Requests of a workload's track on a cluster that failed (5xx), summed over the mesh's WorkloadStats windows.",
        WORKLOAD_LABELS,
        example='sum by (track) (rate(tmc_workload_errors_total{workload="checkout"}[5m])) / sum by (track) '
        '(rate(tmc_workload_requests_total{workload="checkout"}[5m]))',
        group="workload",
    ),
    MetricSpec(
        "tmc_workload_request_duration_seconds",
        "histogram",
        "Request latency of a workload's track on a cluster, from the mesh's WorkloadStats histograms: each bucket "
        "holds the window's cumulative count at the largest of the mesh's bounds <= its own (within 1 ppm; exact "
        "for the mesh's bounds, of which these are every 8th), _count the requests (windows without a histogram "
        "are left out), _sum the latencies.",
        WORKLOAD_LABELS,
        WORKLOAD_DURATION_BUCKETS,
        "histogram_quantile(0.99, sum by (le, track) "
        '(rate(tmc_workload_request_duration_seconds_bucket{workload="checkout"}[5m])))',
        "workload",
    ),
    MetricSpec(
        "tmc_workload_stats_dropped_total",
        "counter",
        "WorkloadStats windows not exported because their cluster already had metrics.max_workloads_per_cluster "
        "workloads (windows of the workloads already exported are never dropped).",
        ("cluster",),
        example="sum by (cluster) (increase(tmc_workload_stats_dropped_total[1h])) > 0",
        group="workload",
    ),
    # -- tmcd itself --
    MetricSpec(
        "tmc_events_processed_total",
        "counter",
        "Messages decoded and handled, by JetStream stream (or 'core' for plain subscriptions); "
        "a batch counts each of its events.",
        ("stream",),
        example="sum by (stream) (rate(tmc_events_processed_total[5m]))",
    ),
    MetricSpec(
        "tmc_events_invalid_total",
        "counter",
        "Messages rejected as malformed, by message kind and reason; each is dead-lettered to tmc.dead.<subject>. "
        "Every known kind and reason is exported at 0 from start-up.",
        ("kind", "reason"),
        example="sum by (kind, reason) (rate(tmc_events_invalid_total[5m])) > 0",
    ),
    MetricSpec(
        "tmc_event_lag_seconds",
        "histogram",
        "Time from an event's timestamp to tmcd having processed it.",
        (),
        EVENT_LAG_BUCKETS,
        "histogram_quantile(0.99, sum by (le) (rate(tmc_event_lag_seconds_bucket[5m])))",
    ),
    MetricSpec(
        "tmc_consumer_pending_messages",
        "gauge",
        "Messages in a stream not yet delivered to tmcd's durable consumer.",
        ("stream",),
        example="max by (stream) (tmc_consumer_pending_messages)",
    ),
    MetricSpec(
        "tmc_nats_connected",
        "gauge",
        "1 while tmcd is connected to NATS, else 0.",
        example="min(tmc_nats_connected)",
    ),
    MetricSpec(
        "tmc_nats_errors_total",
        "counter",
        "Errors the NATS client reported outside a call, by kind: authorization_violation, "
        "permissions_violation, slow_consumer, stale_connection, timeout or other (each kind is also "
        "logged, at most once a minute).",
        ("kind",),
        example='increase(tmc_nats_errors_total{kind=~"authorization_violation|permissions_violation"}[10m]) > 0',
    ),
    MetricSpec(
        "tmc_dead_letters_dropped_total",
        "counter",
        "Malformed messages not copied to tmc.dead.<subject> because the dead-letter backlog was full "
        "(still counted in tmc_events_invalid_total).",
        example="increase(tmc_dead_letters_dropped_total[10m]) > 0",
    ),
    MetricSpec(
        "tmc_health_check_status",
        "gauge",
        "1 while the named health check passes, 0 while it fails.",
        ("check",),
        example="tmc_health_check_status == 0",
        group="tmcd",
    ),
    MetricSpec(
        "tmc_agent_restarts_total",
        "counter",
        "Times an agent crashed and was restarted.",
        ("agent",),
        example="increase(tmc_agent_restarts_total[15m]) > 0",
    ),
    MetricSpec(
        "tmc_leader",
        "gauge",
        "1 while this replica holds the agent's leader lease (the agent acts here), 0 while another "
        "replica does; only for the leader-only agents (health, placement, canary, rollback, kube).",
        ("agent",),
        example="sum by (job, agent) (tmc_leader) != 1",
    ),
    # -- canary --
    MetricSpec(
        "tmc_canary_phase",
        "gauge",
        "Phase of each canary rollout as a state set: 1 for the current phase, 0 for the others.",
        ("namespace", "name", "phase"),
        example="count by (phase) (" + _leader("canary", "tmc_canary_phase") + " == 1)",
        group="canary",
    ),
    MetricSpec(
        "tmc_canary_weight",
        "gauge",
        "Percent of the route's traffic the canary gets on its clusters, as last set.",
        ("namespace", "name"),
        example=_leader("canary", 'tmc_canary_weight{namespace="shop"}'),
        group="canary",
    ),
    MetricSpec(
        "tmc_canary_applied_weight",
        "gauge",
        "Percent of traffic the traffic router reports as applied to the canary (lowest over its clusters).",
        ("namespace", "name"),
        example=_leader("canary", "tmc_canary_weight - tmc_canary_applied_weight") + " != 0",
        group="canary",
    ),
    MetricSpec(
        "tmc_canary_step",
        "gauge",
        "Current step of each canary rollout, counted from 1 (steps + 1 once every step is done).",
        ("namespace", "name"),
        example=_leader("canary", 'tmc_canary_step{name="checkout"}'),
        group="canary",
    ),
    MetricSpec(
        "tmc_canary_clusters",
        "gauge",
        "Clusters running the canary.",
        ("namespace", "name"),
        example="sum(" + _leader("canary", "tmc_canary_clusters") + ")",
        group="canary",
    ),
    MetricSpec(
        "tmc_canary_analysis_total",
        "counter",
        "Analysis measurements taken, by metric and result (Successful, Failed, Inconclusive, Error).",
        ("namespace", "name", "metric", "result"),
        example='sum by (name, metric) (increase(tmc_canary_analysis_total{result="Failed"}[1h]))',
        group="canary",
    ),
    MetricSpec(
        "tmc_canary_analysis_value",
        "gauge",
        "The last measured value of an analysis metric, per track (canary, stable; value when the "
        "provider returns one number).",
        ("namespace", "name", "metric", "track"),
        example=_leader("canary", 'tmc_canary_analysis_value{metric="error-ratio"}'),
        group="canary",
    ),
    MetricSpec(
        "tmc_canary_rollbacks_total",
        "counter",
        "Canary rollouts rolled back, by reason (AnalysisFailed, ProgressDeadlineExceeded, Aborted, ...).",
        ("namespace", "name", "reason"),
        example="sum by (namespace, name, reason) (increase(tmc_canary_rollbacks_total[1h]))",
        group="canary",
    ),
    MetricSpec(
        "tmc_canary_duration_seconds",
        "histogram",
        "Time from a rollout's start to its end, by result (Succeeded, RolledBack).",
        ("result",),
        (60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0),
        'histogram_quantile(0.9, sum by (le) (rate(tmc_canary_duration_seconds_bucket{result="Succeeded"}[1d])))',
        group="canary",
    ),
    MetricSpec(
        "tmc_rollbacks_total",
        "counter",
        "Rollbacks that ended, by trigger (AnalysisFailed, ProgressDeadlineExceeded, ClusterUnhealthy, Aborted, "
        "Manual) and result (Completed, Failed).",
        ("namespace", "name", "trigger", "result"),
        example="sum by (trigger) (increase(tmc_rollbacks_total[1d]))",
        group="canary",
    ),
    MetricSpec(
        "tmc_rollback_duration_seconds",
        "histogram",
        "Time from a rollback's decision to each stage: traffic (100 % stable acknowledged by the router), "
        "placement, cleanup, completed.",
        ("stage",),
        (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
        'histogram_quantile(0.99, sum by (le) (rate(tmc_rollback_duration_seconds_bucket{stage="traffic"}[1d])))',
        group="canary",
    ),
    *KUBE_SPECS,
    MetricSpec(
        "tmc_build_info",
        "info",
        "tmcd build information: version, and which per-event aggregation the metrics agent runs "
        "(speedups: c, the C extension, or python; python after a C failure or with TMCD_NO_SPEEDUPS).",
        ("version", "speedups"),
        example="count by (version, speedups) (tmc_build_info)",
    ),
)
"""Every tmc_* metric."""

BY_NAME: dict[str, MetricSpec] = {s.name: s for s in SPECS}


def spec(name: str) -> MetricSpec:
    """The spec of a metric by its scraped name."""
    return BY_NAME[name]


def create(name: str, registry: CollectorRegistry) -> MetricWrapperBase:
    """Create the prometheus-client metric for a spec on ``registry``."""
    s = BY_NAME[name]
    if s.kind == "counter":
        return Counter(s.base, s.help, s.labels, registry=registry)
    if s.kind == "gauge":
        return Gauge(s.base, s.help, s.labels, registry=registry)
    if s.kind == "histogram":
        return Histogram(s.base, s.help, s.labels, registry=registry, buckets=s.buckets)
    raise ValueError(f"{name}: create info metrics with prometheus_client.Info")


def exported_series_names() -> set[str]:
    """Every sample name tmcd's own metrics can produce (for dashboard and alert checks)."""
    return {n for s in SPECS for n in s.series_names}
