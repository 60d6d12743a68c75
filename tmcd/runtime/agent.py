"""What an agent is and what it is given."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry.trace import NoOpTracer, Tracer

from tmcd.bus import Bus
from tmcd.config import Config
from tmcd.runtime.probes import CheckFn
from tmcd.runtime.selfmetrics import SelfMetrics

AgentCheck = tuple[str, CheckFn, tuple[str, ...]]
"""A component check an agent declares: its name, the check, the probes it belongs to."""


@dataclass
class AgentContext:
    """Everything an agent may use: the bus, settings, metrics, the stop signal and a clock."""

    bus: Bus
    config: Config
    metrics: SelfMetrics
    stop: asyncio.Event
    clock: Callable[[], float]
    tracer: Tracer = field(default_factory=NoOpTracer)
    """OpenTelemetry tracer for batch-level spans (a no-op unless tracing is configured)."""
    started: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the agent once it is consuming (used by /readyz)."""


class Agent(Protocol):
    """An agent runs until ``ctx.stop`` is set, then finishes in-flight work and returns."""

    name: str

    async def run(self, ctx: AgentContext) -> None:
        """Do the agent's work; raising an exception makes the supervisor restart it."""
        ...


def agent_checks(agent: Agent) -> list[AgentCheck]:
    """The component checks an agent declares with a ``checks()`` method (the kube agent's ``kube``
    and ``kube-api``); the daemon registers them.  Most agents declare none."""
    declared = getattr(agent, "checks", None)
    return list(declared()) if callable(declared) else []
