"""The daemon's component checks (kube-apiserver names) and the task that keeps them fresh.

====================  =====================  ==============================================
check                 probes                 fails when
====================  =====================  ==============================================
``ping``              livez readyz healthz   never
``eventloop``         livez healthz          the loop is late by > ``health.max_loop_lag``
                                             or the watchdog stopped ticking
``nats``              readyz healthz         the bus is not connected
``jetstream``         readyz healthz         streams/KV not provisioned or not reachable
``consumer-lag``      healthz                a stream has > ``health.max_consumer_pending``
                                             undelivered messages
``api-cache``         readyz healthz         a kind's API watch cache has not loaded yet
                                             (registered by the daemon)
``agent-<name>``      readyz healthz         the agent is not running and started, is in
                                             crash backoff, or crash-loops
``kube``              readyz healthz         watch mode (``kube.enabled``) has not yet listed
                                             every watched kind once (declared by the kube
                                             agent, registered by the daemon)
``kube-api``          healthz                watch mode's API server cannot be reached, or a
                                             watch or the status writes keep failing
====================  =====================  ==============================================

Checks are plain functions over cached state; the only I/O (the JetStream probe) runs in
:class:`DaemonChecks`' background task, never in an HTTP handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import cast

from prometheus_client import Gauge

from tmcd.bus import Bus
from tmcd.bus.provision import KV_BUCKETS
from tmcd.config import HealthConfig
from tmcd.metrics.catalog import create
from tmcd.runtime.aio import cancel_and_wait
from tmcd.runtime.probes import PROBES, CheckFn, CheckRegistry
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.runtime.supervisor import Supervisor
from tmcd.runtime.watchdog import LoopWatchdog

log = logging.getLogger("tmcd.checks")

CRASH_LOOP_WINDOW = 300.0
CRASH_LOOP_RESTARTS = 3
"""An agent restarted this many times within the window is crash-looping."""

JETSTREAM_TARGETS: tuple[tuple[str, str], ...] = (
    ("stream TMC_SYNCER", "TMC_SYNCER"),
    (f"KV bucket {KV_BUCKETS['clusters']}", f"KV_{KV_BUCKETS['clusters']}"),
)
"""(what to call it in a failure reason, JetStream stream name) probed by the jetstream check."""


def secs(x: float) -> str:
    """``1.0`` -> ``1.0s``, ``0.25`` -> ``0.25s``, ``1.8342`` -> ``1.8s``."""
    return f"{x:.1f}s" if round(x, 1) == x or x >= 1 else f"{x:.2g}s"


def span(seconds: float) -> str:
    """``300`` -> ``5m``, ``90`` -> ``90s``."""
    return f"{seconds / 60:g}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"


def eventloop_check(watchdog: LoopWatchdog, max_lag: float) -> CheckFn:
    """Fails when the watchdog saw the loop late by more than ``max_lag`` or stopped ticking."""

    def check() -> str | None:
        if not watchdog.running:
            return "event loop watchdog is not running"
        idle = watchdog.since_tick
        if idle > max_lag + watchdog.interval:
            return f"event loop watchdog has not ticked for {secs(idle)}"
        lag = watchdog.lag
        if lag > max_lag:
            return f"event loop lagging {secs(lag)} > {secs(max_lag)}"
        return None

    return check


def nats_check(bus: Callable[[], Bus | None]) -> CheckFn:
    """Fails while the bus is not connected."""
    return lambda: None if (b := bus()) is not None and b.connected else "not connected to NATS"


def consumer_lag_check(pending: Gauge, max_pending: int) -> CheckFn:
    """Fails when any stream's ``tmc_consumer_pending_messages`` exceeds ``max_pending``."""

    def check() -> str | None:
        over = [
            f"{s.labels.get('stream', '?')} has {int(s.value)} pending messages"
            for metric in pending.collect()
            for s in metric.samples
            if s.value > max_pending
        ]
        return f"{'; '.join(over)} (max {max_pending})" if over else None

    return check


class JetStreamProbe:
    """Probes that tmcd's streams and KV are reachable (``stream_info``), at most every ``interval``."""

    def __init__(
        self,
        bus: Callable[[], Bus | None],
        provisioned: Callable[[], bool],
        *,
        interval: float = 5.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._provisioned = provisioned
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self.reason: str | None = None
        """The last probe's failure, None when it succeeded (or before the first probe)."""
        self.checked_at: float | None = None
        self.probes = 0

    def due(self) -> bool:
        """True when a probe may run now (provisioned, connected, ``interval`` since the last)."""
        bus = self._bus()
        if not self._provisioned() or bus is None or not bus.connected:
            return False
        return self.checked_at is None or self._clock() - self.checked_at >= self.interval

    async def probe(self) -> str | None:
        """Ask JetStream for each target's stream info; stores and returns the failure reason."""
        bus = self._bus()
        if bus is None:
            return self.reason
        self.checked_at = self._clock()
        self.probes += 1
        failures = []
        for what, stream in JETSTREAM_TARGETS:
            try:
                await asyncio.wait_for(bus.js.stream_info(stream), self.timeout)
            except TimeoutError:
                failures.append(f"{what} unreachable: no answer within {secs(self.timeout)}")
            except Exception as exc:
                failures.append(f"{what} unreachable: {type(exc).__name__}: {exc}")
        self.reason = "; ".join(failures) or None
        return self.reason

    def check(self) -> str | None:
        """The jetstream check: provisioned, connected, and the last probe succeeded."""
        if not self._provisioned():
            return "streams and KV buckets not provisioned yet"
        bus = self._bus()
        if bus is None or not bus.connected:
            return "JetStream unreachable: not connected to NATS"
        return self.reason


class RestartTracker:
    """Counts an agent's restarts within a sliding window from its cumulative restart count."""

    def __init__(self, window: float = CRASH_LOOP_WINDOW) -> None:
        self.window = window
        self._seen = 0
        self._times: deque[float] = deque()

    def observe(self, restarts: int, now: float) -> int:
        """Record the current cumulative count; returns restarts within the window."""
        new = max(0, restarts - self._seen)
        self._seen = restarts
        self._times.extend([now] * min(new, 1000))
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return len(self._times)


def agent_check(
    name: str,
    supervisor: Callable[[], Supervisor | None],
    *,
    clock: Callable[[], float] = time.monotonic,
    window: float = CRASH_LOOP_WINDOW,
    max_restarts: int = CRASH_LOOP_RESTARTS,
) -> CheckFn:
    """Fails unless the agent runs, has started, is not in crash backoff and is not crash-looping."""
    tracker = RestartTracker(window)

    def check() -> str | None:
        sup = supervisor()
        if sup is None:
            return "not started"
        state = sup.states.get(name)
        if state is None:
            return "not supervised"
        recent = tracker.observe(state.restarts, clock())
        if state.status == "stopped":
            return "stopped"
        if recent >= max_restarts:
            return f"crash-looping: {recent} restarts in {span(window)}, last error: {state.last_error}"
        if state.status == "backoff":
            return f"restarting after crash ({state.last_error})"
        if state.status != "running" or not state.started:
            return "starting"
        return None

    return check


class DaemonChecks:
    """The daemon's component checks, the loop watchdog, and a task that keeps both fresh.

    The task probes JetStream (at most every ``jetstream_interval``) and re-runs every check
    each ``refresh_interval`` so ``tmc_health_check_status`` stays current without probe traffic.
    """

    def __init__(
        self,
        registry: CheckRegistry,
        cfg: HealthConfig,
        metrics: SelfMetrics,
        *,
        bus: Callable[[], Bus | None],
        provisioned: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        watchdog: LoopWatchdog | None = None,
        refresh_interval: float = 2.0,
        jetstream_interval: float = 5.0,
    ) -> None:
        self.registry = registry
        self.cfg = cfg
        self._metrics = metrics
        self._bus = bus
        self._clock = clock
        self.watchdog = watchdog if watchdog is not None else LoopWatchdog(clock=clock)
        self.jetstream = JetStreamProbe(bus, provisioned, interval=jetstream_interval, clock=clock)
        self.refresh_interval = refresh_interval
        self.status = cast(Gauge, create("tmc_health_check_status", metrics.registry))
        self._children: dict[str, Gauge] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._hooked: Bus | None = None
        registry.listeners.append(self._publish)

    def register(self) -> None:
        """Register ping, eventloop, nats, jetstream and consumer-lag (agents are registered by the daemon)."""
        reg = self.registry
        reg.register("ping", lambda: None, PROBES)
        reg.register("eventloop", eventloop_check(self.watchdog, self.cfg.max_loop_lag), ("livez", "healthz"))
        reg.register("nats", nats_check(self._bus), ("readyz", "healthz"))
        reg.register("jetstream", self.jetstream.check, ("readyz", "healthz"))
        lag = consumer_lag_check(self._metrics.consumer_pending, self.cfg.max_consumer_pending)
        reg.register("consumer-lag", lag, ("healthz",))

    def _publish(self, name: str, reason: str | None) -> None:
        child = self._children.get(name)
        if child is None:
            child = self._children[name] = self.status.labels(name)
        child.set(0 if reason is not None else 1)

    def start(self) -> None:
        """Start the watchdog and the refresh task."""
        self.watchdog.start()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="health-checks")

    async def stop(self) -> None:
        """Stop the refresh task and the watchdog."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self.watchdog.stop()
        if self._hooked is not None:
            with contextlib.suppress(ValueError):
                self._hooked.state_listeners.remove(self._on_bus_state)
            self._hooked = None

    def refresh(self) -> None:
        """Run every check so the gauge is current (without touching the probes' cache)."""
        self.registry.run_all()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._hook_bus()
                if self.jetstream.due():
                    await self.jetstream.probe()
                self.refresh()
            except Exception:
                log.exception("refreshing health checks failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.refresh_interval)

    def _hook_bus(self) -> None:
        bus = self._bus()
        if bus is not None and bus is not self._hooked:
            bus.state_listeners.append(self._on_bus_state)
            self._hooked = bus

    def _on_bus_state(self, _up: bool) -> None:
        """A (dis)connect: forget cached results and refresh now."""
        self.registry.invalidate()
        self._wake.set()
