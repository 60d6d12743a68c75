"""Agent names -> agent factories."""

from __future__ import annotations

from collections.abc import Callable

from tmcd.canary.agent import CanaryAgent
from tmcd.config import Config
from tmcd.health.agent import HealthAgent
from tmcd.kube.agent import KubeAgent
from tmcd.kube.routers import router_factory
from tmcd.kube.workloads import workloads_factory
from tmcd.metrics.agent import MetricsAgent
from tmcd.placement.agent import PlacementAgent
from tmcd.rollback.agent import RollbackAgent
from tmcd.runtime.agent import Agent
from tmcd.runtime.leader import LEADER_AGENTS, Elector, LeaderOnly

AGENTS: dict[str, Callable[[], Agent]] = {
    "metrics": MetricsAgent,
    "health": HealthAgent,
    "placement": PlacementAgent,
    "canary": CanaryAgent,
    "rollback": RollbackAgent,
}
OPTIONAL: dict[str, Callable[[], Agent]] = {"kube": KubeAgent}
"""Agents started by their own switch, not by ``agents``: ``kube`` when ``kube.enabled`` (watch mode)."""


def build_agents(names: list[str], cfg: Config | None = None, elector: Elector | None = None) -> list[Agent]:
    """Instantiate the named agents (names are validated by the config).  With ``cfg``, the canary
    and rollback agents get the Kubernetes traffic routers (``gateway-api``, ``smi``) through a
    factory: the canary package does not import ``tmcd.kube``, the runtime hands the routers over
    (and the Deployment adapter that sets canary images, likewise).
    With ``kube.enabled``, the ``kube`` agent (watch mode) is added.  With an ``elector``, the
    leader-only agents run only while this replica holds their lease."""
    out: list[Agent] = []
    for n in names:
        if cfg is not None and n in ("canary", "rollback"):
            cls = CanaryAgent if n == "canary" else RollbackAgent
            out.append(cls(router_factory=router_factory(cfg.kube), workloads_factory=workloads_factory(cfg.kube)))
        else:
            out.append(AGENTS[n]())
    if cfg is not None and cfg.kube.enabled:
        out.append(OPTIONAL["kube"]())
    if elector is None:
        return out
    return [LeaderOnly(a, elector) if a.name in LEADER_AGENTS else a for a in out]
