"""PROVISIONAL (replaced by the mesh branch's router): the router interface only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class RouteRef:
    """A route: namespace, name, and the workload it serves."""

    namespace: str
    route: str
    workload: str


@dataclass(frozen=True)
class AppliedWeights:
    """What the data plane reports."""

    generation: int
    canary: dict[str, int] = field(default_factory=dict)


class TrafficRouter(Protocol):
    """Sets weights, reads back what was applied."""

    name: str

    async def set_weights(self, ref: RouteRef, canary_weight: int, clusters: Sequence[str], generation: int) -> None:
        """Set the weights."""

    async def applied(self, ref: RouteRef) -> AppliedWeights | None:
        """The latest report."""

    async def close(self) -> None:
        """Release."""


def router_for(name: str, bus: Any) -> TrafficRouter:
    """A router by name."""
    raise NotImplementedError(name)
