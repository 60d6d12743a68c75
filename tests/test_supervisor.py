"""Agents run as guarded tasks: a crash is counted and restarted with capped backoff."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import CrashingAgent, wait_for
from tmcd.config import Config
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.runtime.supervisor import Supervisor, restart_delay


class ReturningAgent:
    """Returns (a crash) after running for ``ran`` seconds of the fake clock."""

    name = "quitter"

    def __init__(self, now: list[float], ran: float) -> None:
        self.now = now
        self.ran = ran

    async def run(self, ctx: AgentContext) -> None:
        self.now[0] += self.ran


def test_restart_delay_doubles_and_caps() -> None:
    assert [restart_delay(n, 0.5, 4.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


async def test_crashing_agent_is_restarted_with_backoff_and_counted() -> None:
    metrics = SelfMetrics()
    stop = asyncio.Event()
    sleeps: list[float] = []

    async def fake_sleep(delay: float, _stop: asyncio.Event) -> None:
        sleeps.append(delay)

    agent = CrashingAgent(crashes=5)
    sup = Supervisor(
        [agent],
        lambda: AgentContext(None, Config(), metrics, stop, lambda: 0.0),  # type: ignore[arg-type]
        metrics,
        stop,
        backoff_min=1.0,
        backoff_max=4.0,
        sleep=fake_sleep,
    )
    sup.start()
    for _ in range(100):
        if sup.states["crashy"].started:
            break
        await asyncio.sleep(0)
    state = sup.states["crashy"]
    assert state.started and state.status == "running"
    assert sleeps == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert state.restarts == 5 and "boom 5" in state.last_error
    assert metrics.agent_restarts.labels("crashy")._value.get() == 5
    stop.set()
    assert await sup.wait_stopped(1.0)
    assert state.status == "stopped"


async def test_agent_returning_early_counts_as_crash_and_backoff_resets_after_stable_run() -> None:
    metrics = SelfMetrics()
    stop = asyncio.Event()
    now = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(delay: float, _stop: asyncio.Event) -> None:
        sleeps.append(delay)
        if len(sleeps) == 3:
            stop.set()

    sup = Supervisor(
        [ReturningAgent(now, ran=100.0)],
        lambda: AgentContext(None, Config(), metrics, stop, lambda: 0.0),  # type: ignore[arg-type]
        metrics,
        stop,
        backoff_min=1.0,
        backoff_max=30.0,
        monotonic=lambda: now[0],
        sleep=fake_sleep,
    )
    sup.start()
    assert await sup.wait_stopped(1.0)
    # each run lasted longer than STABLE_AFTER, so the backoff never grows
    assert sleeps == [1.0, 1.0, 1.0]
    assert "returned before stop" in sup.states["quitter"].last_error


async def test_stuck_agent_is_cancelled_after_timeout() -> None:
    metrics = SelfMetrics()
    stop = asyncio.Event()

    class Stuck:
        name = "stuck"

        async def run(self, ctx: AgentContext) -> None:
            ctx.started.set()
            await asyncio.Event().wait()  # ignores stop

    sup = Supervisor(
        [Stuck()],
        lambda: AgentContext(None, Config(), metrics, stop, lambda: 0.0),  # type: ignore[arg-type]
        metrics,
        stop,
    )
    sup.start()
    await asyncio.sleep(0)
    stop.set()
    assert not await sup.wait_stopped(0.05)


class SlowToStop:
    """Ignores stop; when cancelled, cleans up until ``release`` is set (or forever)."""

    name = "slow"

    def __init__(self) -> None:
        self.cleaning = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, ctx: AgentContext) -> None:
        ctx.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cleaning.set()
            await self.release.wait()
            raise


def _supervisor(agent: object, stop: asyncio.Event) -> Supervisor:
    metrics = SelfMetrics()
    return Supervisor(
        [agent],  # type: ignore[list-item]
        lambda: AgentContext(None, Config(), metrics, stop, lambda: 0.0),  # type: ignore[arg-type]
        metrics,
        stop,
    )


async def test_agent_ignoring_cancellation_is_left_behind_after_the_grace() -> None:
    stop = asyncio.Event()
    agent = SlowToStop()
    sup = _supervisor(agent, stop)
    sup.start()
    await asyncio.wait_for(_started(sup), 5)
    stop.set()
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert not await sup.wait_stopped(0.05, grace=0.1)  # bounded even though the agent hangs on
    assert loop.time() - began < 2.0
    assert agent.cleaning.is_set()
    agent.release.set()  # let it go, so the test leaves nothing running
    await asyncio.sleep(0)


async def test_wait_stopped_does_not_swallow_the_callers_cancellation() -> None:
    stop = asyncio.Event()
    agent = SlowToStop()
    sup = _supervisor(agent, stop)
    sup.start()
    await asyncio.wait_for(_started(sup), 5)
    stop.set()
    waiter = asyncio.create_task(sup.wait_stopped(0.01, grace=30.0))
    await asyncio.wait_for(agent.cleaning.wait(), 5)  # the straggler was cancelled; grace is running
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 5)
    agent.release.set()
    await asyncio.sleep(0)


async def _started(sup: Supervisor) -> None:
    async def started() -> bool:
        return all(s.started for s in sup.states.values())

    await wait_for(started, what="agents started")
