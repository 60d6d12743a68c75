"""Every message that travels on a tmc.* subject, as msgspec Structs.

Wire names are stable.  Each message carries a ``schema`` version; a receiver rejects a
version it does not know (see :func:`tmcd.contracts.codec.decode`) and ignores unknown
fields, so producers may add optional fields without a version bump.  Timestamps are Unix
time in seconds (float), which is cheap to decode and to subtract for lag.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

SCHEMA_VERSION = 1
"""The message schema version this build writes and the highest one it reads."""

Schema = Annotated[
    int,
    Meta(ge=1, description="Message schema version; receivers reject versions they do not know."),
]
# 9999-12-31T23:59:59Z, the last instant RFC 3339 (and datetime) can write: tmcd writes timestamps down
MAX_TIMESTAMP = 253402300799.0
Timestamp = Annotated[float, Meta(ge=0, le=MAX_TIMESTAMP, description="Unix time in seconds when this was observed.")]
# No regex here (it would run for every event of a batch): a cluster name is checked as
# a DNS-1123 label where it matters, as the subject token the payload must equal.
Cluster = Annotated[
    str,
    Meta(min_length=1, max_length=63, description="Cluster (SyncTarget) name, a DNS-1123 label."),
]


class Message(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=False):
    """Base of all tmc messages."""

    KIND: ClassVar[str] = "message"

    schema: Schema = SCHEMA_VERSION


class ResourceQuantities(msgspec.Struct, kw_only=True, frozen=True):
    """Amounts of the resources a cluster schedules, in base units."""

    cpu: Annotated[float, Meta(ge=0, description="CPU in cores.")] = 0.0
    memory: Annotated[int, Meta(ge=0, description="Memory in bytes.")] = 0
    pods: Annotated[int, Meta(ge=0, description="Number of pods.")] = 0


class SyncerHeartbeat(Message, frozen=True):
    """Periodic proof of life from a cluster's syncer, with the cluster's capacity."""

    KIND: ClassVar[str] = "syncer_heartbeat"

    cluster: Cluster
    timestamp: Timestamp
    sequence: Annotated[int, Meta(ge=0, description="Heartbeat counter since the syncer started.")] = 0
    interval_seconds: Annotated[float, Meta(gt=0, description="The period the syncer heartbeats at, in seconds.")] = (
        20.0
    )
    labels: Annotated[dict[str, str], Meta(description="Cluster labels (region, zone, provider, ...).")] = (
        msgspec.field(default_factory=dict)
    )
    capacity: Annotated[ResourceQuantities, Meta(description="Total resources of the cluster.")] = msgspec.field(
        default_factory=ResourceQuantities
    )
    allocatable: Annotated[ResourceQuantities, Meta(description="Resources available to workloads.")] = msgspec.field(
        default_factory=ResourceQuantities
    )
    used: Annotated[ResourceQuantities, Meta(description="Resources requested by running workloads.")] = msgspec.field(
        default_factory=ResourceQuantities
    )
    queue_depth: Annotated[int, Meta(ge=0, description="Objects waiting in the syncer's work queue.")] = 0
    synced_resources: Annotated[
        list[str], Meta(description="Resources the syncer syncs, as group/version/resource.")
    ] = msgspec.field(default_factory=list)
    connected: Annotated[bool, Meta(description="Whether the syncer is connected to the control plane.")] = True
    paused: Annotated[bool, Meta(description="Whether syncing is paused on this cluster.")] = False
    syncer_version: Annotated[str, Meta(description="Version of the syncer binary.")] = ""


SyncOp = Literal["create", "update", "delete", "status"]
SyncDirection = Literal["down", "up"]


class SyncEvent(Message, frozen=True, gc=False):
    """One object synced (or failed to sync) between the control plane and a cluster."""

    KIND: ClassVar[str] = "sync_event"

    cluster: Cluster
    timestamp: Timestamp
    resource: Annotated[str, Meta(min_length=1, description="group/version/resource, e.g. apps/v1/deployments.")]
    namespace: Annotated[str, Meta(description="Namespace of the object; empty if cluster-scoped.")] = ""
    name: Annotated[str, Meta(description="Name of the object.")] = ""
    op: Annotated[SyncOp, Meta(description="What the syncer did to the object.")] = "update"
    direction: Annotated[
        SyncDirection,
        Meta(description="down: spec to the cluster; up: status to the control plane."),
    ] = "down"
    latency_seconds: Annotated[
        float, Meta(ge=0, description="Time from the change being seen to it being applied.")
    ] = 0.0
    ok: Annotated[bool, Meta(description="Whether the sync succeeded.")] = True
    error_reason: Annotated[str, Meta(description="Short machine-readable reason when ok is false, e.g. Conflict.")] = (
        ""
    )


class SyncEventBatch(Message, frozen=True, gc=False):
    """Many sync events of one cluster in one message, as a syncer flushes them
    (every 100 ms or every 500 events); every event's cluster equals the batch's."""

    KIND: ClassVar[str] = "sync_event_batch"

    cluster: Cluster
    timestamp: Timestamp
    events: Annotated[list[SyncEvent], Meta(description="The events, oldest first.")] = msgspec.field(
        default_factory=list
    )


ConnectionState = Literal["connected", "disconnected", "reconnecting"]


class ConnectionEvent(Message, frozen=True):
    """A change in the syncer's connection to the control plane."""

    KIND: ClassVar[str] = "connection_event"

    cluster: Cluster
    timestamp: Timestamp
    state: Annotated[ConnectionState, Meta(description="The new connection state.")]
    reason: Annotated[str, Meta(description="Why the state changed.")] = ""
    attempt: Annotated[int, Meta(ge=0, description="Reconnect attempt number, 0 when connected.")] = 0


class CandidateScore(msgspec.Struct, kw_only=True, frozen=True):
    """How the placement engine judged one candidate cluster."""

    cluster: Cluster
    score: Annotated[float, Meta(description="Higher is better; comparable within one decision.")] = 0.0
    selected: Annotated[bool, Meta(description="Whether the cluster was chosen.")] = False
    reason: Annotated[
        str,
        Meta(description="Why it was or was not chosen (Selected, Unhealthy, LabelMismatch, ...)."),
    ] = ""


PlacementResult = Literal["bound", "unbound", "pending", "error"]


class PlacementDecision(Message, frozen=True):
    """The outcome of one placement decision, with every candidate's score and reason."""

    KIND: ClassVar[str] = "placement_decision"

    placement: Annotated[str, Meta(min_length=1, description="Placement name.")]
    timestamp: Timestamp
    result: Annotated[PlacementResult, Meta(description="bound, unbound, pending or error.")] = "bound"
    selected: Annotated[list[str], Meta(description="Names of the chosen clusters.")] = msgspec.field(
        default_factory=list
    )
    candidates: Annotated[list[CandidateScore], Meta(description="Every candidate considered, chosen or not.")] = (
        msgspec.field(default_factory=list)
    )
    latency_seconds: Annotated[float, Meta(ge=0, description="Time the decision took.")] = 0.0
    decided_by: Annotated[str, Meta(description="scheduler, canary or simulation.")] = "scheduler"


Track = Literal["stable", "canary"]


class LatencyHistogram(msgspec.Struct, kw_only=True, frozen=True):
    """Cumulative latency histogram: counts[i] requests took at most bounds[i] seconds."""

    bounds: Annotated[list[float], Meta(description="Upper bounds in seconds, ascending.")] = msgspec.field(
        default_factory=list
    )
    counts: Annotated[list[int], Meta(description="Cumulative counts, one per bound.")] = msgspec.field(
        default_factory=list
    )
    sum_seconds: Annotated[float, Meta(ge=0, description="Sum of all latencies.")] = 0.0


class WorkloadStats(Message, frozen=True):
    """Request statistics of one workload track on one cluster for one window."""

    KIND: ClassVar[str] = "workload_stats"

    cluster: Cluster
    namespace: Annotated[str, Meta(min_length=1, description="Workload namespace.")]
    workload: Annotated[str, Meta(min_length=1, description="Workload name.")]
    track: Annotated[Track, Meta(description="stable or canary.")]
    timestamp: Timestamp
    window_seconds: Annotated[float, Meta(gt=0, description="Length of the window the counts cover.")] = 10.0
    requests: Annotated[int, Meta(ge=0, description="Requests served in the window.")] = 0
    errors: Annotated[int, Meta(ge=0, description="Requests that failed (5xx) in the window.")] = 0
    latency: Annotated[LatencyHistogram, Meta(description="Latency distribution of the window's requests.")] = (
        msgspec.field(default_factory=LatencyHistogram)
    )


HealthStatus = Literal["Healthy", "Degraded", "Unhealthy", "Unknown"]
HealthKind = Literal["cluster", "placement", "location", "fleet", "component"]


class HealthChange(Message, frozen=True):
    """A health status transition (published only when the status changes)."""

    KIND: ClassVar[str] = "health_change"

    kind: Annotated[
        HealthKind,
        Meta(description="What changed: cluster, placement, location, fleet, component."),
    ]
    name: Annotated[str, Meta(min_length=1, description="Name of the thing whose health changed.")]
    timestamp: Timestamp
    from_status: Annotated[HealthStatus, Meta(description="Previous status.")] = msgspec.field(
        default="Unknown", name="from"
    )
    to_status: Annotated[HealthStatus, Meta(description="New status.")] = msgspec.field(default="Unknown", name="to")
    reason: Annotated[str, Meta(description="Machine-readable reason, e.g. HeartbeatMissed.")] = ""
    message: Annotated[str, Meta(description="Human-readable explanation.")] = ""
    failing_checks: Annotated[list[str], Meta(description="Names of the checks or conditions that are failing.")] = (
        msgspec.field(default_factory=list, name="checks")
    )


CanaryEventType = Literal["phase", "step", "analysis", "decision"]


class CanaryEvent(Message, frozen=True):
    """A canary rollout's phase or step change, analysis result or decision, with evidence."""

    KIND: ClassVar[str] = "canary_event"

    namespace: Annotated[str, Meta(min_length=1, description="Rollout namespace.")]
    name: Annotated[str, Meta(min_length=1, description="Rollout name.")]
    timestamp: Timestamp
    type: Annotated[CanaryEventType, Meta(description="phase, step, analysis or decision.")]
    phase: Annotated[str, Meta(description="Rollout phase after the event.")] = ""
    step_index: Annotated[int, Meta(ge=-1, description="Current step, -1 before the first.")] = -1
    revision: Annotated[int, Meta(ge=0, description="Rollout revision the event belongs to.")] = 0
    message: Annotated[str, Meta(description="Human-readable summary.")] = ""
    evidence: Annotated[dict[str, Any], Meta(description="Samples, statistics and thresholds behind a decision.")] = (
        msgspec.field(default_factory=dict)
    )


RollbackStage = Literal["started", "traffic", "placement", "cleanup", "completed", "failed"]


class RollbackEvent(Message, frozen=True):
    """Progress of a rollback: traffic reversal first, then placement, then cleanup."""

    KIND: ClassVar[str] = "rollback_event"

    namespace: Annotated[str, Meta(min_length=1, description="Rollout namespace.")]
    name: Annotated[str, Meta(min_length=1, description="Rollout name.")]
    timestamp: Timestamp
    stage: Annotated[RollbackStage, Meta(description="Stage reached.")]
    from_revision: Annotated[int, Meta(ge=0, description="Revision rolled back from.")] = 0
    to_revision: Annotated[int, Meta(ge=0, description="Revision restored.")] = 0
    reason: Annotated[str, Meta(description="Why the rollback happened.")] = ""
    trigger: Annotated[
        str,
        Meta(
            description="What started it: AnalysisFailed, ProgressDeadlineExceeded, ClusterUnhealthy, Aborted "
            "or Manual (a rollback to a revision)."
        ),
    ] = ""
    clusters: Annotated[list[str], Meta(description="The clusters the stage acted on.")] = msgspec.field(
        default_factory=list
    )
    seconds: Annotated[float, Meta(ge=0, description="How long the stage took.")] = 0.0


TRACKS: tuple[str, ...] = ("stable", "canary")
"""The tracks a route splits its traffic between."""

# The workload name becomes a subject token of the mesh's WorkloadStats; empty is allowed.
_OPTIONAL_LABEL = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$"


class TrafficWeights(Message, frozen=True):
    """Desired traffic split of a route between the stable and canary tracks: the route's whole desired state.

    The named ``clusters`` get ``weights``; every other cluster gets 100 % stable.  Empty
    ``clusters`` means every cluster gets ``weights``.  A receiver drops a message whose
    ``generation`` is older than the one it applied last for the route (an equal one is
    applied again, which changes nothing), and reports what it applied as a TrafficApplied.
    Stored in TMC_TRAFFIC, last message per route, so a data plane that starts reads the
    current desired state of every route.
    """

    KIND: ClassVar[str] = "traffic_weights"

    namespace: Annotated[str, Meta(min_length=1, description="Route namespace.")]
    route: Annotated[str, Meta(min_length=1, description="Route name.")]
    timestamp: Timestamp
    weights: Annotated[
        dict[str, Annotated[int, Meta(ge=0, le=100)]],
        Meta(description="Percent of traffic per track (stable, canary); sums to 100. A missing track gets 0."),
    ] = msgspec.field(default_factory=lambda: {"stable": 100, "canary": 0})
    clusters: Annotated[
        list[str],
        Meta(description="Clusters that get these weights; every other cluster gets 100 % stable. Empty: all."),
    ] = msgspec.field(default_factory=list)
    generation: Annotated[int, Meta(ge=0, description="Increases with every change; receivers drop older ones.")] = 0
    workload: Annotated[
        str,
        Meta(
            max_length=63,
            pattern=_OPTIONAL_LABEL,
            description="Workload the route serves (its tmc.workload subjects' <workload>); empty: the route name.",
        ),
    ] = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(TRACKS))
        if unknown:
            raise ValueError(f"weights: unknown track {unknown[0]!r} (expected stable, canary)")
        if sum(self.weights.values()) != 100:
            raise ValueError(f"weights: must sum to 100, got {sum(self.weights.values())}")

    @property
    def canary_percent(self) -> int:
        """Percent of traffic to the canary on the named clusters."""
        return self.weights.get("canary", 0)

    @property
    def workload_name(self) -> str:
        """The workload, defaulting to the route name."""
        return self.workload or self.route


class TrafficApplied(Message, frozen=True):
    """The weights a data plane applied for a route, reported after each TrafficWeights it applied.

    ``weights`` holds the clusters the TrafficWeights named (every cluster the data plane
    serves when it named none); every other cluster is 100 % stable.  Stored in TMC_TRAFFIC,
    last report per route, so a router reads it back after a restart; reported again (same
    generation and weights) when ``unrouted_requests`` grows.
    """

    KIND: ClassVar[str] = "traffic_applied"

    namespace: Annotated[str, Meta(min_length=1, description="Route namespace.")]
    route: Annotated[str, Meta(min_length=1, description="Route name.")]
    timestamp: Timestamp
    generation: Annotated[int, Meta(ge=0, description="Generation of the TrafficWeights applied.")] = 0
    weights: Annotated[
        dict[str, dict[str, Annotated[int, Meta(ge=0, le=100)]]],
        Meta(description="Cluster -> percent of traffic per track (stable, canary) now in effect there."),
    ] = msgspec.field(default_factory=dict)
    unknown_clusters: Annotated[
        list[str], Meta(description="Named clusters this data plane does not serve: nothing was applied there.")
    ] = msgspec.field(default_factory=list)
    applied_by: Annotated[str, Meta(description="What applied them, e.g. mesh (the mock service mesh).")] = ""
    unrouted_requests: Annotated[
        int,
        Meta(ge=0, description="Requests the data plane could not route since it began serving the route; 0: none."),
    ] = 0

    def canary(self) -> dict[str, int]:
        """Cluster -> canary percent, for the clusters with a canary weight above 0."""
        return {c: w.get("canary", 0) for c, w in self.weights.items() if w.get("canary", 0) > 0}


SyncAction = Literal["pause", "resume", "force"]


class SyncControl(Message, frozen=True):
    """A request to pause, resume or force a full re-sync of a cluster's syncer."""

    KIND: ClassVar[str] = "sync_control"

    cluster: Cluster
    action: Annotated[SyncAction, Meta(description="pause, resume or force.")]
    timestamp: Timestamp
    requested_by: Annotated[str, Meta(description="Who asked (user or program).")] = ""
    reason: Annotated[str, Meta(description="Why, for the audit trail.")] = ""


CanaryAction = Literal["promote", "abort", "pause", "resume", "retry"]


class CanaryControl(Message, frozen=True):
    """A request to promote, abort, pause, resume or retry a canary rollout."""

    KIND: ClassVar[str] = "canary_control"

    namespace: Annotated[str, Meta(min_length=1, description="Rollout namespace.")]
    name: Annotated[str, Meta(min_length=1, description="Rollout name.")]
    action: Annotated[CanaryAction, Meta(description="promote, abort, pause, resume or retry.")]
    timestamp: Timestamp
    full: Annotated[bool, Meta(description="promote only: skip all remaining steps.")] = False
    requested_by: Annotated[str, Meta(description="Who asked (user or program).")] = ""
    reason: Annotated[str, Meta(description="Why, for the audit trail.")] = ""


class RollbackControl(Message, frozen=True):
    """A request to roll a rollout back to a revision (``kubectl tmc rollback NAME --to-revision N``)."""

    KIND: ClassVar[str] = "rollback_control"

    namespace: Annotated[str, Meta(min_length=1, description="Rollout namespace.")]
    name: Annotated[str, Meta(min_length=1, description="Rollout name.")]
    timestamp: Timestamp
    to_revision: Annotated[
        int, Meta(ge=0, description="The revision to return to; 0 means the previous stable one.")
    ] = 0
    requested_by: Annotated[str, Meta(description="Who asked (user or program).")] = ""
    reason: Annotated[str, Meta(description="Why, for the audit trail.")] = ""


class ControlReply(Message, frozen=True):
    """The answer to a control request."""

    KIND: ClassVar[str] = "control_reply"

    ok: Annotated[bool, Meta(description="Whether the request was carried out.")]
    target: Annotated[str, Meta(description="What answered: a cluster, or namespace/name.")] = ""
    message: Annotated[str, Meta(description="Human-readable outcome or error.")] = ""
    code: Annotated[
        int,
        Meta(description="HTTP-like status: 200 ok, 400 bad request, 404 unknown, 409 conflict."),
    ] = 200
    state: Annotated[str, Meta(description="State after the request, e.g. paused.")] = ""
    timestamp: Timestamp = 0.0


class HealthQuery(Message, frozen=True):
    """Request for the health tree (cluster -> location -> fleet)."""

    KIND: ClassVar[str] = "health_query"

    location: Annotated[str, Meta(description="Only this location; empty for all.")] = ""
    include_clusters: Annotated[bool, Meta(description="List every cluster under its location.")] = True


class ClusterHealthSummary(msgspec.Struct, kw_only=True, frozen=True):
    """One cluster in the health tree."""

    name: Cluster
    status: Annotated[HealthStatus, Meta(description="Healthy, Degraded, Unhealthy or Unknown.")]
    reason: Annotated[str, Meta(description="Why, e.g. HeartbeatMissed.")] = ""
    failing: Annotated[list[str], Meta(description="Failing conditions or checks.")] = msgspec.field(
        default_factory=list
    )
    since: Annotated[float, Meta(ge=0, description="Unix time the status was entered.")] = 0.0
    last_heartbeat: Annotated[float, Meta(ge=0, description="Unix time of the last heartbeat received.")] = 0.0


class HealthNode(msgspec.Struct, kw_only=True, frozen=True):
    """The fleet or one location: its status and the count of clusters per status."""

    name: Annotated[str, Meta(description="'fleet' or the location (the value of the location label).")]
    status: Annotated[HealthStatus, Meta(description="Aggregated status.")]
    counts: Annotated[dict[str, int], Meta(description="Clusters per status.")] = msgspec.field(default_factory=dict)
    clusters: Annotated[list[ClusterHealthSummary], Meta(description="The clusters (locations only).")] = msgspec.field(
        default_factory=list
    )


class HealthReport(Message, frozen=True):
    """The health tree: fleet, locations (by a cluster label), clusters."""

    KIND: ClassVar[str] = "health_report"

    timestamp: Timestamp
    fleet: HealthNode
    location_label: Annotated[str, Meta(description="The cluster label that groups locations.")] = "region"
    locations: Annotated[list[HealthNode], Meta(description="One node per location, sorted by name.")] = msgspec.field(
        default_factory=list
    )


ALL_MESSAGES: tuple[type[Message], ...] = (
    SyncerHeartbeat,
    SyncEvent,
    SyncEventBatch,
    ConnectionEvent,
    PlacementDecision,
    WorkloadStats,
    HealthChange,
    CanaryEvent,
    RollbackEvent,
    TrafficWeights,
    TrafficApplied,
    SyncControl,
    CanaryControl,
    RollbackControl,
    ControlReply,
    HealthQuery,
    HealthReport,
)
"""Every message type, in the order the AsyncAPI document lists them."""
