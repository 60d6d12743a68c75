"""Drive the mock service mesh (:class:`~tmcd.sim.mesh.MeshModel`) in real time through the Bus.

At start it reads the current weights of every route from TMC_TRAFFIC (the last message per
subject) after subscribing to changes, so nothing published in between is missed (an older
generation that arrives late is dropped by the model); it reads them again after every
reconnection, retrying a failed read (:class:`~tmcd.bus.resync.Resync`).  After each applied
TrafficWeights it publishes a TrafficApplied; every ``window`` seconds it publishes the
window's WorkloadStats (to TMC_WORKLOAD) for every route, cluster and track that had traffic
share in the window, after a TrafficApplied again for every route whose count of unrouted
requests grew in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tmcd.bus import Bus, BusError, Delivery, Resync, last_per_subject
from tmcd.contracts import subjects
from tmcd.contracts.messages import TrafficWeights
from tmcd.sim.mesh import MeshModel, MeshOptions

log = logging.getLogger("tmcd.sim.mesh")

PROGRESS_EVERY = 10.0
"""Seconds between progress log lines."""
MAX_PENDING_WEIGHTS = 10_000
"""TrafficWeights waiting to be applied; beyond it NATS drops them (logged as a slow consumer)."""
YIELD_EVERY = 1000
"""Publishes between two yields to the event loop while a window goes out."""


@dataclass
class MeshStats:
    """What a mesh run did."""

    windows: int = 0
    stats: int = 0
    applied: int = 0
    dropped: int = 0
    """TrafficWeights older than the generation applied."""
    routes: int = 0
    unrouted: int = 0
    """Requests no route's weights covered, over every route (0 unless traffic was dropped)."""
    elapsed: float = 0.0

    def summary(self) -> str:
        """One line: ``windows=<n> stats=<n> applied=<n> routes=<n> unrouted=<n>``."""
        return (
            f"windows={self.windows} stats={self.stats} applied={self.applied} routes={self.routes}"
            f" unrouted={self.unrouted}"
        )


async def run_mesh(
    bus: Bus,
    opts: MeshOptions,
    stop: asyncio.Event,
    *,
    duration: float | None = None,
    clock: Callable[[], float] = time.time,
) -> MeshStats:
    """Serve every route the mesh hears of until ``stop`` is set or ``duration`` elapsed.

    Windows end at start + k x window (the scheduled times, not the wake-up times, so the
    same seed gives the same requests); a window is published only once it has ended.
    """
    start = clock()
    model = MeshModel(opts, start)
    result = MeshStats()
    end = start + duration if duration is not None else None

    async def on_weights(d: Delivery[Any], at: float | None = None) -> None:
        w: TrafficWeights = d.msg
        report = model.apply(w, clock() if at is None else at)
        if report is None:
            result.dropped += 1
            log.debug("route %s/%s: generation %d is older than the one applied", w.namespace, w.route, w.generation)
            return
        await bus.publish(subjects.traffic_applied(w.namespace, w.route), report)
        result.applied += 1
        where = ", ".join(w.clusters) if w.clusters else "every cluster"
        log.info(
            "route %s/%s generation %d: canary %d%% on %s", w.namespace, w.route, w.generation, w.canary_percent, where
        )

    sub = await bus.subscribe(
        subjects.TRAFFIC_WEIGHTS.wildcard, on_weights, channel=subjects.TRAFFIC_WEIGHTS, max_pending=MAX_PENDING_WEIGHTS
    )

    async def catch_up() -> None:
        for d in await _current(bus):
            await on_weights(d)

    # back from a disconnect (a restarted NATS, a lost node): weights published meanwhile never
    # reached the core subscription, and the controller waits for their reports; the stream has
    # them, and the read is retried until it works (a stream may be electing its leader)
    resync = Resync(catch_up, f"the current weights from {subjects.STREAM_TRAFFIC}")
    resync.attach(bus)
    try:
        # the routes TMC_TRAFFIC holds are served from the start: a restart with the same seed
        # draws the same requests for them
        try:
            for d in await _current(bus):
                await on_weights(d, start)
        except BusError as exc:
            log.warning("cannot read the current weights (%s); serving routes as their weights arrive", exc)
            resync.request()
        log.info(
            "mesh: %d clusters, %g requests/s per cluster and route, %gs windows (seed %d), %d routes, on %s",
            opts.clusters,
            opts.rps,
            opts.window,
            opts.seed,
            model.routes,
            bus.display_url,
        )
        await _windows(bus, model, opts, stop, start, end, clock, result)
        try:
            await bus.flush()
        except Exception as exc:  # the bus raises nats-py errors here; report, do not fail the run
            log.warning("could not flush published stats: %s", exc or type(exc).__name__)
    finally:
        result.routes = model.routes
        result.unrouted = model.unrouted_total
        result.elapsed = max(0.0, min(clock(), end if end is not None else clock()) - start)
        await resync.close()
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return result


async def _current(bus: Bus) -> list[Delivery[Any]]:
    """The last TrafficWeights of every route that TMC_TRAFFIC holds (raises BusError)."""
    return await last_per_subject(
        bus, subjects.STREAM_TRAFFIC, subjects.TRAFFIC_WEIGHTS.wildcard, subjects.TRAFFIC_WEIGHTS
    )


async def _windows(
    bus: Bus,
    model: MeshModel,
    opts: MeshOptions,
    stop: asyncio.Event,
    start: float,
    end: float | None,
    clock: Callable[[], float],
    result: MeshStats,
) -> None:
    due = start + opts.window
    next_progress = start + PROGRESS_EVERY
    while not stop.is_set() and (end is None or due <= end):
        wait = due - clock()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if stop.is_set():
                break
        # fell behind by whole windows (a suspended process): one longer window, not a burst
        now = clock()
        while due + opts.window <= now and (end is None or due + opts.window <= end):
            due += opts.window
        out = model.window(due)
        # the counts first: whoever has a window's stats has seen its unrouted reports
        await _unrouted_reports(bus, model, clock(), result)
        for i, s in enumerate(out, 1):
            await bus.publish(subjects.workload_stats(s.cluster, s.namespace, s.workload, s.track), s)
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        result.windows += 1
        result.stats += len(out)
        if due >= next_progress:
            next_progress = due + PROGRESS_EVERY
            result.routes = model.routes
            log.info("mesh: %.0fs %s", due - start, result.summary())
        due += opts.window


async def _unrouted_reports(bus: Bus, model: MeshModel, now: float, result: MeshStats) -> None:
    """Report the routes whose unrouted count grew in the window just closed (one warning per window)."""
    reports = model.take_unrouted_reports(now)
    if not reports:
        return
    before, result.unrouted = result.unrouted, model.unrouted_total
    first = reports[0]
    log.warning(
        "mesh: %d requests could not be routed in the last window, on %d routes (first: %s/%s)",
        result.unrouted - before,
        len(reports),
        first.namespace,
        first.route,
    )
    for report in reports:
        await bus.publish(subjects.traffic_applied(report.namespace, report.route), report)
