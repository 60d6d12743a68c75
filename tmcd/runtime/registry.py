"""Agent names -> agent factories."""

from __future__ import annotations

from collections.abc import Callable

from tmcd.canary.agent import CanaryAgent
from tmcd.health.agent import HealthAgent
from tmcd.metrics.agent import MetricsAgent
from tmcd.placement.agent import PlacementAgent
from tmcd.rollback.agent import RollbackAgent
from tmcd.runtime.agent import Agent

AGENTS: dict[str, Callable[[], Agent]] = {
    "metrics": MetricsAgent,
    "health": HealthAgent,
    "placement": PlacementAgent,
    "canary": CanaryAgent,
    "rollback": RollbackAgent,
}


def build_agents(names: list[str]) -> list[Agent]:
    """Instantiate the named agents (names are validated by the config)."""
    return [AGENTS[n]() for n in names]
