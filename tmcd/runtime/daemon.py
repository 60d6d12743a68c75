"""The daemon: embedded NATS (if needed), bus, streams, HTTP server and agents, with an
ordered shutdown (agents finish and ack -> bus drains -> HTTP stops -> NATS stops)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tmcd import __version__
from tmcd.api import nats_api
from tmcd.api.server import API_KEY, HttpServer, build_app
from tmcd.bus import Bus
from tmcd.config import Config
from tmcd.runtime import gctune
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.checks import DaemonChecks, agent_check
from tmcd.runtime.embedded import EmbeddedNats, find_binary
from tmcd.runtime.probes import CheckRegistry
from tmcd.runtime.registry import build_agents
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.runtime.supervisor import Supervisor
from tmcd.telemetry import Telemetry

log = logging.getLogger("tmcd")


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
        self.http = HttpServer(
            build_app(self.metrics.registry, self.checks, lambda: self.bus, cfg.api), cfg.http.listen
        )
        self.supervisor: Supervisor | None = None
        self.provisioned = False
        self._gc_task: asyncio.Task[None] | None = None
        self.api_service: Any = None
        self._register_checks()

    @property
    def data_dir(self) -> Path:
        """Where the embedded server stores JetStream data and nats.url is written."""
        return Path(self.cfg.data_dir)

    def _register_checks(self) -> None:
        """livez: ping, eventloop; readyz: ping, nats, jetstream, agent-*; healthz: all (see tmcd/runtime/checks.py)."""
        self.checks.cache_ttl = self.cfg.health.check_cache
        self.component_checks = DaemonChecks(
            self.checks, self.cfg.health, self.metrics, bus=lambda: self.bus, provisioned=lambda: self.provisioned
        )
        self.component_checks.register()
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
            self.embedded = EmbeddedNats(find_binary(self.cfg.nats.server_bin), self.data_dir / "jetstream")
            url = await asyncio.to_thread(self.embedded.start)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            (self.data_dir / "nats.url").write_text(url + "\n")
            log.info("embedded NATS at %s (written to %s)", url, self.data_dir / "nats.url")
        self.bus = Bus(self.cfg.nats, self.metrics, url=url, clock=self.clock)
        await self.bus.connect(retry=True, stop=self.stop_event)
        await self.bus.provision(self.cfg)
        self.provisioned = True
        api_ctx = self.http.app[API_KEY]
        self.api_service = await nats_api.start(self.bus, api_ctx.store)
        bus = self.bus

        tracer = self.telemetry.tracer("tmcd.agents")

        def make_context() -> AgentContext:
            return AgentContext(bus, self.cfg, self.metrics, self.stop_event, self.clock, tracer)

        self.supervisor = Supervisor(
            build_agents(self.cfg.agents),
            make_context,
            self.metrics,
            self.stop_event,
            backoff_min=self.cfg.runtime.restart_backoff_min,
            backoff_max=self.cfg.runtime.restart_backoff_max,
        )
        self.supervisor.start()
        gctune.tune()
        self._gc_task = asyncio.create_task(self._freeze_periodically(), name="gc-freeze")

    async def _freeze_periodically(self) -> None:
        """Freeze the long-lived heap after start-up and then every ``runtime.gc_freeze_interval``."""
        interval = self.cfg.runtime.gc_freeze_interval
        delay = min(5.0, interval)
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), delay)
            if not self.stop_event.is_set():
                gctune.freeze_long_lived()
            delay = interval

    async def stop(self) -> bool:
        """Ordered shutdown within ``runtime.shutdown_timeout``; True when everything stopped cleanly."""
        self.stop_event.set()
        self.http.app[API_KEY].stopping.set()  # end watch streams while NATS is still there
        if self._gc_task is not None:
            await self._gc_task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.runtime.shutdown_timeout
        clean = True
        if self.api_service is not None:
            with contextlib.suppress(Exception):
                await self.api_service.stop()
            self.api_service = None
        if self.supervisor is not None:
            clean = await self.supervisor.wait_stopped(max(0.1, (deadline - loop.time()) * 0.6))
        if self.bus is not None:
            try:
                await asyncio.wait_for(self.bus.close(), max(0.1, (deadline - loop.time()) * 0.7))
            except TimeoutError:
                clean = False
                log.warning("NATS drain did not finish in time")
        await self.http.stop()
        await self.component_checks.stop()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop, max(0.5, deadline - loop.time()))
            (self.data_dir / "nats.url").unlink(missing_ok=True)
        await self.telemetry.aclose()
        return clean

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
