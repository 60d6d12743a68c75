"""Placement (scheduling.kcp.io/v1alpha1): which clusters a workload may run on, and which were chosen."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from tmcd.resources.meta import Condition, ObjectMeta

API_VERSION = "scheduling.kcp.io/v1alpha1"
KIND = "Placement"

SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
PlacementPolicy = Literal["Spread", "LeastLoaded", "Binpack"]
PlacementPhase = Literal["Pending", "Bound", "Unbound"]


class LabelSelectorRequirement(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """One set-based requirement on a label."""

    key: Annotated[str, Meta(min_length=1, description="The label key.")]
    operator: Annotated[SelectorOperator, Meta(description="In, NotIn, Exists or DoesNotExist.")]
    values: list[str] = msgspec.field(default_factory=list)
    """Required for In and NotIn; must be empty for Exists and DoesNotExist."""


class LabelSelector(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A Kubernetes label selector; all terms are ANDed, and an empty selector matches everything."""

    match_labels: dict[str, str] = msgspec.field(default_factory=dict)
    """Exact label matches."""
    match_expressions: list[LabelSelectorRequirement] = msgspec.field(default_factory=list)
    """Set-based requirements."""


class PlacementSpec(msgspec.Struct, kw_only=True, rename="camel"):
    """Which clusters are eligible and how many to choose."""

    location_selectors: Annotated[
        list[LabelSelector], Meta(description="Cluster selectors, ORed; an empty list selects every cluster.")
    ] = msgspec.field(default_factory=list)
    namespace_selector: LabelSelector | None = None
    """Namespaces the placement applies to (kcp); None means none chosen explicitly."""
    number_of_clusters: (
        Annotated[int, Meta(ge=1, description="How many clusters to choose; null chooses every eligible cluster.")]
        | None
    ) = None
    policy: Annotated[
        PlacementPolicy, Meta(description="How to rank eligible clusters: Spread, LeastLoaded or Binpack.")
    ] = "Spread"
    tolerate_unhealthy: bool = False
    """Also choose clusters whose health is Degraded or Unhealthy."""


class SelectedCluster(msgspec.Struct, kw_only=True, rename="camel"):
    """A chosen cluster."""

    cluster: str
    score: float = 0.0
    reason: str = ""


class CandidateResult(msgspec.Struct, kw_only=True, rename="camel"):
    """One candidate cluster and why it was or was not chosen."""

    cluster: str
    selected: bool
    score: float = 0.0
    reason: str = ""


class PlacementStatus(msgspec.Struct, kw_only=True, rename="camel"):
    """The scheduler's last decision and its evidence."""

    phase: PlacementPhase = "Pending"
    selected_clusters: list[SelectedCluster] = msgspec.field(default_factory=list)
    candidates: list[CandidateResult] = msgspec.field(default_factory=list)
    """Every candidate considered, with its score and reason."""
    last_decision_time: str = ""
    observed_generation: int = 0
    conditions: list[Condition] = msgspec.field(default_factory=list)


class Placement(msgspec.Struct, kw_only=True, rename="camel"):
    """A placement: selectors over SyncTargets and the chosen clusters (cluster-scoped)."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: PlacementSpec = msgspec.field(default_factory=PlacementSpec)
    status: PlacementStatus = msgspec.field(default_factory=PlacementStatus)
