"""One realistic example object per kind, for the API docs and the tests."""

from __future__ import annotations

import msgspec

from tmcd.resources.canary import (
    AnalysisMetric,
    AnalysisRunSummary,
    AnalysisTemplate,
    AnalysisTemplateSpec,
    BackgroundAnalysis,
    CanaryRollout,
    CanaryRolloutSpec,
    CanaryRolloutStatus,
    CanaryStep,
    Comparison,
    MetricCondition,
    MetricProvider,
    MetricResult,
    NatsProvider,
    PauseStep,
    PrometheusProvider,
    RolloutRevision,
    RolloutRevisionSpec,
    RolloutRevisionStatus,
    SetClusters,
    StepAnalysis,
    Threshold,
    TrafficRouting,
    WorkloadImage,
    WorkloadRef,
)
from tmcd.resources.meta import Condition, ObjectMeta
from tmcd.resources.placement import (
    CandidateResult,
    LabelSelector,
    LabelSelectorRequirement,
    Placement,
    PlacementSpec,
    PlacementStatus,
    SelectedCluster,
)
from tmcd.resources.synctarget import SyncTarget, SyncTargetSpec, SyncTargetStatus

_T0 = "2025-01-15T10:00:00Z"
_T1 = "2025-01-15T10:04:30Z"

SYNC_TARGET = SyncTarget(
    metadata=ObjectMeta(
        name="sim-001",
        labels={"region": "eu-west-1", "zone": "eu-west-1a", "provider": "aws", "environment": "prod"},
        resource_version="42",
        generation=1,
        creation_timestamp=_T0,
    ),
    spec=SyncTargetSpec(),
    status=SyncTargetStatus(
        capacity={"cpu": "128", "memory": "549755813888", "pods": "1760"},
        allocatable={"cpu": "125600m", "memory": "505775348776", "pods": "1728"},
        used={"cpu": "61200m", "memory": "231928233984", "pods": "742"},
        last_syncer_heartbeat_time=_T1,
        synced_resources=["deployments.apps", "services", "configmaps", "secrets"],
        conditions=[
            Condition(type="HeartbeatHealthy", status="True", last_transition_time=_T0),
            Condition(type="SyncerReady", status="True", last_transition_time=_T0),
            Condition(type="Ready", status="True", reason="Healthy", last_transition_time=_T0),
        ],
        health="Healthy",
        queue_depth=3,
        error_ratio=0.002,
        syncer_version="v0.11.0",
    ),
)

_EU_REGIONS = LabelSelector(
    match_labels={"environment": "prod"},
    match_expressions=[LabelSelectorRequirement(key="region", operator="In", values=["eu-west-1", "eu-central-1"])],
)

PLACEMENT = Placement(
    metadata=ObjectMeta(name="checkout-eu", labels={"app": "checkout"}, generation=1, creation_timestamp=_T0),
    spec=PlacementSpec(
        location_selectors=[_EU_REGIONS],
        namespace_selector=LabelSelector(match_labels={"team": "shop"}),
        number_of_clusters=2,
        policy="LeastLoaded",
    ),
    status=PlacementStatus(
        phase="Bound",
        selected_clusters=[
            SelectedCluster(cluster="sim-001", score=0.52, reason="least loaded (cpu 49%, memory 46%)"),
            SelectedCluster(cluster="sim-004", score=0.47, reason="least loaded (cpu 55%, memory 51%)"),
        ],
        candidates=[
            CandidateResult(cluster="sim-001", selected=True, score=0.52, reason="rank 1 of 3"),
            CandidateResult(cluster="sim-004", selected=True, score=0.47, reason="rank 2 of 3"),
            CandidateResult(cluster="sim-007", selected=False, score=0.21, reason="rank 3 of 3: numberOfClusters is 2"),
            CandidateResult(cluster="sim-009", selected=False, reason="Unhealthy: no heartbeat since " + _T0),
        ],
        last_decision_time=_T1,
        observed_generation=1,
        conditions=[Condition(type="Scheduled", status="True", reason="Bound", last_transition_time=_T1)],
    ),
)

_ROLLOUT_SPEC = CanaryRolloutSpec(
    workload_ref=WorkloadRef(
        api_version="apps/v1",
        kind="Deployment",
        name="checkout",
        container="checkout",
        canary_image="ghcr.io/acme/checkout:1.5.0",
    ),
    stable_version="ghcr.io/acme/checkout:1.4.2",
    canary_version="ghcr.io/acme/checkout:1.5.0",
    placement_ref="checkout-eu",
    traffic_routing=TrafficRouting(router="nats", route="checkout"),
    steps=[
        CanaryStep(set_clusters=SetClusters(count=1)),
        CanaryStep(set_weight=10),
        CanaryStep(analysis=StepAnalysis(templates=["error-rate"], intervals=5, interval=30.0)),
        CanaryStep(set_weight=50),
        CanaryStep(pause=PauseStep(duration=300.0)),
        CanaryStep(set_clusters=SetClusters(percent=100)),
        CanaryStep(set_weight=100),
    ],
    analysis=BackgroundAnalysis(templates=["error-rate"], args={"service": "checkout"}, start_step=1),
)

CANARY_ROLLOUT = CanaryRollout(
    metadata=ObjectMeta(name="checkout", namespace="shop", labels={"app": "checkout"}, generation=3),
    spec=_ROLLOUT_SPEC,
    status=CanaryRolloutStatus(
        phase="Progressing",
        current_step_index=2,
        current_weight=10,
        canary_clusters=["sim-001"],
        stable_revision=1,
        canary_revision=2,
        message="step 3/7: analysis error-rate, interval 2 of 5",
        conditions=[Condition(type="Progressing", status="True", reason="StepAnalysis", last_transition_time=_T1)],
        analysis_runs=[
            AnalysisRunSummary(
                template="error-rate",
                phase="Running",
                step_index=2,
                start_time=_T1,
                metrics=[
                    MetricResult(
                        name="error-ratio",
                        phase="Successful",
                        value=0.004,
                        count=2,
                        successful=2,
                        evidence={"threshold": {"max": 0.01}, "samples": [0.003, 0.004]},
                    ),
                    MetricResult(
                        name="latency-vs-stable",
                        phase="Running",
                        value=1.03,
                        count=1,
                        successful=1,
                        evidence={"test": "mann-whitney", "pValue": 0.41, "maxIncrease": 0.1, "confidence": 0.95},
                    ),
                ],
            )
        ],
        observed_generation=3,
        workload_images=[
            WorkloadImage(
                cluster="sim-001",
                deployment="checkout",
                container="checkout",
                image="ghcr.io/acme/checkout:1.5.0",
                previous="ghcr.io/acme/checkout:1.4.2",
            )
        ],
    ),
)

ANALYSIS_TEMPLATE = AnalysisTemplate(
    metadata=ObjectMeta(name="error-rate", namespace="shop"),
    spec=AnalysisTemplateSpec(
        metrics=[
            AnalysisMetric(
                name="error-ratio",
                interval=30.0,
                count=5,
                provider=MetricProvider(nats=NatsProvider(metric="error_ratio", track="canary")),
                condition=MetricCondition(threshold=Threshold(max=0.01)),
                failure_limit=1,
            ),
            AnalysisMetric(
                name="latency-vs-stable",
                interval=30.0,
                count=5,
                provider=MetricProvider(nats=NatsProvider(metric="latency_p99")),
                condition=MetricCondition(
                    comparison=Comparison(test="mann-whitney", max_increase=0.1, confidence=0.95)
                ),
                no_data="inconclusive",
            ),
            AnalysisMetric(
                name="http-5xx",
                interval=60.0,
                provider=MetricProvider(
                    prometheus=PrometheusProvider(
                        address="http://prometheus:9090",
                        query='sum(rate(http_requests_total{app="checkout",code=~"5.."}[1m]))',
                    )
                ),
                condition=MetricCondition(threshold=Threshold(max=5.0)),
                no_data="pass",
            ),
        ]
    ),
)

ROLLOUT_REVISION = RolloutRevision(
    metadata=ObjectMeta(name="checkout-2", namespace="shop", labels={"tmc.kcp.io/rollout": "checkout"}),
    spec=RolloutRevisionSpec(
        rollout="checkout",
        revision=2,
        rollout_spec=_ROLLOUT_SPEC,
        placement=["sim-001", "sim-004"],
        weights={"stable": 90, "canary": 10},
        created_by="canary-controller",
    ),
    status=RolloutRevisionStatus(phase="Active"),
)

EXAMPLES: dict[str, object] = {
    "SyncTarget": SYNC_TARGET,
    "Placement": PLACEMENT,
    "CanaryRollout": CANARY_ROLLOUT,
    "AnalysisTemplate": ANALYSIS_TEMPLATE,
    "RolloutRevision": ROLLOUT_REVISION,
}
"""Kind name -> example object (shared: use :func:`example` for a copy you may change)."""


def example(kind: str) -> object:
    """A fresh deep copy of the example of ``kind``; KeyError if none."""
    obj = EXAMPLES[kind]
    return msgspec.json.decode(msgspec.json.encode(obj), type=type(obj))
