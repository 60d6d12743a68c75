"""The kube agent (watch mode): CanaryRollouts and AnalysisTemplates from a Kubernetes API server.

Per watched namespace (or all of them) and kind: list, then watch from the list's
resourceVersion with bookmarks, resume from the last seen resourceVersion when the stream ends,
list again on 410 Gone.  Each CR is mirrored into tmcd's store (:class:`tmcd.api.store.ResourceStore`,
the buckets the API writes), so the canary agent runs it like any rollout; the decisions are
:mod:`tmcd.kube.mirror`'s.  The stored rollouts' status goes back to the CRs through the status
subresource (:mod:`tmcd.kube.status`), with a core/v1 Event for each phase change.  A CR deleted
in the cluster is deleted from the store; a rollout still running is aborted first (its traffic
returns to stable) and deleted once the rollback has ended.

An API server that cannot be reached (at start or later) is retried with capped exponential
backoff, never by crashing the agent; :mod:`tmcd.kube.health` logs one line per change and backs
the ``kube`` (readyz) and ``kube-api`` (healthz) checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from tmcd.api.errors import ApiError
from tmcd.api.store import ResourceStore
from tmcd.bus import KvStore
from tmcd.canary.control import control
from tmcd.canary.model import ACTIVE
from tmcd.kube.client import Dropped, Gone, Kube, KubeError, Resource, connect
from tmcd.kube.health import BACKOFF_MAX, BACKOFF_MIN, ApiHealth, Backoff, Sleep, interruptible_sleep
from tmcd.kube.metrics import KubeMetrics
from tmcd.kube.mirror import decide, mirrored, refusal_event, store_body
from tmcd.kube.status import CANARY_ROLLOUTS, EVENTS, STATUS_ATTEMPTS, StatusWriter
from tmcd.resources.canary import CanaryRollout
from tmcd.resources.kinds import ANALYSIS_TEMPLATE, CANARY_ROLLOUT, Kind, kv_key
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.probes import CheckFn

__all__ = ["CANARY_ROLLOUTS", "EVENTS", "KubeAgent"]

log = logging.getLogger("tmcd.kube.watch")

ANALYSIS_TEMPLATES = Resource("tmc.kcp.io", "v1alpha1", "analysistemplates")
WATCHED: tuple[tuple[Kind, Resource], ...] = (
    (CANARY_ROLLOUT, CANARY_ROLLOUTS),
    (ANALYSIS_TEMPLATE, ANALYSIS_TEMPLATES),
)
PAGE = 500
"""Objects per list page."""
WATCH_TIMEOUT = 300
"""Seconds a watch request asks the server to keep the stream open (then it is resumed)."""

Obj = dict[str, Any]


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


class KubeAgent:
    """Mirrors a cluster's CanaryRollouts and AnalysisTemplates into tmcd and their status back."""

    name = "kube"

    def __init__(
        self, *, sleep: Sleep = interruptible_sleep, backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX
    ) -> None:
        self.resume: dict[tuple[str, str], str] = {}
        """(plural, namespace) -> the resourceVersion a dropped watch resumes from."""
        self.deleting: set[str] = set()
        """Rollouts deleted in the cluster, aborted and waiting for their rollback to end."""
        self.recreated: dict[str, Obj] = {}
        """Key -> a CR created again while its predecessor rolls back (mirrored once that one is deleted)."""
        self.refused: dict[str, str] = {}
        """``<Kind>/<key>`` -> the CR resourceVersion already refused (one warning and Event per version)."""
        self._sleep = sleep
        self._backoff = (backoff_min, backoff_max)
        self._clock: Callable[[], float] = time.time
        self.health = ApiHealth(lambda: self._clock())
        """Reachability and first lists (kept across restarts: ready once stays ready)."""
        self.metrics: KubeMetrics | None = None
        self.writer: StatusWriter | None = None
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

    @property
    def _writer(self) -> StatusWriter:
        assert self.writer is not None
        return self.writer

    @property
    def cluster(self) -> dict[str, Obj]:
        """Rollout KV key -> the CR as last seen."""
        return self.writer.crs if self.writer is not None else {}

    def checks(self) -> list[tuple[str, CheckFn, tuple[str, ...]]]:
        """``kube`` (readyz, healthz): every watch has listed once; ``kube-api`` (healthz): the API
        server answers and no watch keeps failing.  The daemon registers them."""
        return [("kube", self.health.ready, ("readyz", "healthz")), ("kube-api", self.health.serving, ("healthz",))]

    async def run(self, ctx: AgentContext) -> None:
        """Watch every configured namespace and follow the stored rollouts until stopped."""
        settings = ctx.config.kube
        self._clock = ctx.clock
        if self.metrics is None or self.metrics.registry is not ctx.metrics.registry:
            self.metrics = KubeMetrics(ctx.metrics.registry)  # once per registry: restarts reuse it
        self.health.gauge = self.metrics.api_up
        self._store = ResourceStore(ctx.bus, clock=ctx.clock)
        self._origin = settings.context or ("in-cluster" if settings.in_cluster else "default")
        namespaces = settings.namespaces or [""]
        where = f"context {settings.context}" if settings.context else "the kubeconfig's current context"
        if settings.in_cluster and not settings.context:
            where = "the in-cluster service account"
        self.health.expect(where, [_loop(res, ns) for ns in namespaces for _, res in WATCHED])
        ctx.started.set()  # readiness is the kube check's: every kind listed once
        kube = await self._connect(ctx)
        if kube is None:
            return
        self._kube = kube
        writer = StatusWriter(self.health, self.metrics, ctx.clock, sleep=self._sleep, backoff=Backoff(*self._backoff))
        self.writer = writer
        writer.kube = kube
        tasks: list[asyncio.Task[Any]] = []
        try:
            kv = await ctx.bus.kv(CANARY_ROLLOUT.bucket, CanaryRollout)
            _, after = await kv.snapshot()
            loops: list[Coroutine[Any, Any, None]] = [
                self._mirror(ctx, kind, res, ns) for ns in namespaces for kind, res in WATCHED
            ]
            tasks = [asyncio.create_task(c) for c in [*loops, self._follow(ctx, kv, after), writer.run()]]
            stopper = asyncio.create_task(ctx.stop.wait())
            tasks.append(stopper)
            log.info("watch mode: %s in %s", kube.where, ", ".join(settings.namespaces) or "all namespaces")
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper:
                    t.result()  # a loop that failed: the supervisor restarts the agent
        finally:
            pending: set[asyncio.Task[Any]] = set(tasks)
            while pending:  # cancelled again until they end: a library may swallow one cancellation
                for t in pending:
                    t.cancel()
                done, pending = await asyncio.wait(pending, timeout=1.0)
                for t in done:
                    if not t.cancelled():
                        t.exception()  # retrieved (a failure was raised above already)
            await kube.close()

    async def _connect(self, ctx: AgentContext) -> Kube | None:
        """The API client; a kubeconfig that cannot be loaded (yet) is tried again with backoff."""
        backoff = Backoff(*self._backoff)
        while not ctx.stop.is_set():
            try:
                return await connect(ctx.config.kube)
            except KubeError as exc:
                self.health.failed("kubeconfig", exc)
                await self._sleep(backoff.next(), ctx.stop)
        return None

    # -- cluster -> store ---------------------------------------------------------------------------

    async def _mirror(self, ctx: AgentContext, kind: Kind, res: Resource, ns: str) -> None:
        loop, metrics = _loop(res, ns), self.metrics
        assert metrics is not None
        rv, reason, backoff = "", "start", Backoff(*self._backoff)
        while not ctx.stop.is_set():
            events = 0
            try:
                if not rv:
                    rv = await self._relist(ctx, kind, res, ns)
                    self.resume[(res.plural, ns)] = rv
                    metrics.relist(kind.kind, reason)
                    self.health.done_listing(loop)
                async for ev in self.kube.watch(res, ns, rv, timeout=WATCH_TIMEOUT):
                    events += 1
                    self.health.answered(loop)
                    metrics.watch_event(kind.kind, ev.type)
                    if ev.type in ("ADDED", "MODIFIED"):
                        await self._on_cr(ctx, kind, ev.object)
                    elif ev.type == "DELETED":
                        await self._on_cr_deleted(ctx, kind, ev.object)
                    rv = ev.resource_version or rv  # bookmarks included: the resume point moves on
                    self.resume[(res.plural, ns)] = rv
                backoff.reset()  # the server ended the stream: resume from rv
            except Gone:
                log.info("watch %s: resourceVersion %s expired; listing again", loop, rv)
                rv, reason = "", "expired"
            except Dropped as exc:  # the stream broke: resume at once if it was delivering, else back off
                log.debug("watch %s: %s", loop, exc)
                if events:
                    backoff.reset()
                else:
                    await self._sleep(backoff.next(), ctx.stop)
            except KubeError as exc:
                self.health.failed(loop, exc)
                await self._sleep(backoff.next(), ctx.stop)

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
            self._writer.seen(key, cr)
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
            self._writer.submit(key, stored)  # a CR whose status is behind (restarts, relists)

    async def _refuse(self, ctx: AgentContext, key: str, cr: Obj, reason: str) -> None:
        seen = f"{cr.get('kind', '')}/{key}"
        if self.refused.get(seen) == _rv(cr):
            return
        self.refused[seen] = _rv(cr)
        log.warning("not mirroring %s %s from the cluster: %s", cr.get("kind", ""), key, reason)
        await self._writer.event(refusal_event(cr, reason, ctx.clock()))

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
            self._writer.forget(key)
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
            self._writer.submit(change.key, r)  # when mirrored from the cluster, and still there


def _loop(res: Resource, ns: str) -> str:
    """A watch in words: ``canaryrollouts.tmc.kcp.io in shop``."""
    return f"{res} in {ns or 'all namespaces'}"
