"""Which clusters a rollout may use, and which of them run the canary (the placement variation).

The eligible pool is the rollout's ``placementRef`` decision (the clusters its workload runs
on) or the SyncTargets its ``clusterSelector`` matches.  The canary clusters are chosen by the
placement engine (:func:`tmcd.placement.model.decide`) on a child Placement
``<rollout>-canary``: Spread across ``region`` then ``zone``, healthiest and least loaded first,
never an Unhealthy, disconnected or cordoned cluster, and sticky (clusters already running
the canary keep their place when a later step adds more).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tmcd.placement.model import Decision, decide
from tmcd.resources.canary import API_VERSION, CANARY_ROLLOUT, CanaryRollout, SetClusters
from tmcd.resources.meta import ObjectMeta, OwnerReference
from tmcd.resources.placement import Placement, PlacementSpec
from tmcd.resources.selectors import SelectorError, from_label_selector
from tmcd.resources.synctarget import SyncTarget

__all__ = ["canary_placement", "canary_placement_name", "choose", "eligible_pool", "wanted"]


def canary_placement_name(rollout: CanaryRollout) -> str:
    """``<rollout>-canary``: the child Placement whose decision is the canary clusters."""
    return f"{rollout.metadata.name}-canary"


def eligible_pool(
    rollout: CanaryRollout, targets: Sequence[SyncTarget], parent: Placement | None
) -> tuple[list[SyncTarget], str]:
    """The clusters the rollout may use, and an error naming the field when it cannot tell.

    With ``placementRef`` the pool is the parent Placement's selected clusters (an error if it
    does not exist); with ``clusterSelector`` every SyncTarget it matches.
    """
    spec = rollout.spec
    if spec.placement_ref:
        if parent is None:
            return [], f"spec.placementRef: Placement {spec.placement_ref!r} not found"
        chosen = {c.cluster for c in parent.status.selected_clusters}
        return [t for t in targets if t.metadata.name in chosen], ""
    if spec.cluster_selector is None:
        return [], "spec.clusterSelector: one of placementRef or clusterSelector is required"
    try:
        sel = from_label_selector(spec.cluster_selector)
    except SelectorError as exc:
        return [], f"spec.clusterSelector: {exc}"
    return [t for t in targets if sel.matches(t.metadata.labels)], ""


def wanted(step: SetClusters, eligible: int) -> int:
    """How many canary clusters a setClusters step asks for (a percent rounds up, at least 1)."""
    if step.count is not None:
        return step.count
    percent = step.percent if step.percent is not None else 100
    return max(1, math.ceil(eligible * percent / 100))


def canary_placement(rollout: CanaryRollout, count: int | None) -> Placement:
    """The child Placement object (owned by the rollout); ``count`` None chooses every eligible cluster."""
    return Placement(
        metadata=ObjectMeta(
            name=canary_placement_name(rollout),
            labels={"tmc.kcp.io/canary-rollout": rollout.metadata.name},
            owner_references=[
                OwnerReference(
                    api_version=API_VERSION,
                    kind=CANARY_ROLLOUT,
                    name=rollout.metadata.name,
                    namespace=rollout.metadata.namespace,
                    uid=rollout.metadata.uid,
                )
            ],
        ),
        spec=PlacementSpec(number_of_clusters=count, policy="Spread"),
    )


def choose(
    rollout: CanaryRollout, pool: Sequence[SyncTarget], count: int | None, previous: Sequence[str], now: float
) -> Decision:
    """The placement engine's decision for the canary Placement over the eligible pool."""
    return decide(canary_placement(rollout, count), pool, previous=previous, now=now)
