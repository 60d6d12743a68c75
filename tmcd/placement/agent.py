"""The placement agent: decides Placements when their spec changes, and again when the fleet does.

It follows the ``tmc-placements`` and ``tmc-clusters`` KV buckets (a snapshot, then their
change streams) and keeps both in memory.  It is the one writer of Placement status:

* a Placement whose spec is new or changed (:func:`~tmcd.placement.model.needs_decision`) is
  decided at once, its status written and a ``PlacementDecision`` published;
* a cluster change that can change a decision (:func:`~tmcd.placement.model.fleet_change_matters`:
  it appeared or vanished, or its labels, cordon, health, connection, pause or fullness changed)
  marks the fleet dirty; the placements it concerns are re-decided, sticking to their current
  selection, at most once per ``interval`` (a burst -- a heartbeat storm, a region going dark --
  costs one pass at its start and one per interval after).  Status is written only when the
  decision differs from it (:func:`~tmcd.placement.model.status_change`), and an event is
  published only when the phase or the set of selected clusters changed.

Writes are compare-and-set on the KV revision; on a conflict the placement is re-read and
reconsidered, and an event is published only after a successful write, so two replicas that
see the same change publish one event for it.  The agent's own writes come back through the
watch and are recognised by their revision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tmcd.bus import BusError, KvEntry, KvStore
from tmcd.contracts import subjects
from tmcd.placement.model import (
    Decision,
    decide,
    fleet_change_matters,
    fleet_pass_at,
    needs_decision,
    status_change,
    to_message,
    to_status,
    touches,
)
from tmcd.resources.placement import Placement, PlacementStatus
from tmcd.resources.selectors import Selector, SelectorError, from_label_selector
from tmcd.resources.synctarget import SyncTarget
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.status import StatusConflictError, write_status

log = logging.getLogger("tmcd.placement")

FLEET_INTERVAL = 1.0
"""Seconds between two re-decisions of the fleet's placements (changes in between are coalesced)."""
CAS_ATTEMPTS = 5
"""Writes of one placement's status tried before giving up until its next change."""

Sleep = Callable[[float], Awaitable[None]]


class PlacementAgent:
    """Keeps every Placement's decision current with its spec and the fleet."""

    name = "placement"

    def __init__(self, *, interval: float = FLEET_INTERVAL, sleep: Sleep = asyncio.sleep) -> None:
        self.interval = interval
        self._sleep = sleep
        self.placements: dict[str, KvEntry[Placement]] = {}
        """KV key -> the placement as last read or written, with its revision."""
        self.clusters: dict[str, SyncTarget] = {}
        self.seen: dict[str, int] = {"placements": 0, "clusters": 0}
        """The last KV revision followed, per bucket."""
        self.busy = False
        """True while deciding (tests wait for quiet with :meth:`settled`)."""
        self._spec_due: set[str] = set()
        self._fleet_before: dict[str, SyncTarget | None] = {}
        """Clusters changed since the last fleet pass -> their state at that pass."""
        self._recheck_all = True  # the first run reconsiders every placement
        self._last_pass: float | None = None
        self._wake = asyncio.Event()
        self._clock: Callable[[], float] = time.time

    def settled(self) -> bool:
        """Nothing to decide now and not deciding (fleet changes may wait for the interval to pass)."""
        if self.busy or self._spec_due:
            return False
        if self._recheck_all or self._fleet_before:
            now = self._clock()
            return now < fleet_pass_at(self._last_pass, now, self.interval)
        return True

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self, ctx: AgentContext) -> None:
        """Load both buckets, decide what needs it, then follow their changes until stopped."""
        placements = await ctx.bus.kv("placements", Placement)
        clusters = await ctx.bus.kv("clusters", SyncTarget)
        self._wake = asyncio.Event()
        self._clock = ctx.clock
        self._spec_due.clear()
        self._fleet_before.clear()
        self._last_pass = None
        cluster_entries, cluster_rev = await clusters.snapshot()
        placement_entries, placement_rev = await placements.snapshot()
        self.clusters = {e.key: e.value for e in cluster_entries}
        self.placements = {e.key: e for e in placement_entries}
        self.seen = {"placements": placement_rev, "clusters": cluster_rev}
        self._spec_due = {k for k, e in self.placements.items() if needs_decision(e.value)}
        self._recheck_all = True  # the fleet may have changed while no agent was watching
        log.info("following %d placements over %d clusters", len(self.placements), len(self.clusters))
        ctx.started.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow_placements(ctx, placements, placement_rev))
            tg.create_task(self._follow_clusters(ctx, clusters, cluster_rev))
            tg.create_task(self._work(ctx, placements))

    # -- following the buckets (no I/O besides the change streams) --------------------------

    async def _follow_placements(self, ctx: AgentContext, kv: KvStore[Placement], after: int) -> None:
        async for change in kv.changes(after, ctx.stop):
            self.seen["placements"] = change.revision
            known = self.placements.get(change.key)
            if known is not None and change.revision <= known.revision:
                continue  # our own status write coming back
            if change.value is None:
                self.placements.pop(change.key, None)
                self._spec_due.discard(change.key)
                continue
            self.placements[change.key] = KvEntry(change.key, change.value, change.revision)
            if needs_decision(change.value):
                self._spec_due.add(change.key)
                self._wake.set()

    async def _follow_clusters(self, ctx: AgentContext, kv: KvStore[SyncTarget], after: int) -> None:
        async for change in kv.changes(after, ctx.stop):
            self.seen["clusters"] = change.revision
            before = self.clusters.get(change.key)
            if change.value is None:
                self.clusters.pop(change.key, None)
            else:
                self.clusters[change.key] = change.value
            if fleet_change_matters(before, change.value):
                self._fleet_before.setdefault(change.key, before)
                self._wake.set()

    # -- deciding ---------------------------------------------------------------------------

    async def _work(self, ctx: AgentContext, kv: KvStore[Placement]) -> None:
        while not ctx.stop.is_set():
            self._wake.clear()
            if self._spec_due:
                await self._decide_specs(ctx, kv)
                continue
            if self._recheck_all or self._fleet_before:
                due = fleet_pass_at(self._last_pass, ctx.clock(), self.interval)
                if ctx.clock() >= due:
                    await self._fleet_pass(ctx, kv)
                    continue
                await self._wait(ctx, due - ctx.clock())
            else:
                await self._wait(ctx, None)

    async def _wait(self, ctx: AgentContext, delay: float | None) -> None:
        """Until there is news, stop is requested, or ``delay`` has passed."""
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(ctx.stop.wait()),
        ]
        if delay is not None:
            waiters.append(asyncio.ensure_future(self._sleep(delay)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _decide_specs(self, ctx: AgentContext, kv: KvStore[Placement]) -> None:
        self.busy = True
        try:
            for key in sorted(self._spec_due):
                self._spec_due.discard(key)
                await self._reconcile(ctx, kv, key, "spec")
        finally:
            self.busy = False

    async def _fleet_pass(self, ctx: AgentContext, kv: KvStore[Placement]) -> None:
        """Re-decide the placements the fleet changes since the last pass concern."""
        self.busy = True
        try:
            self._last_pass = ctx.clock()
            everything, self._recheck_all = self._recheck_all, False
            changed = [
                (before, self.clusters.get(name))
                for name, before in self._fleet_before.items()
                if fleet_change_matters(before, self.clusters.get(name))
            ]
            self._fleet_before.clear()
            if not changed and not everything:
                return
            for key in sorted(self.placements):
                entry = self.placements.get(key)
                if entry is None or not (everything or _concerns(entry.value, changed)):
                    continue
                await self._reconcile(ctx, kv, key, "fleet")
                await asyncio.sleep(0)  # a decision over a large fleet takes milliseconds: let others run
        finally:
            self.busy = False

    async def _reconcile(self, ctx: AgentContext, kv: KvStore[Placement], key: str, why: str) -> None:
        """Decide one placement; write status (a status write: compare-and-set, the spec and metadata
        as stored) and publish when it changed."""
        entry = self.placements.get(key)
        if entry is None:
            return
        made: list[tuple[Placement, list[str], Decision, float, str]] = []

        def status(placement: Placement) -> PlacementStatus | None:
            made.clear()  # called again with the fresh object after a conflict
            if _owned_by_canary(placement):
                return None  # the canary controller decides its <rollout>-canary placements
            spec = needs_decision(placement)
            previous = [s.cluster for s in placement.status.selected_clusters]
            started = time.perf_counter()
            now = ctx.clock()
            try:
                decision = decide(placement, _sorted(self.clusters), previous=previous, now=now)
            except ValueError as exc:  # validation keeps these out; a bad object written past the API
                log.warning("placement %s cannot be decided: %s", key, exc)
                return None
            change = "decision" if spec else status_change(placement.status, decision)
            if change == "none":
                return None
            made.append((placement, previous, decision, time.perf_counter() - started, change))
            meta = placement.metadata
            return to_status(decision, now, observed_generation=meta.generation, previous=placement.status.conditions)

        try:
            done = await write_status(kv, key, status, current=entry, attempts=CAS_ATTEMPTS)
        except StatusConflictError:
            log.warning("placement %s: status not written after %d conflicting writes", key, CAS_ATTEMPTS)
            return
        if done.entry is None:
            self.placements.pop(key, None)
            return
        if done.entry.revision > entry.revision:
            self.placements[key] = done.entry
        if done.written and made and made[0][4] == "decision":
            placement, previous, decision, latency, _change = made[0]
            await self._publish(ctx, placement, previous, decision, latency, why)

    async def _publish(
        self, ctx: AgentContext, placement: Placement, previous: list[str], decision: Decision, latency: float, why: str
    ) -> None:
        name = placement.metadata.name
        log.info(
            "placement %s: %s, selected %s (was %s) after a %s change",
            name,
            decision.phase,
            ",".join(decision.selected) or "none",
            ",".join(previous) or "none",
            why,
        )
        try:
            await ctx.bus.js_publish(subjects.placement_decision(name), to_message(decision, name, latency))
        except BusError as exc:  # the status is written; only the event is lost
            log.warning("placement %s: decision not published: %s", name, exc)


def _sorted(clusters: dict[str, SyncTarget]) -> list[SyncTarget]:
    return [clusters[k] for k in sorted(clusters)]


def _concerns(placement: Placement, changed: list[tuple[SyncTarget | None, SyncTarget | None]]) -> bool:
    try:
        selectors: list[Selector] = [from_label_selector(ls) for ls in placement.spec.location_selectors]
    except SelectorError:
        return True  # let the decision report it
    return any(touches(selectors, before, after) for before, after in changed)


def _owned_by_canary(placement: Placement) -> bool:
    return any(o.kind == "CanaryRollout" for o in placement.metadata.owner_references)
