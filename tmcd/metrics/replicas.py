"""How each metric adds up over tmcd replicas (several ``tmcd run`` with one
``consumer.durable_prefix``), and the PromQL that follows from it: the source of the "across
replicas" column of ``docs/metrics.md`` and of the checks on the dashboards and alert rules."""

from __future__ import annotations

from typing import Literal

from tmcd.metrics.catalog import MetricSpec

Across = Literal["split", "same", "leader", "replica"]
"""split: each event is counted by the one replica that consumed it (sum the replicas);
same: every replica observes every message and exports the same value (take the max);
leader: exported by the replica leading the agent (filter on tmc_leader, then take the max);
replica: about the replica itself (per instance)."""

SAME: frozenset[str] = frozenset(
    {
        "tmc_syncer_queue_depth",
        "tmc_syncer_heartbeat_interval_seconds",
        "tmc_placement_selected_clusters",
        "tmc_consumer_pending_messages",  # the shared durable consumer's backlog, as each replica reads it
    }
)
SPLIT_SELF: frozenset[str] = frozenset(
    {"tmc_events_processed_total", "tmc_events_invalid_total", "tmc_event_lag_seconds"}
)
"""tmcd's own metrics of the events it consumed: split like the events."""
LEADERS = {"health": "health", "canary": "canary", "kube": "kube"}
"""Catalog group -> the leader-only agent exporting it."""
ROLLBACK: frozenset[str] = frozenset({"tmc_rollbacks_total", "tmc_rollback_duration_seconds"})


def across(spec: MetricSpec) -> Across:
    """How ``spec``'s series add up over replicas."""
    if spec.name in SAME or spec.group in ("cluster", "connection"):
        return "same"
    if spec.group in LEADERS:
        return "leader"
    if spec.group == "tmcd":
        return "split" if spec.name in SPLIT_SELF else "replica"
    return "split"


def leader_agent(spec: MetricSpec) -> str:
    """The leader-only agent that exports a ``leader`` metric."""
    return "rollback" if spec.name in ROLLBACK else LEADERS[spec.group]


def leader_filter(agent: str) -> str:
    """The PromQL that leaves out replicas following ``agent`` (a former leader keeps its last values)."""
    return f'unless on (instance) tmc_leader{{agent="{agent}"}} == 0'


def describe(spec: MetricSpec) -> str:
    """The "across replicas" cell of docs/metrics.md."""
    if spec.name == "tmc_leader":
        return "sum by (agent)"
    how = across(spec)
    counted = spec.kind in ("counter", "histogram")
    if how == "split":
        return "sum"
    if how == "same":
        return "max"
    if how == "leader":
        agent = leader_agent(spec)
        return f"sum ({agent} leader)" if counted else f"max, {agent} leader"
    return "per replica"


DOC = """
## Several replicas

Several `tmcd run` processes with one `consumer.durable_prefix` share the work (see
docs/architecture.md, "Replicas and leader election"). What each replica's `/metrics` holds
depends on where a series comes from; the column "across replicas" above says how to add
them up, and the dashboards in `config/grafana/` and the alert rules in `config/prometheus/`
do so (a test checks every expression):

- **sum** — sync events, placement decisions, WorkloadStats windows, and tmcd's counts of
  the messages it consumed (`tmc_events_processed_total`, `tmc_events_invalid_total`,
  `tmc_event_lag_seconds`) come through the shared durable consumers: each message is
  counted by the one replica that consumed it. Sum over replicas, and keep `le` for
  quantiles: `sum without (instance, pod) (rate(tmc_syncer_resources_synced_total[5m]))`,
  `histogram_quantile(0.99, sum by (le, cluster) (rate(tmc_syncer_sync_duration_seconds_bucket[5m])))`.
- **max** — cluster state (capacity, allocatable, utilisation, queue depth, cluster info,
  connection state and reconnects, heartbeat gaps) and each placement's selected clusters:
  every replica reads every heartbeat, connection event and placement decision through a
  reader of its own (the durable consumer acks and counts them but does not apply them
  again), so every replica exports the same values. Take one: `max without (instance, pod)
  (tmc_syncer_queue_depth)`, `histogram_quantile(0.9, max without (instance, pod)
  (rate(tmc_syncer_heartbeat_interval_seconds_bucket[15m])))`. `sum` would count each
  cluster once per replica. A replica that starts (or reconnects to NATS) reads the last
  heartbeat, connection event and decision of every cluster and placement from the streams,
  so it has the gauges at once; what it missed in between is not replayed: a reconnect that
  happened while it was down is in `tmc_connection_reconnects_total` of the replicas that saw
  it (hence `max`), and heartbeat gaps it did not see are not observed.
  `tmc_consumer_pending_messages` is the shared consumer's backlog: `max by (stream)`.
- **leader** — health and canary series (`tmc_cluster_health_status`, `tmc_canary_phase`,
  ...) come from the replica leading the agent; a replica that stopped leading keeps its
  last values. Leave the followers out, then drop the instance:
  `max without (instance, pod) (tmc_cluster_health_status unless on (instance) tmc_leader{agent="health"} == 0)`
  (with `leader.enabled = false` there is no `tmc_leader` and nothing is left out). Their
  counters and histograms only grow on the leader of the time: sum them.
- **per replica** — tmcd's own state: `tmc_nats_connected`, `tmc_health_check_status`,
  `tmc_agent_restarts_total`, `tmc_nats_errors_total`, `tmc_dead_letters_dropped_total`,
  `tmc_build_info`. An operator wants to know *which* replica is cut off from NATS, failing
  a check or crashing, so these are read (and alerted on) per `instance`.
- `tmc_leader{agent}` is 1 on the replica leading the agent: `sum by (agent) (tmc_leader)`
  is 1 in a healthy deployment (the `TmcLeaderCount` alert fires when it is not; it sums
  `by (job, agent)`, so two deployments scraped as two jobs do not add up).
"""
