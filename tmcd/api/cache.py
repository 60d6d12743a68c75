"""The watch cache: the API serves every read from memory, as kube-apiserver's cacher does.

Each kind has one long-lived KV change feed (:meth:`tmcd.bus.KvStore.change_feed`) that
keeps a :class:`~tmcd.api.index.KindIndex` current, started with the API and restarted when
it fails.  Lists, gets and watches never open anything on the server: a read first asks
for the bucket's latest revision (one STREAM.INFO, shared by every read that arrived before
it was sent) and waits, at most :data:`FRESH_TIMEOUT` seconds, until the index has applied
it, so a read reflects every write acknowledged before it (503 while the cache is still
loading, 504 when it does not catch up in time: never a stale or empty answer).

A feed that stops delivering while the bucket moves on (a lost consumer, a connection that
came back without it) is restarted from the last revision applied, once it has made no
progress for :data:`STALL_AFTER` seconds; a bucket deleted and created again (its stream's
creation time changed) is loaded afresh, and watches of the old one end with 410 Expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tmcd.api import errors
from tmcd.api.index import WINDOW, KindIndex
from tmcd.bus import Bus, KvStore
from tmcd.bus.kv import BucketState
from tmcd.resources.kinds import KINDS, Kind
from tmcd.runtime.aio import cancel_and_wait

log = logging.getLogger("tmcd.api")

FRESH_TIMEOUT = 3.0
"""Seconds a read waits for the cache to catch up with the bucket (kube-apiserver waits 3 s too)."""
STALL_AFTER = 5.0
"""Seconds a feed may stay behind the bucket without progress before it is restarted."""
FEED_BUFFER = 4096
"""Changes the feed buffers for the cache (the cache reads them as fast as they come)."""
ANNOUNCE_EVERY = 256
"""Changes applied in a row before watchers are woken even if more are buffered."""
RESTART_BACKOFF = (0.1, 5.0)
"""Seconds before a failed feed starts again: the first wait, doubling up to the second."""


class LatestState:
    """The bucket's latest state, read by one STREAM.INFO for every read that arrived before it was sent.

    One request is in flight at a time; callers arriving meanwhile share the next one (the
    answer to a request sent before they arrived could miss a write they saw acknowledged).
    """

    def __init__(self, read: Callable[[], Awaitable[BucketState]]) -> None:
        self._read = read
        self._next: asyncio.Future[BucketState] | None = None
        self._task: asyncio.Task[None] | None = None

    async def get(self) -> BucketState:
        """The latest state as of a moment after this call began."""
        fut = self._next
        if fut is None:
            fut = self._next = asyncio.get_running_loop().create_future()
            if self._task is None:
                self._task = asyncio.create_task(self._rounds(), name="api-cache-revision")
        # shielded: a caller that gives up must not cancel the round the others wait for
        return await asyncio.shield(fut)

    async def _rounds(self) -> None:
        round_: asyncio.Future[BucketState] | None = None
        try:
            while self._next is not None:
                round_, self._next = self._next, None
                try:
                    round_.set_result(await self._read())
                except Exception as exc:
                    round_.set_exception(exc)
                    round_.exception()  # retrieved: nobody may be waiting any more
        finally:
            self._task = None
            for fut in (round_, self._next):
                if fut is not None and not fut.done():
                    fut.cancel()  # closed mid-round: the waiting reads end too
            self._next = None

    async def close(self) -> None:
        """Stop the round in flight, if any."""
        await cancel_and_wait(self._task)


class KindCache:
    """One kind's index, kept current by one change feed."""

    def __init__(self, kind: Kind, bus: Callable[[], Bus | None], window: int = WINDOW) -> None:
        self.kind = kind
        self._bus = bus
        self._window = window
        self.index = KindIndex(kind, window)
        self._kv: KvStore[Any] | None = None
        self._latest = LatestState(self._read_latest)
        self._created = ""
        """When the bucket's stream was created, as the index knows it (another time: it was re-created)."""
        self._halt = asyncio.Event()
        self._loaded = asyncio.Event()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tie = itertools.count()
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.problem = ""
        """Why the feed last failed (for the log and the readiness check), or empty."""
        self.closed = False
        """True once closed: watches end."""

    @property
    def loaded(self) -> bool:
        """True once the index has applied everything the bucket held when the cache started."""
        return self._loaded.is_set()

    @property
    def changed(self) -> asyncio.Future[None]:
        """Resolved when the next events are in the index's ring (a fresh future after that)."""
        return self._changed

    # -- the feed --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the bucket until ``stop`` is set, restarting the feed when it fails."""
        backoff = RESTART_BACKOFF[0]
        while not stop.is_set():
            try:
                bus = self._bus()
                if bus is None or not bus.connected:
                    raise ConnectionError("not connected to NATS")
                if self._kv is None:
                    self._kv = await bus.kv(self.kind.bucket, self.kind.type)
                await self._follow(self._kv, stop)
                backoff = RESTART_BACKOFF[0]
                continue
            except Exception as exc:  # any failure restarts the feed, logged once until it changes
                problem = f"{type(exc).__name__}: {exc}"
                level = logging.DEBUG if problem == self.problem else logging.WARNING
                log.log(level, "API cache of %s: feed failed (%s); restarting", self.kind.plural, problem)
                self.problem = problem
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF[1])

    async def _follow(self, kv: KvStore[Any], stop: asyncio.Event) -> None:
        """One feed's life: from the index's revision on, until it stalls, the bucket is re-created
        or ``stop`` is set."""
        state = await kv.state()
        if (self._created and state.created != self._created) or state.revision < self.index.revision:
            log.warning("API cache of %s: bucket %s was created again; loading it again", self.kind.plural, kv.bucket)
            self._reset()
        self._created = state.created
        await self._skip_removed(kv, state.revision)
        self._halt = halt = asyncio.Event()
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: halt.set())
        try:
            async with kv.change_feed(self.index.revision, halt, FEED_BUFFER, keep_invalid=True) as feed:
                if self.problem:
                    log.info(
                        "API cache of %s: feed running again at revision %d", self.kind.plural, self.index.revision
                    )
                self.problem = ""
                await self._apply(kv, feed, state.revision)
        finally:
            stopping.cancel()

    async def _apply(self, kv: KvStore[Any], feed: Any, latest: int) -> None:
        """Apply the feed's changes; return when it ends, raise when it stalls."""
        behind_since: float | None = None
        unannounced = 0
        loop = asyncio.get_running_loop()
        while True:
            if not feed.buffered:
                self._caught_up(latest)
                try:
                    change = await asyncio.wait_for(feed.next(), STALL_AFTER)
                except TimeoutError:
                    state = await kv.state()
                    latest = state.revision
                    if state.created != self._created:
                        return  # re-created: the next feed loads it again
                    if self.index.revision >= latest or await self._skip_removed(kv, latest):
                        behind_since = None
                        continue
                    behind_since = behind_since or loop.time()
                    if loop.time() - behind_since >= STALL_AFTER:
                        stalled = f"the feed stalled at {self.index.revision} (bucket at {latest})"
                        raise ConnectionError(stalled) from None
                    continue
            else:
                change = await feed.next()
            if change is None:
                return  # stopped or halted
            behind_since = None
            if self.index.apply(change.key, change.value, change.revision, invalid=change.invalid):
                unannounced += 1
            if unannounced and (not feed.buffered or unannounced >= ANNOUNCE_EVERY):
                unannounced = 0
                self._events_added()  # watchers wake once per batch, not once per change
            if self._waiters:
                self._wake()

    async def _skip_removed(self, kv: KvStore[Any], latest: int) -> bool:
        """Move on to ``latest`` when the bucket holds no change after the index's revision
        (an empty bucket, or changes purged since): True if it did."""
        if self.index.revision >= latest or await kv.next_revision(self.index.revision) is not None:
            return False
        self.index.revision = latest
        self._caught_up(latest)
        return True

    def _caught_up(self, latest: int) -> None:
        if self.index.revision >= latest and not self._loaded.is_set():
            log.info("API cache of %s loaded: %d objects at revision %d",
                     self.kind.plural, len(self.index), self.index.revision)  # fmt: skip
            self._loaded.set()
        self._wake()

    def _events_added(self) -> None:
        done, self._changed = self._changed, asyncio.get_running_loop().create_future()
        done.set_result(None)

    def _reset(self) -> None:
        self.index = KindIndex(self.kind, self._window)  # watches of the old index end with 410
        self._events_added()

    def _wake(self) -> None:
        revision = self.index.revision
        while self._waiters and self._waiters[0][0] <= revision:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():
                fut.set_result(None)

    # -- reads -----------------------------------------------------------------------------

    async def _read_latest(self) -> BucketState:
        if self._kv is None:
            raise ConnectionError("not connected to NATS")
        return await self._kv.state()

    async def fresh(self, timeout: float = FRESH_TIMEOUT) -> int:
        """Wait until the index reflects every write acknowledged before this call; its revision.

        Raises 503 while the cache is loading or NATS is unreachable, 504 when the index
        does not catch up within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self._loaded.is_set():
            try:
                async with asyncio.timeout_at(deadline):
                    await self._loaded.wait()
            except TimeoutError:
                raise unavailable(f"the API cache of {self.kind.plural} is still loading") from None
        try:
            async with asyncio.timeout_at(deadline):
                state = await self._latest.get()
        except TimeoutError:
            raise unavailable(f"no answer from JetStream for bucket {self.kind.bucket}") from None
        except (asyncio.CancelledError, Exception) as exc:  # a BusError, not connected, or the cache closed
            if isinstance(exc, asyncio.CancelledError) and _cancelling():
                raise
            raise unavailable(f"cannot read the revision of bucket {self.kind.bucket}: {exc!r}") from None
        if state.created != self._created:  # re-created since the index loaded it: never serve the old one
            self._halt.set()
            raise unavailable(f"bucket {self.kind.bucket} was created again: the API cache is loading it again")
        latest = state.revision
        if self.index.revision < latest:
            fut = loop.create_future()
            heapq.heappush(self._waiters, (latest, next(self._tie), fut))
            try:
                async with asyncio.timeout_at(deadline):
                    await fut
            except TimeoutError:
                self._prune()
                msg = f"the API cache of {self.kind.plural} did not reach revision {latest} within {timeout:g}s"
                raise errors.ApiError(504, "Timeout", msg) from None
            except asyncio.CancelledError:
                if _cancelling():
                    raise
                raise unavailable(f"the API cache of {self.kind.plural} is closing") from None
        return self.index.revision

    def _prune(self) -> None:
        """Drop waiters that gave up (their futures are done), so a stuck feed cannot pile them up."""
        if len(self._waiters) > 64:
            self._waiters = [w for w in self._waiters if not w[2].done()]
            heapq.heapify(self._waiters)

    async def close(self) -> None:
        """Stop the revision read in flight and release the waiters and the watches."""
        self.closed = True
        await self._latest.close()
        for _, _, fut in self._waiters:
            fut.cancel()
        self._waiters.clear()
        if not self._changed.done():
            self._changed.set_result(None)


def _cancelling() -> bool:
    """True when the current task itself is being cancelled (not just something it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def unavailable(message: str) -> errors.ApiError:
    """503 ServiceUnavailable."""
    return errors.ApiError(503, "ServiceUnavailable", message)


class ApiCache:
    """The caches of every kind, started with the API."""

    def __init__(self, bus: Callable[[], Bus | None], kinds: tuple[Kind, ...] = KINDS, window: int = WINDOW) -> None:
        self.kinds = {k.plural: KindCache(k, bus, window) for k in kinds}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start one feed per kind (reads wait until their kind is loaded)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(c.run(self._stop), name=f"api-cache-{p}") for p, c in self.kinds.items()]

    def of(self, kind: Kind) -> KindCache:
        """The cache of ``kind``."""
        return self.kinds[kind.plural]

    def check(self) -> str | None:
        """The readiness check: None once every kind's cache has loaded."""
        waiting = [p for p, c in self.kinds.items() if not c.loaded]
        if not waiting:
            return None
        problems = {c.problem for c in self.kinds.values() if c.problem and not c.loaded}
        return "not loaded yet: " + ", ".join(waiting) + (f" ({'; '.join(sorted(problems))})" if problems else "")

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the feeds (deleting their consumers) and everything waiting on them; a feed not
        stopped within ``timeout`` seconds (stuck on an unanswered request) is cancelled."""
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                await cancel_and_wait(task)
        for c in self.kinds.values():
            await c.close()
