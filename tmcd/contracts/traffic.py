"""The traffic router contract: what the canary asks of a data plane adapter and what it reads back.

It lives here, below both the canary (which drives routers) and the Kubernetes adapters (which
implement some), so that neither has to import the other: the runtime builds the Kubernetes
routers and hands them to the canary agents through a :data:`RouterFactory`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "AppliedWeights",
    "ClusterAnnotations",
    "RouteRef",
    "RouterFactory",
    "TrafficError",
    "TrafficRouter",
    "UnsupportedRouter",
]


class TrafficError(Exception):
    """The data plane did not take the weights (a missing route, a refused patch); the message says
    what and where, in words a rollout's status can carry as they are."""


class UnsupportedRouter(ValueError):
    """A traffic router tmcd cannot use (here); the message says why and what to use instead."""


@dataclass(frozen=True)
class RouteRef:
    """A route and the workload it serves (empty: the route name)."""

    namespace: str
    route: str
    workload: str = ""
    router: str = "nats"
    """The rollout's ``trafficRouting.router``."""
    stable_service: str = ""
    """The stable track's Service (Kubernetes routers; ``trafficRouting.stableService``)."""
    canary_service: str = ""
    """The canary track's Service (Kubernetes routers; ``trafficRouting.canaryService``)."""


@dataclass(frozen=True)
class AppliedWeights:
    """What the data plane reported for a route: the generation it applied and the canary percent
    per cluster (a cluster not listed is 100 % stable)."""

    generation: int
    canary: dict[str, int]
    timestamp: float = 0.0
    """When the data plane applied it (Unix seconds)."""
    unknown_clusters: tuple[str, ...] = ()
    """Clusters the weights named that the data plane does not serve."""
    unreachable: dict[str, str] = field(default_factory=dict)
    """Cluster -> why it could not be read (Kubernetes routers: no context, connection refused, ...)."""


class TrafficRouter(Protocol):
    """Sets and reads back the canary weight of routes."""

    name: str

    async def set_weights(self, ref: RouteRef, canary_weight: int, clusters: Sequence[str], generation: int) -> None:
        """``canary_weight`` % of the route's traffic to the canary on ``clusters``, every other
        cluster (all of them when ``clusters`` is empty) 100 % stable.  Idempotent; a newer
        ``generation`` replaces an older one, an older one is ignored by the data plane."""
        ...

    async def applied(self, ref: RouteRef) -> AppliedWeights | None:
        """The latest weights the data plane reports as applied for the route; None before any."""
        ...

    async def close(self) -> None:
        """Release what the router holds (subscriptions, connections)."""
        ...


ClusterAnnotations = Callable[[], Mapping[str, Mapping[str, str]]]
"""Every cluster the agent knows -> its SyncTarget's annotations (a Kubernetes router finds a
cluster's kubeconfig context there)."""

RouterFactory = Callable[[str, ClusterAnnotations], TrafficRouter]
"""(router name, the clusters) -> a new router of that kind; raises :class:`UnsupportedRouter` for one
it cannot build.  The canary and rollback agents call it once per router name they meet and close
what it built."""
