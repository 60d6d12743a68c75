"""One realistic example of every message, and a subject that carries it.

The examples feed the AsyncAPI document (``components.messages.*.examples``), the
contract tests and anyone who wants a valid payload to start from.  They describe one
small fleet: clusters ``sim-001`` .. ``sim-003`` with a ``checkout`` workload in the
``shop`` namespace being canaried.
"""

from __future__ import annotations

from typing import TypeVar, cast

from tmcd.contracts import messages as m
from tmcd.contracts.subjects import Channel

M = TypeVar("M", bound=m.Message)

T0 = 1764160000.0
"""The instant the examples are taken at (2025-11-26T12:26:40Z)."""

GIB = 1024**3

_LABELS = {"region": "eu-west", "zone": "eu-west-1a", "provider": "aws"}

EXAMPLES: dict[type[m.Message], m.Message] = {
    m.SyncerHeartbeat: m.SyncerHeartbeat(
        cluster="sim-001",
        timestamp=T0,
        sequence=4321,
        interval_seconds=20.0,
        labels=dict(_LABELS),
        capacity=m.ResourceQuantities(cpu=64.0, memory=256 * GIB, pods=1100),
        allocatable=m.ResourceQuantities(cpu=62.5, memory=250 * GIB, pods=1100),
        used=m.ResourceQuantities(cpu=37.25, memory=132 * GIB, pods=412),
        queue_depth=3,
        synced_resources=[
            "apps/v1/deployments",
            "v1/services",
            "v1/configmaps",
            "v1/secrets",
            "networking.k8s.io/v1/ingresses",
        ],
        connected=True,
        paused=False,
        syncer_version="v0.11.0",
    ),
    m.SyncEvent: m.SyncEvent(
        cluster="sim-001",
        timestamp=T0 + 1.25,
        resource="apps/v1/deployments",
        namespace="shop",
        name="checkout",
        op="update",
        direction="down",
        latency_seconds=0.042,
        ok=True,
    ),
    m.SyncEventBatch: m.SyncEventBatch(
        cluster="sim-002",
        timestamp=T0 + 1.5,
        events=[
            m.SyncEvent(
                cluster="sim-002",
                timestamp=T0 + 1.41,
                resource="v1/configmaps",
                namespace="shop",
                name="checkout-config",
                op="update",
                direction="down",
                latency_seconds=0.018,
            ),
            m.SyncEvent(
                cluster="sim-002",
                timestamp=T0 + 1.47,
                resource="apps/v1/deployments",
                namespace="shop",
                name="checkout",
                op="status",
                direction="up",
                latency_seconds=0.35,
                ok=False,
                error_reason="Conflict",
            ),
        ],
    ),
    m.ConnectionEvent: m.ConnectionEvent(
        cluster="sim-003",
        timestamp=T0 + 2.5,
        state="reconnecting",
        reason="control plane watch closed: EOF",
        attempt=2,
    ),
    m.PlacementDecision: m.PlacementDecision(
        placement="checkout-eu",
        timestamp=T0 + 3.0,
        result="bound",
        selected=["sim-001", "sim-002"],
        candidates=[
            m.CandidateScore(cluster="sim-001", score=0.87, selected=True, reason="Selected"),
            m.CandidateScore(cluster="sim-002", score=0.64, selected=True, reason="Selected"),
            m.CandidateScore(cluster="sim-003", score=0.0, selected=False, reason="Unhealthy"),
        ],
        latency_seconds=0.0031,
        decided_by="scheduler",
    ),
    m.WorkloadStats: m.WorkloadStats(
        cluster="sim-001",
        namespace="shop",
        workload="checkout",
        track="canary",
        timestamp=T0 + 10.0,
        window_seconds=10.0,
        requests=1250,
        errors=3,
        latency=m.LatencyHistogram(
            bounds=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
            counts=[180, 512, 903, 1130, 1214, 1240, 1247, 1250],
            sum_seconds=40.125,
        ),
    ),
    m.HealthChange: m.HealthChange(
        kind="cluster",
        name="sim-003",
        timestamp=T0 + 65.0,
        from_status="Healthy",
        to_status="Unhealthy",
        reason="HeartbeatMissed",
        message="no heartbeat for 65s (3 intervals of 20s)",
        failing_checks=["heartbeat", "connected"],
    ),
    m.CanaryEvent: m.CanaryEvent(
        namespace="shop",
        name="checkout",
        timestamp=T0 + 70.0,
        type="analysis",
        phase="Progressing",
        step_index=2,
        revision=7,
        message="canary error rate 0.24% within threshold 1.00%",
        evidence={
            "metric": "error_rate",
            "threshold": 0.01,
            "canary": {"requests": 1250, "errors": 3, "rate": 0.0024},
            "stable": {"requests": 5010, "errors": 11, "rate": 0.0022},
            "passed": True,
        },
    ),
    m.RollbackEvent: m.RollbackEvent(
        namespace="shop",
        name="checkout",
        timestamp=T0 + 130.0,
        stage="traffic",
        from_revision=7,
        to_revision=6,
        reason="analysis failed: canary p99 latency 1.8s above 0.5s",
    ),
    m.TrafficWeights: m.TrafficWeights(
        namespace="shop",
        route="checkout",
        timestamp=T0 + 60.0,
        weights={"stable": 80, "canary": 20},
        clusters=["sim-001", "sim-002"],
        generation=12,
        workload="checkout-api",
    ),
    m.TrafficApplied: m.TrafficApplied(
        namespace="shop",
        route="checkout",
        timestamp=T0 + 60.2,
        generation=12,
        weights={"sim-001": {"stable": 80, "canary": 20}, "sim-002": {"stable": 80, "canary": 20}},
        applied_by="mesh",
    ),
    m.SyncControl: m.SyncControl(
        cluster="sim-002",
        action="pause",
        timestamp=T0 + 200.0,
        requested_by="kubectl-tmc/alice",
        reason="node pool upgrade",
    ),
    m.CanaryControl: m.CanaryControl(
        namespace="shop",
        name="checkout",
        action="promote",
        timestamp=T0 + 300.0,
        full=False,
        requested_by="dashboard/bob",
        reason="metrics look good",
    ),
    m.RollbackControl: m.RollbackControl(
        namespace="shop",
        name="checkout",
        timestamp=T0 + 600.0,
        to_revision=3,
        requested_by="kubectl-tmc/alice",
        reason="v2.4 leaks memory",
    ),
    m.ControlReply: m.ControlReply(
        ok=True,
        target="sim-002",
        message="syncer paused",
        code=200,
        state="paused",
        timestamp=T0 + 200.5,
    ),
    m.HealthQuery: m.HealthQuery(location="eu-west-1", include_clusters=True),
    m.HealthReport: m.HealthReport(
        timestamp=T0 + 300.0,
        location_label="region",
        fleet=m.HealthNode(
            name="fleet", status="Degraded", counts={"Healthy": 2, "Degraded": 0, "Unhealthy": 1, "Unknown": 0}
        ),
        locations=[
            m.HealthNode(
                name="eu-west-1",
                status="Degraded",
                counts={"Healthy": 1, "Degraded": 0, "Unhealthy": 1, "Unknown": 0},
                clusters=[
                    m.ClusterHealthSummary(
                        name="sim-001", status="Healthy", reason="AsExpected", since=T0, last_heartbeat=T0 + 290.0
                    ),
                    m.ClusterHealthSummary(
                        name="sim-003",
                        status="Unhealthy",
                        reason="HeartbeatMissed",
                        failing=["HeartbeatHealthy"],
                        since=T0 + 120.0,
                        last_heartbeat=T0 + 20.0,
                    ),
                ],
            ),
            m.HealthNode(
                name="us-east-1",
                status="Healthy",
                counts={"Healthy": 1, "Degraded": 0, "Unhealthy": 0, "Unknown": 0},
                clusters=[
                    m.ClusterHealthSummary(
                        name="sim-002", status="Healthy", reason="AsExpected", since=T0, last_heartbeat=T0 + 295.0
                    )
                ],
            ),
        ],
    ),
}
"""One example instance per message type in :data:`tmcd.contracts.messages.ALL_MESSAGES`."""


def example(tp: type[M]) -> M:
    """The example instance of message type ``tp``; raises KeyError if there is none."""
    return cast(M, EXAMPLES[tp])


def example_params(channel: Channel) -> dict[str, str]:
    """Subject parameters for ``channel`` consistent with the example of its message.

    A parameter bound to a payload field takes that field's value; an unbound one takes
    the first allowed value of an enum parameter, else ``example``.
    """
    msg = EXAMPLES[channel.message]
    params: dict[str, str] = {}
    for param in channel.params:
        field_name = channel.bind.get(param)
        if field_name is not None:
            params[param] = str(getattr(msg, field_name))
        elif param in channel.enums:
            params[param] = channel.enums[param][0]
        else:
            params[param] = "example"
    return params


def example_subject(channel: Channel) -> str:
    """A concrete subject of ``channel`` that carries the example of its message."""
    return channel.build(**example_params(channel))
