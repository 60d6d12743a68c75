"""The kube agent (watch mode): CanaryRollouts and AnalysisTemplates from a Kubernetes API server.

Per watched namespace (or all of them) and kind: list, then watch from the list's
resourceVersion with bookmarks, resume from the last seen resourceVersion when the stream ends,
list again on 410 Gone.  Each CR is mirrored into tmcd's store (:class:`tmcd.api.store.ResourceStore`,
the buckets the API writes), so the canary agent runs it like any rollout; the decisions are
:mod:`tmcd.kube.mirror`'s.  The stored rollouts' status goes back to the CRs through the status
subresource, with a core/v1 Event for each phase change.  A CR deleted in the cluster is deleted
from the store; a rollout still running is aborted first (its traffic returns to stable) and
deleted once the rollback has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import msgspec

from tmcd.api.errors import ApiError
from tmcd.api.store import ResourceStore
from tmcd.bus import KvStore
from tmcd.canary.control import control
from tmcd.canary.model import ACTIVE
from tmcd.kube.client import Conflict, Gone, Kube, KubeError, NotFound, Resource, connect
from tmcd.kube.mirror import decide, mirrored, phase_event, refusal_event, status_patch, store_body
from tmcd.resources.canary import CanaryRollout
from tmcd.resources.kinds import ANALYSIS_TEMPLATE, CANARY_ROLLOUT, Kind, kv_key
from tmcd.runtime.agent import AgentContext

__all__ = ["CANARY_ROLLOUTS", "EVENTS", "KubeAgent"]

log = logging.getLogger("tmcd.kube.watch")

CANARY_ROLLOUTS = Resource("tmc.kcp.io", "v1alpha1", "canaryrollouts")
ANALYSIS_TEMPLATES = Resource("tmc.kcp.io", "v1alpha1", "analysistemplates")
EVENTS = Resource("", "v1", "events")
WATCHED: tuple[tuple[Kind, Resource], ...] = (
    (CANARY_ROLLOUT, CANARY_ROLLOUTS),
    (ANALYSIS_TEMPLATE, ANALYSIS_TEMPLATES),
)
PAGE = 500
"""Objects per list page."""
WATCH_TIMEOUT = 300
"""Seconds a watch request asks the server to keep the stream open (then it is resumed)."""
STATUS_ATTEMPTS = 5
"""Status writes tried (each after a fresh read) when the CR keeps changing under them."""
BACKOFF_MIN, BACKOFF_MAX = 1.0, 30.0
"""Seconds between attempts while the API server is unreachable or refuses (doubling)."""

Obj = dict[str, Any]


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _newer(a: Obj, b: Obj | None) -> bool:
    """True when ``a`` is not older than ``b`` (resourceVersions compared as numbers where they are)."""
    if b is None:
        return True
    ra, rb = _rv(a), _rv(b)
    return not (ra.isdigit() and rb.isdigit()) or int(ra) >= int(rb)


class KubeAgent:
    """Mirrors a cluster's CanaryRollouts and AnalysisTemplates into tmcd and their status back."""

    name = "kube"

    def __init__(self) -> None:
        self.resume: dict[tuple[str, str], str] = {}
        """(plural, namespace) -> the resourceVersion a dropped watch resumes from."""
        self.cluster: dict[str, Obj] = {}
        """Rollout KV key -> the CR as last seen (its resourceVersion and status)."""
        self.deleting: set[str] = set()
        """Rollouts deleted in the cluster, aborted and waiting for their rollback to end."""
        self.recreated: dict[str, Obj] = {}
        """Key -> a CR created again while its predecessor rolls back (mirrored once that one is deleted)."""
        self.refused: dict[str, str] = {}
        """``<Kind>/<key>`` -> the CR resourceVersion already refused (one warning and Event per version)."""
        self.status_writes = 0
        self._locks: dict[str, asyncio.Lock] = {}
        self._kube: Kube | None = None
        self._store: ResourceStore | None = None
        self._origin = ""

    @property
    def kube(self) -> Kube:
        assert self._kube is not None
        return self._kube

    @property
    def store(self) -> ResourceStore:
        assert self._store is not None
        return self._store

    async def run(self, ctx: AgentContext) -> None:
        """Watch every configured namespace and follow the stored rollouts until stopped."""
        settings = ctx.config.kube
        self._kube = await connect(settings)
        self._store = ResourceStore(ctx.bus, clock=ctx.clock)
        self._origin = settings.context or ("in-cluster" if settings.in_cluster else "default")
        kv = await ctx.bus.kv(CANARY_ROLLOUT.bucket, CanaryRollout)
        _, after = await kv.snapshot()
        loops: list[Coroutine[Any, Any, None]] = [
            self._mirror(ctx, kind, res, ns) for ns in (settings.namespaces or [""]) for kind, res in WATCHED
        ]
        tasks = [asyncio.create_task(c) for c in [*loops, self._follow(ctx, kv, after)]]
        stopper = asyncio.create_task(ctx.stop.wait())
        log.info("watch mode: %s in %s", self.kube.where, ", ".join(settings.namespaces) or "all namespaces")
        ctx.started.set()
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper:
                    t.result()  # a loop that failed: the supervisor restarts the agent
        finally:
            pending: set[asyncio.Task[Any]] = {*tasks, stopper}
            while pending:  # cancelled again until they end: a library may swallow one cancellation
                for t in pending:
                    t.cancel()
                done, pending = await asyncio.wait(pending, timeout=1.0)
                for t in done:
                    if not t.cancelled():
                        t.exception()  # retrieved (a failure was raised above already)
            await self.kube.close()

    # -- cluster -> store ---------------------------------------------------------------------------

    async def _mirror(self, ctx: AgentContext, kind: Kind, res: Resource, ns: str) -> None:
        where = f"{res} in {ns or 'all namespaces'}"
        rv, backoff = "", BACKOFF_MIN
        while not ctx.stop.is_set():
            try:
                if not rv:
                    rv = await self._relist(ctx, kind, res, ns)
                    self.resume[(res.plural, ns)] = rv
                async for ev in self.kube.watch(res, ns, rv, timeout=WATCH_TIMEOUT):
                    if ev.type in ("ADDED", "MODIFIED"):
                        await self._on_cr(ctx, kind, ev.object)
                    elif ev.type == "DELETED":
                        await self._on_cr_deleted(ctx, kind, ev.object)
                    rv = ev.resource_version or rv  # bookmarks included: the resume point moves on
                    self.resume[(res.plural, ns)] = rv
                backoff = BACKOFF_MIN  # the server ended the stream: resume from rv
            except Gone:
                log.info("watch %s: resourceVersion %s expired; listing again", where, rv)
                rv = ""
            except KubeError as exc:
                log.warning("watch %s: %s; trying again in %.0f s", where, exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ctx.stop.wait(), backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _relist(self, ctx: AgentContext, kind: Kind, res: Resource, ns: str) -> str:
        """List every page; mirror each CR and forget stored mirrors the cluster no longer has."""
        seen: set[str] = set()
        token, rv = "", ""
        while True:
            page = await self.kube.list(res, ns, limit=PAGE, continue_token=token)
            for cr in page.items:
                meta = cr.get("metadata") or {}
                seen.add(kv_key(kind, str(meta.get("namespace", "")), str(meta.get("name", ""))))
                await self._on_cr(ctx, kind, cr)
            token, rv = page.continue_token, page.resource_version
            if not token:
                break
        kv: KvStore[Any] = await ctx.bus.kv(kind.bucket, kind.type)
        entries, _ = await kv.snapshot()
        for e in entries:
            meta = e.value.metadata
            if e.key not in seen and (not ns or meta.namespace == ns) and mirrored(msgspec.to_builtins(e.value)):
                await self._gone(ctx, kind, meta.namespace, meta.name)
        return rv

    async def _on_cr(self, ctx: AgentContext, kind: Kind, cr: Obj) -> None:
        meta = cr.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        key = kv_key(kind, ns, name)
        if kind is CANARY_ROLLOUT and key in self.deleting:
            self.recreated[key] = cr  # a new rollout, not the aborted one's spec changing under its rollback
            return
        try:
            obj = self.store.decode(kind, store_body(cr, self._origin), name=name, namespace=ns)
        except ApiError as exc:
            await self._refuse(ctx, key, cr, f"invalid: {exc}")
            return
        stored = await self._stored(kind, ns, name)
        decision = decide(msgspec.to_builtins(obj), None if stored is None else msgspec.to_builtins(stored))
        if decision.action == "refuse":
            await self._refuse(ctx, key, cr, decision.reason)
            return
        self.refused.pop(f"{kind.kind}/{key}", None)
        if kind is CANARY_ROLLOUT:
            self._seen(key, cr)
        try:
            if decision.action == "create":
                stored = await self.store.create(kind, obj, ns)
                log.info("mirrored %s %s from the cluster", kind.kind, key)
            elif decision.action == "update":
                obj.metadata.resource_version = ""  # the spec is the cluster's: retried over status writes
                stored = await self.store.replace(kind, ns, name, obj)
        except ApiError as exc:  # created or deleted concurrently: the next event or relist settles it
            log.warning("mirror %s %s: %s", kind.kind, key, exc)
            return
        if kind is CANARY_ROLLOUT and stored is not None:
            await self._write_status(ctx, key, stored)  # a CR whose status is behind (restarts, relists)

    async def _refuse(self, ctx: AgentContext, key: str, cr: Obj, reason: str) -> None:
        seen = f"{cr.get('kind', '')}/{key}"
        if self.refused.get(seen) == _rv(cr):
            return
        self.refused[seen] = _rv(cr)
        log.warning("not mirroring %s %s from the cluster: %s", cr.get("kind", ""), key, reason)
        await self._event(refusal_event(cr, reason, ctx.clock()))

    async def _stored(self, kind: Kind, ns: str, name: str) -> Any:
        try:
            return await self.store.get(kind, ns, name)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    async def _on_cr_deleted(self, ctx: AgentContext, kind: Kind, cr: Obj) -> None:
        meta = cr.get("metadata") or {}
        await self._gone(ctx, kind, str(meta.get("namespace", "")), str(meta.get("name", "")))

    async def _gone(self, ctx: AgentContext, kind: Kind, ns: str, name: str) -> None:
        """The CR is gone: delete the stored mirror, aborting a running rollout first."""
        key = kv_key(kind, ns, name)
        self.refused.pop(f"{kind.kind}/{key}", None)
        if kind is CANARY_ROLLOUT:
            self.cluster.pop(key, None)
            self.recreated.pop(key, None)
        stored = await self._stored(kind, ns, name)
        if stored is None or not mirrored(msgspec.to_builtins(stored)):
            return
        if kind is CANARY_ROLLOUT and stored.status.phase in ACTIVE:
            self.deleting.add(key)
            await self._abort(ctx, key, ns, name)
            return
        await self._delete(ctx, kind, ns, name)

    async def _abort(self, ctx: AgentContext, key: str, ns: str, name: str) -> None:
        """Abort a running rollout whose CR is gone (compare-and-set on a fresh read, again when the
        canary agent wrote first)."""
        for _ in range(STATUS_ATTEMPTS):
            r: CanaryRollout | None = await self._stored(CANARY_ROLLOUT, ns, name)
            if r is None or r.status.phase not in ACTIVE or r.status.phase == "RollingBack":
                return  # ending already: the follower deletes it once it has
            status, code, message = control(r, "abort", ctx.clock())
            if code != 200:  # e.g. an action being applied: the follower tries again at the next change
                log.info("canary %s deleted in the cluster; abort deferred: %s", key, message)
                return
            try:
                await self.store.replace_status(CANARY_ROLLOUT, ns, name, msgspec.structs.replace(r, status=status))
                log.info("canary %s deleted in the cluster while %s: %s", key, r.status.phase, message)
                return
            except ApiError as exc:
                if exc.code != 409:
                    raise
        log.warning("canary %s deleted in the cluster: abort not written after %d conflicts", key, STATUS_ATTEMPTS)

    async def _delete(self, ctx: AgentContext, kind: Kind, ns: str, name: str) -> None:
        key = kv_key(kind, ns, name)
        self.deleting.discard(key)
        self._locks.pop(key, None)
        try:
            await self.store.delete(kind, ns, name)
            log.info("deleted %s %s: deleted in the cluster", kind.kind, key)
        except ApiError as exc:
            if exc.code != 404:
                raise
        again = self.recreated.pop(key, None)
        if again is not None:
            await self._on_cr(ctx, kind, again)

    # -- store -> cluster ---------------------------------------------------------------------------

    async def _follow(self, ctx: AgentContext, kv: KvStore[CanaryRollout], after: int) -> None:
        async for change in kv.changes(after, ctx.stop):
            r = change.value
            if r is None:
                continue
            if change.key in self.deleting:
                if r.status.phase not in ACTIVE:
                    await self._delete(ctx, CANARY_ROLLOUT, r.metadata.namespace, r.metadata.name)
                else:
                    await self._abort(ctx, change.key, r.metadata.namespace, r.metadata.name)  # deferred before
                continue
            if change.key in self.cluster:  # mirrored from the cluster, and still there
                await self._write_status(ctx, change.key, r)

    def _seen(self, key: str, cr: Obj) -> None:
        """Remember the CR as the newest seen (a late watch event of an older version is ignored)."""
        if _newer(cr, self.cluster.get(key)):
            self.cluster[key] = cr

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _write_status(self, ctx: AgentContext, key: str, r: CanaryRollout) -> None:
        """Patch the CR's status to the stored one (nothing when equal); 409: read again, retry."""
        want = msgspec.to_builtins(r.status)
        ns, name = r.metadata.namespace, r.metadata.name
        async with self._lock(key):
            for _ in range(STATUS_ATTEMPTS):
                cr = self.cluster.get(key)
                if cr is None:
                    return
                patch = status_patch(want, cr)
                if patch is None:
                    return
                patch["metadata"] = {"resourceVersion": _rv(cr)}  # conditional: 409 when the CR moved on
                try:
                    new = await self.kube.merge_patch(CANARY_ROLLOUTS, ns, name, patch, status=True)
                except Conflict:
                    try:
                        self._seen(key, await self.kube.get(CANARY_ROLLOUTS, ns, name))
                    except NotFound:
                        self.cluster.pop(key, None)
                    continue
                except NotFound:
                    self.cluster.pop(key, None)
                    return
                except KubeError as exc:
                    log.warning("canary %s: status not written to the cluster: %s", key, exc)
                    return
                self.status_writes += 1
                self._seen(key, new)
                ev = phase_event(new, cr.get("status") or {}, want, ctx.clock())
                if ev is not None:
                    await self._event(ev)
                return
            log.warning("canary %s: status not written after %d conflicting writes", key, STATUS_ATTEMPTS)

    async def _event(self, ev: Obj) -> None:
        """Create a core/v1 Event (best effort: an Event that cannot be written is logged)."""
        ns = str(ev["metadata"]["namespace"])
        try:
            await self.kube.create(EVENTS, ns, ev)
        except KubeError as exc:
            log.warning("event %s on %s: %s", ev["reason"], ev["involvedObject"]["name"], exc)
