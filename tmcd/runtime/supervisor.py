"""Runs agents as guarded tasks: a crash is logged, counted and restarted with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tmcd.runtime.agent import Agent, AgentContext
from tmcd.runtime.selfmetrics import SelfMetrics

log = logging.getLogger("tmcd.supervisor")

STABLE_AFTER = 60.0
"""An agent that ran this long without crashing has its backoff reset."""


@dataclass
class AgentState:
    """What the supervisor knows about one agent (read by health checks)."""

    name: str
    status: str = "starting"  # starting | running | backoff | stopped
    restarts: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    context: AgentContext | None = None

    @property
    def started(self) -> bool:
        """True once the agent reported it is consuming."""
        return self.context is not None and self.context.started.is_set()


def restart_delay(failures: int, low: float, high: float) -> float:
    """Exponential backoff: low, 2*low, 4*low, ... capped at high."""
    return float(min(high, low * 2.0 ** max(0, failures - 1)))


class Supervisor:
    """Starts agents, restarts the ones that crash, stops them all in order."""

    def __init__(
        self,
        agents: list[Agent],
        make_context: Callable[[], AgentContext],
        metrics: SelfMetrics,
        stop: asyncio.Event,
        *,
        backoff_min: float = 0.5,
        backoff_max: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float, asyncio.Event], Awaitable[None]] | None = None,
    ) -> None:
        self._agents = agents
        self._make_context = make_context
        self._metrics = metrics
        self._stop = stop
        self._low = backoff_min
        self._high = backoff_max
        self._monotonic = monotonic
        self._sleep = sleep or _interruptible_sleep
        self._tasks: list[asyncio.Task[None]] = []
        self.states: dict[str, AgentState] = {a.name: AgentState(a.name) for a in agents}

    def start(self) -> None:
        """Start one guarded task per agent."""
        for agent in self._agents:
            self._metrics.agent_restarts.labels(agent.name)  # exported at 0 from the start
            self._tasks.append(asyncio.create_task(self._guard(agent), name=f"agent-{agent.name}"))

    async def _guard(self, agent: Agent) -> None:
        state = self.states[agent.name]
        while not self._stop.is_set():
            ctx = self._make_context()
            state.context = ctx
            state.status = "running"
            began = self._monotonic()
            try:
                await agent.run(ctx)
                if self._stop.is_set():
                    break
                raise RuntimeError("agent returned before stop was requested")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._monotonic() - began >= STABLE_AFTER:
                    state.consecutive_failures = 0
                state.consecutive_failures += 1
                state.restarts += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                self._metrics.agent_restarts.labels(agent.name).inc()
                delay = restart_delay(state.consecutive_failures, self._low, self._high)
                log.error(
                    "agent %s crashed (%s); restarting in %.1fs", agent.name, state.last_error, delay, exc_info=exc
                )
                state.status = "backoff"
                await self._sleep(delay, self._stop)
        state.status = "stopped"

    async def wait_stopped(self, timeout: float, *, grace: float = 1.0) -> bool:
        """After stop is set: wait up to ``timeout`` for agents to finish, then cancel the
        stragglers and wait up to ``grace`` for them to go.  True if all finished in time.

        Never swallows the caller's own cancellation: asyncio.wait does not raise the agents'
        errors or cancellations, only ours.
        """
        if not self._tasks:
            return True
        tasks, self._tasks = self._tasks, []
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            log.warning("agent task %s did not stop within %.1fs; cancelling", task.get_name(), timeout)
            task.cancel()
        if pending:
            _cancelled, stuck = await asyncio.wait(pending, timeout=grace)
            for task in stuck:
                log.error("agent task %s ignored cancellation for %.1fs; leaving it behind", task.get_name(), grace)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("agent task %s failed while stopping", task.get_name(), exc_info=task.exception())
        return not pending


async def _interruptible_sleep(delay: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
