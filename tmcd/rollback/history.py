"""The revision history's I/O: :class:`RevisionKeeper` writes every rollout's RolloutRevision records,
and :func:`revision` / :func:`revisions` read them for the rollback engine.

The keeper follows the ``tmc-canaries`` and ``tmc-revisions`` buckets (a snapshot, then their
change streams) and, whenever a rollout or one of its records changes, applies
:func:`tmcd.rollback.revisions.plan`: records are created as the API creates objects, their spec
updated as the API updates it and their status written through the status subresource's rule
(:mod:`tmcd.runtime.status`), every write and deletion compare-and-set on the KV revision.  On a
conflict (another replica, a user) the records are read again and the plan made again.  Everything
is derived from what KV holds, so a keeper started after a crash (or a second one) converges to the
same records and writes nothing more once they match.

The revisions are read *before* the rollouts at start: a record whose rollout is then missing was
made for a rollout deleted since, and goes with it (its ownerReference); a rollout whose stored
value does not decode is not taken for deleted.

It is not an agent of its own: the rollback agent runs ``RevisionKeeper().run(ctx)`` as one of its
tasks (it never sets ``ctx.started``; :attr:`RevisionKeeper.ready` says when it has loaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from tmcd.bus import BusError, CasConflictError, CorruptValueError, KvEntry, KvStore
from tmcd.canary.clusters import eligible_pool
from tmcd.resources.canary import CanaryRollout, RolloutRevision, RolloutRevisionStatus
from tmcd.resources.placement import Placement
from tmcd.resources.synctarget import SyncTarget
from tmcd.rollback.revisions import ROLLOUT_LABEL, Plan, needs_eligible, owned, plan, revision_name
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.status import StatusConflictError, create_object, update_object, write_status

__all__ = ["RevisionKeeper", "revision", "revisions"]

log = logging.getLogger("tmcd.rollback")

CAS_ATTEMPTS = 5
"""Plans of one rollout tried in a row when its records keep changing under the writes."""
RETRY_SECONDS = 5.0
"""A rollout whose records could not be written (NATS unavailable) is tried again after this long."""


async def revisions(kv: KvStore[RolloutRevision], namespace: str, rollout: str) -> list[RolloutRevision]:
    """The rollout's revision records, newest first (one pass over the namespace's keys)."""
    entries, _ = await kv.snapshot(f"{namespace}.*")
    found = [_read(e) for e in entries if owned(e.value) and e.value.spec.rollout == rollout]
    return sorted(found, key=lambda r: r.spec.revision, reverse=True)


async def revision(kv: KvStore[RolloutRevision], namespace: str, rollout: str, number: int) -> RolloutRevision | None:
    """Revision ``number`` of the rollout, or None when it is not recorded (or was pruned)."""
    entry = await kv.get(f"{namespace}.{revision_name(rollout, number)}")
    if (
        entry is not None
        and owned(entry.value)
        and (entry.value.spec.rollout, entry.value.spec.revision)
        == (
            rollout,
            number,
        )
    ):
        return _read(entry)
    if revision_name(rollout, number) != f"{rollout}-{number}":  # a shortened name may be another rollout's
        return next((r for r in await revisions(kv, namespace, rollout) if r.spec.revision == number), None)
    return None


def _read(entry: KvEntry[RolloutRevision]) -> RolloutRevision:
    """The record with its ``resourceVersion``, as the API serves it."""
    meta = msgspec.structs.replace(entry.value.metadata, resource_version=str(entry.revision))
    return msgspec.structs.replace(entry.value, metadata=meta)


def _owner_key(key: str, rec: RolloutRevision) -> str | None:
    """The rollout's KV key (``namespace.name``) of a record the keeper manages, else None."""
    namespace, dot, _ = key.partition(".")
    return f"{namespace}.{rec.metadata.labels[ROLLOUT_LABEL]}" if dot and owned(rec) else None


class RevisionKeeper:
    """Keeps every CanaryRollout's revision history written (see the module docstring)."""

    name = "revisions"

    def __init__(self, *, default_limit: int | None = None) -> None:
        self.default_limit = default_limit
        """``revisionHistoryLimit`` for rollouts that leave it at its default; None: the config's
        ``rollback.revision_history_limit``."""
        self.rollouts: dict[str, KvEntry[CanaryRollout]] = {}
        """Rollout KV key -> the rollout as last read."""
        self.records: dict[str, dict[str, KvEntry[RolloutRevision]]] = {}
        """Rollout KV key -> its records (KV key -> entry)."""
        self.ready = asyncio.Event()
        """Set once both buckets are loaded and the first pass is queued."""
        self.busy = False
        self.writes = 0
        """Records created, updated or deleted (a figure for tests and benchmarks)."""
        self._owner: dict[str, str] = {}
        """Record KV key -> its rollout's KV key."""
        self._dirty: set[str] = set()
        self._later: set[str] = set()
        """Rollouts to try again at ``_retry_at`` (event-loop time) after a failed write."""
        self._retry_at = 0.0
        self._wake = asyncio.Event()
        self._fleet: list[SyncTarget] | None = None
        """The SyncTargets read for one pass (eligible clusters), dropped after it."""

    def settled(self) -> bool:
        """Loaded, and nothing left to write."""
        return self.ready.is_set() and not self.busy and not self._dirty

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, ctx: AgentContext) -> None:
        """Load both buckets, bring every rollout's history up to date, then follow their changes."""
        self.ready.clear()
        self._dirty.clear()
        self._later.clear()
        self._wake = asyncio.Event()
        if self.default_limit is None:
            self.default_limit = ctx.config.rollback.revision_history_limit
        kv = await ctx.bus.kv("revisions", RolloutRevision)
        canaries = await ctx.bus.kv("canaries", CanaryRollout)
        records, records_at = await kv.snapshot()  # first: see the module docstring
        rollouts, rollouts_at = await canaries.snapshot()
        self.rollouts = {e.key: e for e in rollouts}
        self.records, self._owner = {}, {}
        for e in records:
            self._index(e)
        self._dirty = set(self.rollouts) | set(self.records)
        log.info("revision history: %d rollouts, %d records", len(self.rollouts), len(records))
        self.ready.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow_rollouts(ctx, canaries, rollouts_at))
            tg.create_task(self._follow_records(ctx, kv, records_at))
            tg.create_task(self._work(ctx, kv, canaries))

    def _index(self, e: KvEntry[RolloutRevision]) -> None:
        self._forget(e.key)
        owner = _owner_key(e.key, e.value)
        if owner is not None:
            self.records.setdefault(owner, {})[e.key] = e
            self._owner[e.key] = owner

    def _forget(self, key: str) -> str | None:
        owner = self._owner.pop(key, None)
        if owner is not None:
            recs = self.records.get(owner, {})
            recs.pop(key, None)
            if not recs:
                self.records.pop(owner, None)
        return owner

    def _mark(self, key: str) -> None:
        self._dirty.add(key)
        self._wake.set()

    # -- following the buckets -------------------------------------------------------------------

    async def _follow_rollouts(self, ctx: AgentContext, kv: KvStore[CanaryRollout], after: int) -> None:
        async for change in kv.changes(after, ctx.stop):
            known = self.rollouts.get(change.key)
            if known is not None and change.revision <= known.revision:
                continue
            if change.value is None:
                self.rollouts.pop(change.key, None)
            else:
                self.rollouts[change.key] = KvEntry(change.key, change.value, change.revision)
            self._mark(change.key)

    async def _follow_records(self, ctx: AgentContext, kv: KvStore[RolloutRevision], after: int) -> None:
        async for change in kv.changes(after, ctx.stop):
            owner = self._owner.get(change.key)
            known = self.records.get(owner, {}).get(change.key) if owner else None
            if known is not None and change.revision <= known.revision:
                continue  # our own write coming back
            if change.value is None:
                gone = self._forget(change.key)
                if gone is not None:  # deleted by someone else (ours are forgotten already)
                    self._mark(gone)
                continue
            self._index(KvEntry(change.key, change.value, change.revision))
            for key in (owner, self._owner.get(change.key)):
                if key is not None:
                    self._mark(key)

    # -- writing ---------------------------------------------------------------------------------

    async def _work(self, ctx: AgentContext, kv: KvStore[RolloutRevision], canaries: KvStore[CanaryRollout]) -> None:
        while not ctx.stop.is_set():
            self._wake.clear()
            if self._dirty:
                self.busy = True
                try:
                    for key in sorted(self._dirty):
                        self._dirty.discard(key)
                        await self._reconcile(ctx, kv, canaries, key)
                        await asyncio.sleep(0)
                finally:
                    self.busy = False
                    self._fleet = None
                continue
            loop = asyncio.get_running_loop()
            if self._later and loop.time() >= self._retry_at:
                self._dirty |= self._later
                self._later.clear()
                continue
            timeout = max(self._retry_at - loop.time(), 0.0) if self._later else None
            await _first(ctx.stop.wait(), self._wake.wait(), timeout=timeout)

    async def _reconcile(
        self, ctx: AgentContext, kv: KvStore[RolloutRevision], canaries: KvStore[CanaryRollout], key: str
    ) -> None:
        """Plan the rollout's history and apply it; on a conflict read its records again and replan."""
        try:
            for _ in range(CAS_ATTEMPTS):
                p = await self._plan(ctx, canaries, key)
                if not p:
                    return
                try:
                    await self._apply(ctx, kv, key, p)
                    return
                except CasConflictError:
                    await self._refresh(kv, key, p)
            log.warning("revisions of %s: still conflicting after %d attempts; trying again later", key, CAS_ATTEMPTS)
        except BusError as exc:
            log.warning("revisions of %s not written: %s; trying again in %gs", key, exc, RETRY_SECONDS)
        if not self._later:
            self._retry_at = asyncio.get_running_loop().time() + RETRY_SECONDS
        self._later.add(key)

    async def _plan(self, ctx: AgentContext, canaries: KvStore[CanaryRollout], key: str) -> Plan:
        entry = self.rollouts.get(key)
        existing = [e.value for e in self.records.get(key, {}).values()]
        if entry is None:
            if not existing:
                return Plan()
            with contextlib.suppress(CorruptValueError):  # unreadable is not deleted: keep its history
                if await canaries.get(key) is None:
                    return plan(None, existing, ctx.clock())
            return Plan()
        rollout = entry.value
        eligible = await self._eligible(ctx, rollout) if needs_eligible(rollout, existing) else None
        limit = self.default_limit if self.default_limit is not None else 10
        return plan(rollout, existing, ctx.clock(), default_limit=limit, eligible=eligible)

    async def _eligible(self, ctx: AgentContext, rollout: CanaryRollout) -> list[str] | None:
        """The clusters the rollout's stable version runs on (its eligible ones); None when unknown."""
        try:
            if self._fleet is None:
                targets, _ = await (await ctx.bus.kv("clusters", SyncTarget)).snapshot()
                self._fleet = [e.value for e in targets]
            parent = None
            if rollout.spec.placement_ref:
                found = await (await ctx.bus.kv("placements", Placement)).get(rollout.spec.placement_ref)
                parent = found.value if found is not None else None
        except BusError as exc:
            log.debug("eligible clusters of %s unknown: %s", rollout.metadata.name, exc)
            return None
        pool, problem = eligible_pool(rollout, self._fleet, parent)
        return None if problem else sorted(t.metadata.name for t in pool)

    async def _apply(self, ctx: AgentContext, kv: KvStore[RolloutRevision], key: str, p: Plan) -> None:
        """Deletions, then writes; raises CasConflictError when a record moved meanwhile."""
        namespace = key.partition(".")[0]
        recs = self.records.get(key, {})
        for name in p.deletes:
            rkey = f"{namespace}.{name}"
            entry = recs.get(rkey)
            if entry is not None:
                await kv.delete(rkey, entry.revision)
                self._forget(rkey)
                self.writes += 1
        for w in p.writes:
            rkey = f"{namespace}.{w.revision.metadata.name}"
            entry = self.records.get(key, {}).get(rkey)
            if w.create or entry is None:
                entry = await create_object(kv, rkey, w.revision, clock=ctx.clock)
                if entry is None:
                    raise CasConflictError(f"{rkey} exists already")
            elif entry.value.spec != w.revision.spec:
                entry = await update_object(kv, entry, msgspec.structs.replace(entry.value, spec=w.revision.spec))
            self._index(entry)
            if entry.value.status != w.revision.status:
                try:
                    done = await write_status(kv, rkey, _status(w.revision.status), current=entry, attempts=1)
                except StatusConflictError as exc:
                    raise CasConflictError(str(exc)) from exc
                if done.entry is not None:
                    self._index(done.entry)
            self.writes += 1

    async def _refresh(self, kv: KvStore[RolloutRevision], key: str, p: Plan) -> None:
        """Read the rollout's records (and those the plan names) again after a conflict."""
        namespace = key.partition(".")[0]
        keys = {*self.records.get(key, {}), *(f"{namespace}.{w.revision.metadata.name}" for w in p.writes)}
        for rkey in sorted(keys):
            entry = await kv.get(rkey)
            if entry is None:
                self._forget(rkey)
            else:
                self._index(entry)


def _status(status: RolloutRevisionStatus) -> Callable[[RolloutRevision], RolloutRevisionStatus]:
    return lambda _stored: status


async def _first(*aws: Coroutine[Any, Any, Any], timeout: float | None) -> None:
    """Until the first of ``aws`` is done, or ``timeout`` seconds (the rest cancelled)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
