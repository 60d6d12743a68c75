"""Drive a :class:`~tmcd.sim.model.FleetModel` in real time and publish what it emits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tmcd.bus import Bus, Delivery
from tmcd.contracts import subjects
from tmcd.contracts.messages import ControlReply, SyncControl, SyncEvent, SyncEventBatch
from tmcd.sim.model import FleetModel, SimOptions, cluster_names

log = logging.getLogger("tmcd.sim")

PROGRESS_EVERY = 10.0
"""Seconds between progress log lines."""
CLOSE_TIMEOUT = 5.0
"""Seconds to drain the connection at exit (bounded: NATS may be down or restarting)."""


@dataclass
class SimStats:
    """What a simulator run published (and answered)."""

    heartbeats: int = 0
    sync: int = 0
    batches: int = 0
    sync_failed: int = 0
    conn: int = 0
    controls: int = 0
    elapsed: float = 0.0

    def summary(self) -> str:
        """One line: ``heartbeats=<n> sync=<n> conn=<n>``."""
        return f"heartbeats={self.heartbeats} sync={self.sync} conn={self.conn}"


async def run_sim(
    bus: Bus,
    opts: SimOptions,
    stop: asyncio.Event,
    *,
    duration: float | None = None,
    clock: Callable[[], float] = time.time,
    tick: float = 0.05,
) -> SimStats:
    """Publish a simulated fleet's syncer streams until ``stop`` is set or ``duration`` elapsed.

    Every ``tick`` seconds: connection changes, due heartbeats, then ``rate * elapsed`` sync
    events (the fraction is carried over), all with core NATS publishes.  Sync control
    requests (``tmc.ctl.sync.*.*``, or each cluster's own with ``opts.per_cluster_control``)
    are answered from the model while it runs.
    """
    model = FleetModel(opts)
    stats = SimStats()
    ctl = subjects.CTL_SYNC
    start = clock()
    model.start(start)
    end = start + duration if duration is not None else None

    async def on_control(d: Delivery[Any]) -> ControlReply:
        req: SyncControl = d.msg
        reply = model.control(req.cluster, req.action, clock())
        stats.controls += 1
        log.info("control %s %s: %s (%d)", req.action, req.cluster, reply.message, reply.code)
        return reply

    if opts.per_cluster_control:
        # one subscription per simulated syncer, each on its own subject, as under per-syncer permissions
        subs = [
            await bus.serve(subjects.CTL_SYNC.template.format(cluster=name, action="*"), on_control, channel=ctl)
            for name in cluster_names(opts.clusters)
        ]
    else:
        subs = [await bus.serve(ctl.wildcard, on_control, channel=ctl)]
    log.info(
        "simulating %d clusters at %g sync events/s (seed %d) on %s",
        opts.clusters,
        opts.rate,
        opts.seed,
        bus.display_url,
    )
    buffers: dict[str, list[SyncEvent]] = {}

    async def flush(cluster: str, now: float) -> None:
        events = buffers.pop(cluster, None)
        if events:
            await bus.publish(
                subjects.syncer_batch(cluster), SyncEventBatch(cluster=cluster, timestamp=now, events=events)
            )
            stats.batches += 1

    last = start
    last_flush = start
    carry = 0.0
    next_progress = start + PROGRESS_EVERY
    try:
        while not stop.is_set():
            now = clock()
            if end is not None:
                now = min(now, end)
            for ce in model.connection_events(now):
                await bus.publish(subjects.syncer_conn(ce.cluster), ce)
                stats.conn += 1
            for hb in model.heartbeats_due(now):
                await bus.publish(subjects.syncer_heartbeat(hb.cluster), hb)
                stats.heartbeats += 1
            carry += opts.rate * max(0.0, now - last)
            last = now
            count = int(carry)
            carry -= count
            for ev in model.sync_events(count, now):
                stats.sync += 1
                stats.sync_failed += not ev.ok
                if not opts.batch:
                    await bus.publish(subjects.syncer_sync(ev.cluster), ev)
                    continue
                buf = buffers.setdefault(ev.cluster, [])
                buf.append(ev)
                if len(buf) >= opts.batch_max:
                    await flush(ev.cluster, now)
            if opts.batch and now - last_flush >= opts.batch_interval:
                last_flush = now
                for cluster in list(buffers):
                    await flush(cluster, now)
            if now >= next_progress:
                next_progress += PROGRESS_EVERY
                log.info("sim: %.0fs %s failed=%d", now - start, stats.summary(), stats.sync_failed)
            if end is not None and now >= end:
                break
            timeout = tick if end is None else min(tick, end - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout)
        for cluster in list(buffers):
            await flush(cluster, last)
        try:
            await bus.flush()
        except Exception as exc:  # the bus raises nats-py errors here; report, do not fail the run
            log.warning("could not flush published events: %s", exc or type(exc).__name__)
    finally:
        stats.elapsed = max(0.0, last - start)
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    return stats


async def close_bus(bus: Bus, timeout: float = CLOSE_TIMEOUT) -> None:
    """Drain and close within ``timeout``; a connection that is down (NATS restarting) is just dropped."""
    try:
        await asyncio.wait_for(bus.close(), timeout)
    except TimeoutError:
        log.warning("the NATS connection did not close within %gs; leaving it", timeout)
    except Exception as exc:  # nats-py raises its own and socket errors when closing a broken connection
        log.debug("closing the NATS connection: %s", exc or type(exc).__name__)
