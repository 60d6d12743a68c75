"""The daemon: embedded NATS (if needed), bus, streams, HTTP server and agents, with an
ordered shutdown (agents finish and ack -> bus drains -> HTTP stops -> NATS stops) in which
every step is bounded and independent of the others."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tmcd import __version__
from tmcd.api import nats_api
from tmcd.api.nats_watch import NatsWatches
from tmcd.api.server import API_KEY, HttpServer, build_app
from tmcd.bus import Bus
from tmcd.config import Config, server_context
from tmcd.runtime import gctune
from tmcd.runtime.agent import AgentContext, agent_checks
from tmcd.runtime.aio import cancel_and_wait
from tmcd.runtime.checks import DaemonChecks, agent_check
from tmcd.runtime.embedded import EmbeddedNats, find_binary, start_embedded
from tmcd.runtime.leader import Elector, start_elector
from tmcd.runtime.probes import CheckRegistry
from tmcd.runtime.registry import build_agents
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.runtime.supervisor import Supervisor
from tmcd.telemetry import Telemetry

log = logging.getLogger("tmcd")

STARTED_POLL = 0.1
"""Seconds between looks at whether every agent has started (for the one start-up heap freeze)."""


class Daemon:
    """One tmcd process."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Callable[[], float] = time.time,
        telemetry: Telemetry | None = None,
        install_global_tracer: bool = False,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.telemetry = telemetry if telemetry is not None else Telemetry(cfg.otel, __version__)
        self._install_global_tracer = install_global_tracer
        self.metrics = SelfMetrics()
        self.checks = CheckRegistry()
        self.stop_event = asyncio.Event()
        self.embedded: EmbeddedNats | None = None
        self.bus: Bus | None = None
        tls = server_context(cfg.http.tls_cert, cfg.http.tls_key) if cfg.http.tls_cert else None
        self.http = HttpServer(
            build_app(self.metrics.registry, self.checks, lambda: self.bus, cfg.api), cfg.http.listen, tls
        )
        self.supervisor: Supervisor | None = None
        self.provisioned = False
        self._gc_task: asyncio.Task[None] | None = None
        self.api_service: Any = None
        self.api_watches: NatsWatches | None = None
        self.elector: Elector | None = None
        self._elector_stop = asyncio.Event()
        self._elector_task: asyncio.Task[None] | None = None
        self._stopped: bool | None = None
        self._register_checks()

    @property
    def data_dir(self) -> Path:
        """Where the embedded server stores JetStream data and nats.url is written."""
        return Path(self.cfg.data_dir)

    def _register_checks(self) -> None:
        """livez: ping, eventloop; readyz: ping, nats, jetstream, api-cache, agent-*; healthz: all
        (see tmcd/runtime/checks.py)."""
        self.checks.cache_ttl = self.cfg.health.check_cache
        self.component_checks = DaemonChecks(
            self.checks, self.cfg.health, self.metrics, bus=lambda: self.bus, provisioned=lambda: self.provisioned
        )
        self.component_checks.register()
        self.checks.register("api-cache", self.http.app[API_KEY].cache_check)
        for name in self.cfg.agents:
            self.checks.register(f"agent-{name}", self._agent_check(name))

    def _agent_check(self, name: str) -> Callable[[], str | None]:
        return agent_check(name, lambda: self.supervisor)

    async def start(self) -> None:
        """Bring everything up; returns once agents are started (not necessarily ready)."""
        self.telemetry.start(install_global=self._install_global_tracer)
        self.telemetry.start_metrics_push(self.metrics.registry)
        self.component_checks.start()
        await self.http.start()
        url = self.cfg.nats.url
        if not url:
            binary = find_binary(self.cfg.nats.server_bin)
            self.embedded = await asyncio.to_thread(start_embedded, binary, self.data_dir)
            url = self.embedded.url
            (self.data_dir / "nats.url").write_text(url + "\n")
            log.info("embedded NATS at %s (written to %s)", url, self.data_dir / "nats.url")
        self.bus = Bus(self.cfg.nats, self.metrics, url=url, clock=self.clock)
        await self.bus.connect(retry=True, stop=self.stop_event)
        await self.bus.provision(self.cfg)
        self.provisioned = True
        api_ctx = self.http.app[API_KEY]
        api_ctx.start_cache()  # one KV feed per kind; /readyz waits for them to load
        self.api_service, self.api_watches = await nats_api.start(self.bus, api_ctx)
        bus = self.bus

        tracer = self.telemetry.tracer("tmcd.agents")

        def make_context() -> AgentContext:
            return AgentContext(bus, self.cfg, self.metrics, self.stop_event, self.clock, tracer)

        if self.cfg.leader.enabled:
            self.elector, self._elector_task = await start_elector(bus, self.cfg, self.metrics, self._elector_stop)
        api_ctx.lease_prefix, api_ctx.election = self.cfg.consumer.durable_prefix, self.cfg.leader.enabled
        agents = build_agents(self.cfg.agents, self.cfg, self.elector)
        for agent in agents:  # e.g. the kube agent's: readyz waits for watch mode's first lists
            for name, check, probes in agent_checks(agent):
                self.checks.register(name, check, probes)
        self.supervisor = Supervisor(
            agents,
            make_context,
            self.metrics,
            self.stop_event,
            backoff_min=self.cfg.runtime.restart_backoff_min,
            backoff_max=self.cfg.runtime.restart_backoff_max,
        )
        self.supervisor.start()
        gctune.tune()

    async def _freeze_after_startup(self, supervisor: Supervisor) -> None:
        """Freeze the heap once, when every agent has started (the cluster registry is loaded).

        Only once: a frozen object is never collected by the cyclic collector, so a cycle
        that is alive at a freeze stays in memory for good even after it becomes garbage.
        Only from :meth:`run`, the daemon that owns its process: the freeze is process-wide.
        """
        while not self.stop_event.is_set():
            if all(state.started for state in supervisor.states.values()):
                count = gctune.freeze_long_lived()
                log.info("start-up heap frozen (%d objects out of the cyclic collector's reach)", count)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), STARTED_POLL)

    async def stop(self) -> bool:
        """Shut down within ``runtime.shutdown_timeout``; True when every step finished cleanly.

        The steps run in order (agents finish and ack -> the bus drains -> HTTP stops -> the
        embedded nats-server stops), each bounded by its share of the time left: one that
        raises or hangs is logged and cut short, and the steps after it still run.
        """
        if self._stopped is not None:
            return self._stopped
        self.stop_event.set()
        self.http.app[API_KEY].stopping.set()  # end watch streams while NATS is still there
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.runtime.shutdown_timeout
        steps = self._stop_steps()
        clean = True
        try:
            for i, (name, weight, step) in enumerate(steps):
                left = max(0.0, deadline - loop.time())
                share = left * weight / sum(w for _, w, _ in steps[i:])
                clean = await _bounded(name, step, share) and clean
        finally:
            if self.embedded is not None:
                self.embedded.terminate()  # no-op once stopped; the last resort when stop() was cancelled
                (self.data_dir / "nats.url").unlink(missing_ok=True)
        self._stopped = clean
        return clean

    def _stop_steps(self) -> list[tuple[str, float, Callable[[float], Awaitable[bool | None]]]]:
        """(name, weight, step): a step gets ``weight / sum of the weights left`` of the time left."""
        return [
            ("gc freeze task", 0.25, self._stop_gc_task),
            ("NATS API service", 0.5, self._stop_api_service),
            ("API cache", 1.0, lambda t: self.http.app[API_KEY].close_cache(t)),
            ("agents", 14.0, self._stop_agents),
            ("leases", 0.5, self._stop_elector),
            ("NATS drain", 5.0, self._close_bus),
            ("HTTP server", 0.5, lambda _t: self.http.stop()),
            ("health checks", 0.25, lambda _t: self.component_checks.stop()),
            ("embedded nats-server", 1.5, self._stop_embedded),
            ("telemetry", 0.5, lambda t: self.telemetry.aclose(t)),
        ]

    async def _stop_gc_task(self, _timeout: float) -> None:
        task, self._gc_task = self._gc_task, None
        await cancel_and_wait(task)

    async def _stop_api_service(self, timeout: float) -> None:
        service, self.api_service = self.api_service, None
        if service is not None:
            await service.stop(timeout * 0.4)  # the requests being answered finish
        watches, self.api_watches = self.api_watches, None
        if watches is not None:
            await watches.close(timeout * 0.4)  # each open watch gets its end message

    async def _stop_agents(self, timeout: float) -> bool:
        if self.supervisor is None:
            return True
        # the rest of the share is for cancelling the agents that did not finish
        return await self.supervisor.wait_stopped(timeout * 0.8, grace=timeout * 0.15)

    async def _stop_elector(self, _timeout: float) -> None:
        """After the agents: renewals stop and the leases are given up, so another replica
        takes over at once."""
        self._elector_stop.set()
        task, self._elector_task = self._elector_task, None
        if task is not None:
            await task
        if self.elector is not None:
            await self.elector.release()

    async def _close_bus(self, _timeout: float) -> None:
        if self.bus is not None:
            await self.bus.close()

    async def _stop_embedded(self, timeout: float) -> None:
        if self.embedded is not None:
            # SIGKILL after most of the share; the JetStream store recovers from that at the next start
            await asyncio.to_thread(self.embedded.stop, timeout * 0.7)

    async def run(self, on_started: Callable[[Daemon], None] | None = None) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            try:
                await self.start()
            except Exception:
                if not self.stop_event.is_set():
                    raise
            if self.supervisor is not None and not self.stop_event.is_set():
                self._gc_task = asyncio.create_task(self._freeze_after_startup(self.supervisor), name="gc-freeze")
            if on_started is not None and not self.stop_event.is_set():
                on_started(self)
            await self.stop_event.wait()
        finally:
            clean = await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("tmcd stopped%s", "" if clean else " (some work was cut short)")
        return 0 if clean else 1

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stop_event.is_set():
            return
        log.info("received %s: finishing in-flight messages and shutting down", sig.name)
        self.stop_event.set()


async def _bounded(name: str, step: Callable[[float], Awaitable[bool | None]], timeout: float) -> bool:
    """Run one shutdown step for at most ``timeout`` seconds; False when it failed or was cut short."""
    task = asyncio.ensure_future(step(timeout))
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout * 0.9)
        if not done:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=timeout * 0.1)
            if done:
                log.warning("shutdown: %s did not finish within %.2fs; cut short", name, timeout)
            else:  # it ignores cancellation: leave it behind rather than miss the deadline
                log.error("shutdown: %s did not finish within %.2fs and ignored cancellation", name, timeout)
            return False
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.cancelled():
        log.warning("shutdown: %s was cancelled", name)
        return False
    exc = task.exception()
    if exc is not None:
        log.error("shutdown: %s failed: %s", name, exc or type(exc).__name__, exc_info=exc)
        return False
    return task.result() is not False
