"""Progressive delivery resources (tmc.kcp.io/v1alpha1): CanaryRollout, AnalysisTemplate, RolloutRevision."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from tmcd.resources.meta import Condition, ObjectMeta
from tmcd.resources.placement import LabelSelector

API_VERSION = "tmc.kcp.io/v1alpha1"
CANARY_ROLLOUT = "CanaryRollout"
ANALYSIS_TEMPLATE = "AnalysisTemplate"
ROLLOUT_REVISION = "RolloutRevision"

RolloutPhase = Literal[
    "Pending", "Progressing", "Paused", "Promoting", "Succeeded", "RollingBack", "RolledBack", "Degraded"
]
RouterName = Literal["nats", "gateway-api", "smi"]
AnalysisPhase = Literal["Pending", "Running", "Successful", "Failed", "Inconclusive", "Error"]
NatsMetricName = Literal["error_ratio", "latency_p99", "request_rate"]
ComparisonTest = Literal["mann-whitney", "t-test", "ratio", "proportion"]
RegressionDirection = Literal["increase", "decrease", "either"]
NoDataPolicy = Literal["inconclusive", "fail", "pass"]
RevisionPhase = Literal["Active", "Superseded", "RolledBackTo", "Failed"]
RollbackPhase = Literal["Pending", "Reversing", "Restoring", "CleaningUp", "Completed", "Failed"]

Percent = Annotated[int, Meta(ge=0, le=100)]
Seconds = Annotated[float, Meta(gt=0)]

# --- CanaryRollout -------------------------------------------------------------------------------


class WorkloadRef(msgspec.Struct, kw_only=True, rename="camel"):
    """The workload the rollout changes."""

    api_version: str = "apps/v1"
    kind: str = "Deployment"
    name: Annotated[str, Meta(min_length=1)]
    # UNSET (never encoded) rather than "": a rollout that does not set images keeps its wire form
    container: Annotated[
        str | msgspec.UnsetType,
        Meta(
            description="With canaryImage: the container of the Deployment whose image tmcd sets to canaryImage on "
            "the canary clusters (and puts back on rollback)."
        ),
    ] = msgspec.UNSET
    canary_image: Annotated[
        str | msgspec.UnsetType,
        Meta(description="With container: the image the canary clusters' Deployment runs during the rollout."),
    ] = msgspec.UNSET


class TrafficRouting(msgspec.Struct, kw_only=True, rename="camel"):
    """How traffic weights reach the data plane."""

    router: Annotated[RouterName, Meta(description="nats, gateway-api or smi.")] = "nats"
    route: Annotated[str, Meta(min_length=1, description="Route name (NATS route, HTTPRoute or TrafficSplit).")]
    # UNSET (never encoded) rather than "": a nats rollout's wire form stays what it was
    stable_service: Annotated[
        str | msgspec.UnsetType,
        Meta(description="gateway-api and smi: the Service of the stable track (a backendRef or backend name)."),
    ] = msgspec.UNSET
    canary_service: Annotated[
        str | msgspec.UnsetType,
        Meta(description="gateway-api and smi: the Service of the canary track (a backendRef or backend name)."),
    ] = msgspec.UNSET


class SetClusters(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Run the canary on a number or percent of eligible clusters (exactly one)."""

    count: Annotated[int, Meta(ge=1)] | None = None
    percent: Annotated[int, Meta(ge=1, le=100)] | None = None


class PauseStep(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Wait a while, or until promoted."""

    duration: Annotated[float, Meta(ge=0, description="Seconds; null pauses until promoted.")] | None = None


class StepAnalysis(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Run analysis templates before moving on.

    The step's ``intervals`` and ``interval``, when set, win over every metric's ``count`` and
    ``interval`` in this step; unset, each metric keeps its own.
    """

    templates: Annotated[list[str], Meta(min_length=1, description="AnalysisTemplate names.")]
    intervals: Annotated[
        Annotated[int, Meta(ge=1)] | None,
        Meta(description="Measurements per metric; overrides each metric's count. Null: the metric's count."),
    ] = None
    interval: Annotated[
        Annotated[float, Meta(gt=0)] | None,
        Meta(description="Seconds between measurements; overrides each metric's interval. Null: the metric's."),
    ] = None
    args: dict[str, str] = msgspec.field(default_factory=dict)


class CanaryStep(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """One step; exactly one action is set."""

    set_clusters: SetClusters | None = None
    set_weight: Annotated[int, Meta(ge=0, le=100, description="Percent of traffic to the canary.")] | None = None
    pause: PauseStep | None = None
    analysis: StepAnalysis | None = None


class BackgroundAnalysis(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Analysis that runs for the whole rollout."""

    templates: Annotated[list[str], Meta(min_length=1)]
    args: dict[str, str] = msgspec.field(default_factory=dict)
    start_step: Annotated[int, Meta(ge=0)] = 0
    """Step index at which background analysis starts."""


class CanaryRolloutSpec(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """What to roll out, where, and how."""

    workload_ref: WorkloadRef
    stable_version: Annotated[str, Meta(min_length=1, description="The stable version, e.g. an image tag.")]
    canary_version: Annotated[str, Meta(min_length=1, description="The canary version, e.g. an image tag.")]
    placement_ref: str = ""
    """Name of a Placement; exclusive with clusterSelector."""
    cluster_selector: LabelSelector | None = None
    """Inline cluster selector; exclusive with placementRef."""
    traffic_routing: TrafficRouting
    steps: list[CanaryStep] = msgspec.field(default_factory=list)
    analysis: BackgroundAnalysis | None = None
    revision_history_limit: Annotated[int, Meta(ge=0)] = 10
    progress_deadline_seconds: Annotated[float, Meta(gt=0)] = 600.0


class MetricResult(msgspec.Struct, kw_only=True, rename="camel"):
    """The outcome of one metric, with the evidence behind it."""

    name: str
    phase: AnalysisPhase = "Pending"
    value: float | None = None
    evidence: dict[str, Any] = msgspec.field(default_factory=dict)
    """Samples, statistic, p-value, thresholds: whatever the decision rested on."""
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    message: str = ""
    measured_at: str = ""
    """When the last measurement was taken (RFC 3339); the next is due an interval later."""


class AnalysisRunSummary(msgspec.Struct, kw_only=True, rename="camel"):
    """One run of one AnalysisTemplate."""

    template: str
    phase: AnalysisPhase = "Pending"
    step_index: int | None = None
    """The step that started it; null for background analysis."""
    metrics: list[MetricResult] = msgspec.field(default_factory=list)
    start_time: str = ""
    end_time: str = ""
    message: str = ""


ActionKind = Literal["clusters", "weight", "promote", "finalize", "stable", "reset"]
ActionState = Literal["Applying", "Applied"]


class StepAction(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A step's effect on the data plane, recorded before (Applying) and after (Applied) it is applied.

    After a crash an Applying action is applied again (every action is idempotent) and then
    marked Applied, so no step is skipped or applied twice.
    """

    kind: Annotated[
        ActionKind,
        Meta(
            description="clusters (choose canary clusters), weight (set the canary weight), promote (100 % on "
            "every eligible cluster), finalize (the canary becomes stable), stable (all traffic back to stable), "
            "reset (stable again before a restart)."
        ),
    ]
    step_index: int = -1
    """The step the action belongs to; -1 outside the steps (promotion, rollback)."""
    weight: int = 0
    """Canary percent on ``clusters``."""
    clusters: list[str] = msgspec.field(default_factory=list)
    """The canary clusters after the action."""
    generation: int = 0
    """Traffic generation sent to the router; the mesh drops older ones."""
    state: ActionState = "Applying"
    reason: str = ""


WorkloadImageState = Literal["Canary", "Restored", "Skipped"]


class WorkloadImage(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """The canary image tmcd set on one cluster's Deployment container, and the image it replaced.

    Recorded before the patch is sent, so a crash never leaves a changed image without a record.
    """

    cluster: str
    """The canary cluster (SyncTarget name)."""
    deployment: str
    """The Deployment, in the rollout's namespace (spec.workloadRef.name when it was set)."""
    container: str
    """The container whose image was set."""
    image: str
    """The canary image set."""
    previous: str
    """The container's image before tmcd set the canary one: what a rollback puts back."""
    state: Annotated[
        WorkloadImageState,
        Meta(
            description="Canary (the canary image is set, or being set), Restored (previous is back), Skipped "
            "(not put back: the Deployment is gone, or someone else changed the image since; see message)."
        ),
    ] = "Canary"
    message: str = ""
    """Why a record was Skipped."""


class ClusterRollback(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """One cluster's part in a rollback."""

    cluster: str
    canary_weight: int | None = None
    """The canary weight the router acknowledged on it (0 once reversed); null until it reports."""
    state: Literal["Pending", "Reversed", "Restored"] = "Pending"


class RollbackStatus(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A rollback in progress or done: stages, per-cluster progress, what triggered it."""

    phase: RollbackPhase = "Pending"
    trigger: str = ""
    """AnalysisFailed, ProgressDeadlineExceeded, ClusterUnhealthy, Aborted or Manual."""
    reason: str = ""
    from_revision: int = 0
    to_revision: int = 0
    clusters: list[ClusterRollback] = msgspec.field(default_factory=list)
    generation: int = 0
    """Traffic generation of the reversal."""
    stage_state: Literal["Applying", "Applied"] = "Applying"
    """The current stage recorded before (Applying) and after (Applied) it is applied."""
    start_time: str = ""
    end_time: str = ""
    stage_times: dict[str, str] = msgspec.field(default_factory=dict)
    """When each stage was reached (RFC 3339)."""
    message: str = ""
    target_version: str = ""
    """For a rollback of a finished rollout to an older revision: the version that becomes stable again."""
    restore_clusters: list[str] = msgspec.field(default_factory=list)
    """For a rollback to a revision: the clusters that revision ran on, which run its version again."""


class CanaryRolloutStatus(msgspec.Struct, kw_only=True, rename="camel"):
    """Where the rollout is, and why."""

    phase: RolloutPhase = "Pending"
    current_step_index: int = 0
    current_weight: int = 0
    canary_clusters: list[str] = msgspec.field(default_factory=list)
    stable_revision: int = 0
    canary_revision: int = 0
    message: str = ""
    conditions: list[Condition] = msgspec.field(default_factory=list)
    analysis_runs: list[AnalysisRunSummary] = msgspec.field(default_factory=list)
    observed_generation: int = 0
    pause_start_time: str = ""
    applied_weight: int | None = None
    """Canary weight the traffic router reports as applied on the canary clusters; null until it reports."""
    stable_version: str = ""
    """The stable version this status describes (spec.stableVersion when the rollout started)."""
    canary_version: str = ""
    """The canary version being rolled out; a spec change to canaryVersion restarts from step 0."""
    canary_placement: str = ""
    """Name of the child Placement (``<rollout>-canary``) whose decision is the canary clusters."""
    start_time: str = ""
    """When the current attempt started (the rollout's start, a retry or a new canary version)."""
    step_start_time: str = ""
    """When the current step started (RFC 3339)."""
    progress_time: str = ""
    """When the rollout last made progress; no progress for progressDeadlineSeconds rolls it back."""
    action: StepAction | None = None
    """The last data-plane action, and whether it was applied."""
    pause_reason: str = ""
    """Why the rollout is Paused: PauseStep, UserPaused or InconclusiveAnalysis."""
    abort_reason: str = ""
    """Why the rollout is rolling back or rolled back (e.g. AnalysisFailed, ProgressDeadlineExceeded, Aborted)."""
    rollback: RollbackStatus | None = None
    """The last rollback: stages, per-cluster progress and trigger (the rollback engine writes it)."""
    workload_images: list[WorkloadImage] = msgspec.field(default_factory=list)
    """Per canary cluster, the image tmcd set on the workload's container and the one it replaced
    (spec.workloadRef.canaryImage); cleared once the rollout succeeded or was rolled back."""


class CanaryRollout(msgspec.Struct, kw_only=True, rename="camel"):
    """A progressive rollout of one workload across clusters (namespaced)."""

    api_version: str = API_VERSION
    kind: str = CANARY_ROLLOUT
    metadata: ObjectMeta
    spec: CanaryRolloutSpec
    status: CanaryRolloutStatus = msgspec.field(default_factory=CanaryRolloutStatus)


# --- AnalysisTemplate ----------------------------------------------------------------------------


class NatsProvider(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A statistic from the WorkloadStats the mesh publishes on NATS."""

    metric: Annotated[NatsMetricName, Meta(description="error_ratio, latency_p99 or request_rate.")]
    track: Literal["stable", "canary"] | None = None
    """Only one track; null measures canary (and stable as the baseline for comparisons)."""


SyncerMetricName = Literal["sync_error_ratio", "sync_latency_p99"]


class SyncerProvider(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """The syncers' own view of the workload: its sync events on the canary clusters against the others."""

    metric: Annotated[SyncerMetricName, Meta(description="sync_error_ratio or sync_latency_p99.")]
    track: Literal["stable", "canary"] | None = None
    """Only one track; null measures canary (and stable as the baseline for comparisons)."""


class PrometheusProvider(msgspec.Struct, kw_only=True, rename="camel"):
    """A PromQL query returning one number."""

    address: Annotated[str, Meta(min_length=1)]
    query: Annotated[str, Meta(min_length=1)]


class MetricProvider(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Where the measurements come from (exactly one)."""

    nats: NatsProvider | None = None
    prometheus: PrometheusProvider | None = None
    syncer: SyncerProvider | None = None


class Threshold(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Pass when min <= value <= max (either bound may be omitted, not both)."""

    min: float | None = None
    max: float | None = None


class Comparison(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Baseline (stable) vs canary statistical test."""

    test: ComparisonTest = "mann-whitney"
    max_increase: Annotated[float, Meta(ge=0, description="Largest relative increase allowed (0.1 = 10%).")]
    confidence: Annotated[float, Meta(ge=0.5, le=0.999)] = 0.95
    direction: Annotated[
        RegressionDirection | None,
        Meta(description="Which change is a regression; null: decrease for request_rate, else increase."),
    ] = None
    max_difference: Annotated[
        Annotated[float, Meta(ge=0)] | None,
        Meta(
            description="Absolute worsening always allowed, in the metric's unit (0.001 = 0.1 percentage point "
            "of error ratio); lets a canary pass against a stable with no errors."
        ),
    ] = None


class MetricCondition(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """When a measurement passes (exactly one)."""

    threshold: Threshold | None = None
    comparison: Comparison | None = None


class AnalysisMetric(msgspec.Struct, kw_only=True, rename="camel"):
    """One metric to measure and judge."""

    name: Annotated[str, Meta(min_length=1)]
    interval: Seconds = 60.0
    count: Annotated[int, Meta(ge=1)] = 1
    provider: MetricProvider
    condition: MetricCondition
    no_data: NoDataPolicy = "inconclusive"
    failure_limit: Annotated[int, Meta(ge=0)] = 0
    inconclusive_limit: Annotated[int, Meta(ge=0)] = 0
    consecutive_error_limit: Annotated[int, Meta(ge=0)] = 4


class AnalysisTemplateSpec(msgspec.Struct, kw_only=True, rename="camel"):
    """The metrics of a template."""

    metrics: Annotated[list[AnalysisMetric], Meta(min_length=1)]


class AnalysisTemplate(msgspec.Struct, kw_only=True, rename="camel"):
    """Reusable analysis: metrics, providers and pass conditions (namespaced)."""

    api_version: str = API_VERSION
    kind: str = ANALYSIS_TEMPLATE
    metadata: ObjectMeta
    spec: AnalysisTemplateSpec


# --- RolloutRevision -----------------------------------------------------------------------------


class RolloutRevisionSpec(msgspec.Struct, kw_only=True, rename="camel"):
    """A snapshot to roll back to."""

    rollout: Annotated[str, Meta(min_length=1, description="The CanaryRollout name.")]
    revision: Annotated[int, Meta(ge=1)]
    rollout_spec: CanaryRolloutSpec
    placement: list[str] = msgspec.field(default_factory=list)
    """Clusters running the workload at the time."""
    weights: dict[str, Percent] = msgspec.field(default_factory=dict)
    """Traffic percent per track at the time."""
    created_by: str = ""
    stable_version: str = ""
    """The version that was stable when this revision was written."""
    version: str = ""
    """The version this revision runs (the canary version when it started, the stable one once promoted)."""
    trigger: str = ""
    """What wrote it: CanaryStarted, Promoted, RolledBack, or a rollback's trigger."""


class RolloutRevisionStatus(msgspec.Struct, kw_only=True, rename="camel"):
    """Whether this revision is current, and how it ended."""

    phase: RevisionPhase = "Active"
    start_time: str = ""
    end_time: str = ""
    outcome: str = ""
    """What happened to it, e.g. "promoted", "rolled back: AnalysisFailed"."""


class RolloutRevision(msgspec.Struct, kw_only=True, rename="camel"):
    """One entry of a rollout's revision history (namespaced)."""

    api_version: str = API_VERSION
    kind: str = ROLLOUT_REVISION
    metadata: ObjectMeta
    spec: RolloutRevisionSpec
    status: RolloutRevisionStatus = msgspec.field(default_factory=RolloutRevisionStatus)
