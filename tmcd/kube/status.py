"""Watch mode's writes to the cluster: the stored rollouts' status to their CRs, and core/v1 Events.

Each stored status change is handed to :meth:`StatusWriter.submit`; at most one write per CR waits
(a newer status replaces the waiting one), and one task writes them in turn.  A write is a merge
patch of the status subresource, conditional on the CR's last seen resourceVersion:

- 409 Conflict: the CR is read again and the patch tried on it (``STATUS_ATTEMPTS`` in all);
- no answer, 429 or 5xx: the write waits (backoff, or until the API server answers again) and is
  tried again until it lands, unless a newer status replaced it meanwhile;
- 404: the CR is gone, the write is dropped (the watch's DELETED ends the rollout);
- any other error: logged, dropped until the status changes again.

A phase change that was written creates an Event; Events are best effort (logged and counted).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec

from tmcd.kube.client import Conflict, Kube, KubeError, NotFound, Resource
from tmcd.kube.health import ApiHealth, Backoff, Sleep, interruptible_sleep, retryable
from tmcd.kube.metrics import KubeMetrics
from tmcd.kube.mirror import phase_event, status_patch
from tmcd.resources.canary import CanaryRollout

__all__ = ["CANARY_ROLLOUTS", "EVENTS", "STATUS_ATTEMPTS", "StatusWriter"]

log = logging.getLogger("tmcd.kube.watch")

CANARY_ROLLOUTS = Resource("tmc.kcp.io", "v1alpha1", "canaryrollouts")
EVENTS = Resource("", "v1", "events")
STATUS_ATTEMPTS = 5
"""Status writes tried (each after a fresh read) when the CR keeps changing under them."""
LOOP = "status writes"
"""How :class:`ApiHealth` names the writer's failures."""

Obj = dict[str, Any]


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _newer(a: Obj, b: Obj | None) -> bool:
    """True when ``a`` is not older than ``b`` (resourceVersions compared as numbers where they are)."""
    if b is None:
        return True
    ra, rb = _rv(a), _rv(b)
    return not (ra.isdigit() and rb.isdigit()) or int(ra) >= int(rb)


class StatusWriter:
    """The CRs as last seen, the status writes waiting for them, and the task that writes them."""

    def __init__(
        self,
        health: ApiHealth,
        metrics: KubeMetrics,
        clock: Callable[[], float],
        *,
        sleep: Sleep = interruptible_sleep,
        backoff: Backoff | None = None,
    ) -> None:
        self.health, self.metrics, self._clock, self._sleep = health, metrics, clock, sleep
        self._backoff = backoff or Backoff()
        self.kube: Kube | None = None
        self.crs: dict[str, Obj] = {}
        """Rollout KV key -> the CR as last seen (its resourceVersion and status)."""
        self.pending: OrderedDict[str, CanaryRollout] = OrderedDict()
        """Rollout KV key -> the newest stored rollout whose status is not written yet."""
        self.written = 0
        self._wake = asyncio.Event()
        self._retry = asyncio.Event()

    # -- what the agent tells it -------------------------------------------------------------------

    def seen(self, key: str, cr: Obj) -> None:
        """Remember the CR as the newest seen (a late watch event of an older version is ignored)."""
        if _newer(cr, self.crs.get(key)):
            self.crs[key] = cr

    def forget(self, key: str) -> None:
        """The CR is gone: nothing more to write to it."""
        self.crs.pop(key, None)
        if self.pending.pop(key, None) is not None:
            self.metrics.pending.set(len(self.pending))

    def submit(self, key: str, r: CanaryRollout) -> None:
        """Write ``r``'s status to its CR (replacing a write of an older status still waiting)."""
        if key not in self.crs:
            return
        self.pending[key] = r
        self.metrics.pending.set(len(self.pending))
        self._wake.set()

    # -- the task ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Write the waiting statuses, one at a time, until cancelled."""
        self.health.on_up.append(self._retry.set)
        try:
            await self._loop()
        finally:
            self.health.on_up.remove(self._retry.set)

    async def _loop(self) -> None:
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            key, r = self.pending.popitem(last=False)
            self.metrics.pending.set(len(self.pending))
            self._retry.clear()  # before the attempt: an API server back during it ends the wait below
            if await self._write(key, r):
                self._backoff.reset()
                continue
            if key not in self.pending:  # a newer status submitted meanwhile wins
                self.pending[key] = r
                self.pending.move_to_end(key, last=False)  # and is the next one tried
                self.metrics.pending.set(len(self.pending))
            # until the backoff ends, or at once when the API server answers the watches again
            await self._sleep(self._backoff.next(), self._retry)

    async def _write(self, key: str, r: CanaryRollout) -> bool:
        """One status write (conflicts retried on a fresh read); False when it must be tried again later."""
        assert self.kube is not None
        kube = self.kube
        want = msgspec.to_builtins(r.status)
        ns, name = r.metadata.namespace, r.metadata.name
        for _ in range(STATUS_ATTEMPTS):
            cr = self.crs.get(key)
            if cr is None:
                return True
            patch = status_patch(want, cr)
            if patch is None:
                return True
            patch["metadata"] = {"resourceVersion": _rv(cr)}  # conditional: 409 when the CR moved on
            try:
                new = await kube.merge_patch(CANARY_ROLLOUTS, ns, name, patch, status=True)
            except Conflict:
                self.metrics.status_write("conflict")
                try:
                    self.seen(key, await kube.get(CANARY_ROLLOUTS, ns, name))
                except NotFound:
                    self.forget(key)
                    return True
                except KubeError as exc:
                    return self._failed(key, exc)
                continue
            except NotFound:
                self.metrics.status_write("not_found")
                self.forget(key)
                return True
            except KubeError as exc:
                return self._failed(key, exc)
            self.metrics.status_write("written")
            self.health.answered(LOOP)
            self.written += 1
            self.seen(key, new)
            ev = phase_event(new, cr.get("status") or {}, want, self._clock())
            if ev is not None:
                await self.event(ev)
            return True
        log.warning("canary %s: status not written after %d conflicting writes", key, STATUS_ATTEMPTS)
        return True

    def _failed(self, key: str, exc: KubeError) -> bool:
        if retryable(exc):
            self.metrics.status_write("unavailable")
            self.health.failed(LOOP, exc)
            return False
        self.metrics.status_write("rejected")
        log.warning("canary %s: status not written to the cluster: %s", key, exc)
        return True

    async def event(self, ev: Obj) -> None:
        """Create a core/v1 Event (best effort: an Event that cannot be written is logged and counted)."""
        assert self.kube is not None
        ns = str(ev["metadata"]["namespace"])
        try:
            await self.kube.create(EVENTS, ns, ev)
        except KubeError as exc:
            self.metrics.event_write(False)
            log.warning("event %s on %s: %s", ev["reason"], ev["involvedObject"]["name"], exc)
            return
        self.metrics.event_write(True)
