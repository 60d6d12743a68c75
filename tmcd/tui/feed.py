"""The dashboard's data feed: NATS in, :class:`~tmcd.tui.state.DashboardState` out.

It reads NATS itself (through tmcd.bus), so tmcd carries no per-event load for it: core
subscriptions to the syncer, health, canary, rollback and placement subjects, a snapshot and
change feed of the clusters, canaries and placements KV buckets, and on start (and after
every reconnect) a replay of the recent events from JetStream, so the dashboard opens with
data.  Everything is bounded: subscriptions hold at most ``max_pending`` messages (beyond it
NATS drops them for this reader only), KV feeds buffer at most 256 changes, a replay reads at
most ``replay_limit`` messages, and the state keeps bounded collections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from tmcd.bus import Bus, BusError, Delivery
from tmcd.bus.reader import observe, recent
from tmcd.config import NatsConfig
from tmcd.contracts import subjects
from tmcd.resources.canary import CanaryRollout
from tmcd.resources.placement import Placement
from tmcd.resources.synctarget import SyncTarget
from tmcd.tui.eventlog import MAX_EVENTS
from tmcd.tui.state import DashboardState

log = logging.getLogger("tmcd.tui")
T = TypeVar("T")
Apply = Callable[[dict[str, T | None], bool], None]
"""Takes changed keys (None: deleted) and whether they are the whole bucket (a snapshot)."""

LIVE_SUBJECTS = ("tmc.syncer.>", "tmc.health.>", "tmc.canary.>", "tmc.rollback.>", "tmc.placement.*.decision")
"""What the dashboard subscribes to."""
REPLAY = (
    (subjects.STREAM_EVENTS, "tmc.health.>"),
    (subjects.STREAM_EVENTS, "tmc.canary.>"),
    (subjects.STREAM_EVENTS, "tmc.rollback.>"),
    (subjects.STREAM_PLACEMENT, "tmc.placement.*.decision"),
    (subjects.STREAM_SYNCER, "tmc.syncer.*.conn"),
)
"""Recent events replayed on start: (stream, subject filter)."""
HEARTBEAT_LOOKBACK = 70.0
"""Seconds of heartbeats read on start: more than three 20 s heartbeat periods."""
MAX_PENDING = 4096
CONNECT_TIMEOUT = 5.0


class _Metrics:
    """The bus's counters, kept in a registry of their own: the dashboard exports nothing."""

    def __init__(self) -> None:
        reg = CollectorRegistry(auto_describe=False)
        self.events_invalid = Counter("tui_events_invalid", "", ["kind", "reason"], registry=reg)
        self.events_processed = Counter("tui_events_processed", "", ["stream"], registry=reg)
        self.nats_connected = Gauge("tui_nats_connected", "", registry=reg)
        self.consumer_pending = Gauge("tui_consumer_pending", "", ["stream"], registry=reg)
        self.nats_errors = Counter("tui_nats_errors", "", ["kind"], registry=reg)
        self.dead_letters_dropped = Counter("tui_dead_letters_dropped", "", registry=reg)


class Feed:
    """Keeps ``state`` current from the NATS at ``url`` until stopped."""

    def __init__(
        self,
        state: DashboardState,
        url: str,
        nats: NatsConfig | None = None,
        *,
        replay_seconds: float = 600.0,
        replay_limit: int = MAX_EVENTS,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.time,
        retry_wait: tuple[float, float] = (0.5, 5.0),
    ) -> None:
        self.state = state
        self.url = url
        self.nats = nats or NatsConfig(name="tmcd-tui")
        self.replay_seconds = replay_seconds
        self.replay_limit = replay_limit
        self.max_pending = max_pending
        self.clock = clock
        self.retry_wait = retry_wait
        self._resync = asyncio.Event()
        self.bus: Bus | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (retrying until ``stop``), subscribe, load, follow; close everything on the way out."""
        bus = Bus(self.nats, _Metrics(), url=self.url, clock=self.clock)
        self.bus = bus
        self.state.url = bus.display_url
        bus.state_listeners.append(self._on_state)
        subs: list[Any] = []
        try:
            if not await self._connect(bus, stop):
                return
            for subject in LIVE_SUBJECTS:
                subs.append(await observe(bus, subject, self._deliver, max_pending=self.max_pending))
            while not stop.is_set():
                self._resync.clear()
                await self._follow(bus, stop)
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.close(dead_letter_timeout=0), 2.0)

    def _deliver(self, d: Delivery[Any]) -> None:
        self.state.apply(d.msg)

    def _on_state(self, up: bool) -> None:
        self.state.set_connection("connected" if up else "disconnected")
        if up:
            self._resync.set()  # after a reconnect: snapshots and replay again (KV consumers may be gone)

    async def _connect(self, bus: Bus, stop: asyncio.Event) -> bool:
        """Connect, retrying with backoff and showing "disconnected" meanwhile; False when stopped first."""
        wait = self.retry_wait[0]
        while not stop.is_set():
            try:
                await asyncio.wait_for(bus.connect(retry=False), CONNECT_TIMEOUT)
                self.state.set_problem("")
                return True
            except (BusError, TimeoutError) as exc:
                self.state.set_connection("disconnected")
                self.state.set_problem(str(exc) or f"no NATS handshake within {CONNECT_TIMEOUT:g}s")
            if await _wait(stop, wait):
                return False
            wait = min(wait * 2, self.retry_wait[1])
        return False

    async def _follow(self, bus: Bus, stop: asyncio.Event) -> None:
        """Load and follow until stopped or reconnected (then the caller loads again)."""
        tasks = [
            asyncio.create_task(self._watch(bus, "clusters", SyncTarget, self._targets, stop)),
            asyncio.create_task(self._watch(bus, "canaries", CanaryRollout, self._canaries, stop)),
            asyncio.create_task(self._watch(bus, "placements", Placement, self._placements, stop)),
            asyncio.create_task(self._replay(bus, stop)),
        ]
        ends = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._resync.wait())]
        try:
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in [*tasks, *ends]:
                t.cancel()
            await asyncio.gather(*tasks, *ends, return_exceptions=True)

    async def _replay(self, bus: Bus, stop: asyncio.Event) -> None:
        """The latest heartbeats and the recent events, so the views open with data."""
        now = self.clock()
        try:
            for d in await recent(
                bus, subjects.STREAM_SYNCER, "tmc.syncer.*.heartbeat", since=now - HEARTBEAT_LOOKBACK, limit=20_000
            ):
                self.state.apply(d.msg)
            for stream, subject in REPLAY:
                for d in await recent(bus, stream, subject, since=now - self.replay_seconds, limit=self.replay_limit):
                    self.state.apply(d.msg)
        except BusError as exc:
            log.debug("replay failed: %s", exc)
            self.state.set_problem(f"cannot replay recent events: {exc}")
        self.state.loaded = True
        self.state.touch()

    async def _watch(self, bus: Bus, logical: str, tp: type[T], apply: Apply[T], stop: asyncio.Event) -> None:
        """Snapshot a bucket, then follow its changes; on failure wait and start over."""
        wait = self.retry_wait[0]
        while not stop.is_set():
            try:
                kv = await bus.kv(logical, tp)
                entries, revision = await kv.snapshot()
                apply({e.key: e.value for e in entries}, True)
                wait = self.retry_wait[0]
                async with kv.change_feed(revision, stop) as feed:
                    async for change in feed:
                        apply({change.key: change.value}, False)
            except BusError as exc:
                # e.g. no tmcd has created the bucket yet: an empty view, and try again
                log.debug("watching %s: %s", logical, exc)
            if await _wait(stop, wait):
                return
            wait = min(wait * 2, self.retry_wait[1])

    def _targets(self, changes: dict[str, SyncTarget | None], whole: bool) -> None:
        if whole:
            for name in self.state.fleet.target_names() - changes.keys():
                self.state.set_target(name, None)
        for key, value in changes.items():
            self.state.set_target(value.metadata.name if value is not None else key, value)

    def _canaries(self, changes: dict[str, CanaryRollout | None], whole: bool) -> None:
        if whole:
            for key in self.state.canaries.keys() - changes.keys():
                self.state.set_canary(key, None)
        for key, value in changes.items():
            self.state.set_canary(key, value)

    def _placements(self, changes: dict[str, Placement | None], whole: bool) -> None:
        if whole:
            for key in self.state.placements.keys() - changes.keys():
                self.state.set_placement(key, None)
        for key, value in changes.items():
            self.state.set_placement(key, value)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop``; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
