"""Lists, gets and watches, served from the watch cache (:mod:`tmcd.api.cache`) for both APIs.

Every read waits until the cache has caught up with the bucket (see
:meth:`~tmcd.api.cache.KindCache.fresh`), so it reflects every write acknowledged before it.
A watch starts at a resourceVersion within the cache's window (or, without one, with the
current objects as ADDED events); any error, a bad or too old resourceVersion included, is
raised before the first event, so the HTTP and NATS handlers answer it instead of streaming.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from tmcd.api import errors
from tmcd.api.cache import ApiCache, KindCache
from tmcd.api.index import ADDED, Entry, Expired, Filter, KindIndex, Seen
from tmcd.contracts.names import is_valid_name
from tmcd.resources.kinds import Kind, kv_key
from tmcd.resources.selectors import Selector, SelectorError, parse_selector

MAX_WATCHES = 10_000
"""Open watches per tmcd (HTTP and NATS together); more are refused with 429 TooManyRequests."""


@dataclass
class ListResult:
    """One page of a list."""

    items: list[Any]
    resource_version: str
    continue_token: str = ""
    encoded: list[msgspec.Raw] | None = None
    """The items as JSON (encoded once, when the cache stored them), if at hand."""


def list_filters(label_selector: str, field_selector: str) -> tuple[Selector | None, str]:
    """Parse ``labelSelector`` and ``fieldSelector`` (only ``metadata.name=NAME``); 400 when bad."""
    selector = None
    if label_selector:
        try:
            selector = parse_selector(label_selector)
        except SelectorError as exc:
            raise errors.bad_request(f"labelSelector: {exc}") from None
    name = ""
    if field_selector:
        field, _, value = field_selector.partition("=")
        if field != "metadata.name" or not value:
            raise errors.bad_request("fieldSelector: only metadata.name=NAME is supported")
        name = value.lstrip("=")
    return selector, name


def list_object(kind: Kind, page: ListResult) -> dict[str, Any]:
    """A page as a Kubernetes ``<Kind>List``."""
    meta: dict[str, Any] = {"resourceVersion": page.resource_version}
    if page.continue_token:
        meta["continue"] = page.continue_token
    items = page.items if page.encoded is None else page.encoded
    return {"apiVersion": kind.api_version, "kind": f"{kind.kind}List", "metadata": meta, "items": items}


def _check_namespace(kind: Kind, namespace: str) -> None:
    """400 for a namespace no object can be in (a list there could only ever be empty)."""
    if kind.namespaced and namespace and not is_valid_name(namespace):
        raise errors.bad_request(f"namespace {namespace!r} is not a DNS-1123 label")


def expired(message: str) -> errors.ApiError:
    """410 Gone, reason Expired: list again, then watch from the list's resourceVersion."""
    return errors.ApiError(410, "Expired", message)


def bookmark(kind: Kind, revision: int) -> dict[str, Any]:
    """The object of a BOOKMARK event: only the resourceVersion a watch can resume from."""
    return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"resourceVersion": str(revision)}}


class Watch:
    """One watcher's position in its kind's cache; :meth:`take` what happened, :meth:`wait` for more."""

    def __init__(self, cache: KindCache, f: Filter, number: int, initial: list[Entry], release: Callable[[], None]):
        self._cache = cache
        self._index: KindIndex = cache.index
        self._filter = f
        self._number = number
        self._initial = initial
        self._release: Callable[[], None] | None = release
        self.revision = cache.index.revision
        """Every change up to this revision has been taken (a BOOKMARK may carry it)."""

    @property
    def closed(self) -> bool:
        """True once the cache is closed (tmcd is stopping): the watch is over."""
        return self._cache.closed

    @property
    def kind(self) -> Kind:
        """The kind watched."""
        return self._cache.kind

    def take(self) -> list[Seen]:
        """``(type, object, object as JSON)`` of the events not taken yet (the initial ADDED ones first).

        Raises :class:`~tmcd.api.index.Expired` when the watch fell out of the cache's window
        or the cache was loaded afresh.
        """
        if self._cache.index is not self._index:
            raise Expired("the API cache was loaded again (the bucket was re-created)")
        out: list[Seen] = [(ADDED, e.object, e.raw) for e in self._initial]
        self._initial = []
        changes, self._number = self._index.changes(self._filter, self._number)
        self.revision = self._index.revision
        return out + changes if out else changes

    async def wait(self, timeout: float, *also: asyncio.Future[Any] | None) -> None:
        """Return when there may be new events, after ``timeout`` seconds, or once one of ``also`` is done."""
        waits: set[asyncio.Future[Any]] = {self._cache.changed, *(f for f in also if f is not None)}
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    def close(self) -> None:
        """Give the watch's slot back (idempotent)."""
        release, self._release = self._release, None
        if release is not None:
            release()


class Reads:
    """The read side of the resource API."""

    def __init__(self, cache: ApiCache, max_watches: int = MAX_WATCHES) -> None:
        self.cache = cache
        self.max_watches = max_watches
        self.watching = 0
        """Watches open now."""

    async def list(
        self,
        kind: Kind,
        namespace: str = "",
        *,
        selector: Selector | None = None,
        name: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> ListResult:
        """Objects sorted by KV key (namespace, name), filtered, one page at a time."""
        _check_namespace(kind, namespace)
        cache = self.cache.of(kind)
        await cache.fresh()
        entries, token = cache.index.page(Filter(namespace, name, selector), limit, continue_token)
        items, encoded = [e.object for e in entries], [e.raw for e in entries]
        return ListResult(items, str(cache.index.revision), token, encoded)

    async def get(self, kind: Kind, namespace: str, name: str) -> Any:
        """One object; 404 when absent (including names no object can have)."""
        return (await self.entry(kind, namespace, name)).object

    async def entry(self, kind: Kind, namespace: str, name: str) -> Entry:
        """One object with its JSON; 404 when absent (including names no object can have)."""
        if not is_valid_name(name) or (kind.namespaced and not is_valid_name(namespace)):
            raise errors.not_found(kind.plural, name)
        cache = self.cache.of(kind)
        await cache.fresh()
        key = kv_key(kind, namespace, name)
        entry = cache.index.get(key)
        if entry is None:
            if cache.index.unreadable(key):
                msg = f'the stored value of {kind.plural} "{name}" does not decode (dead-lettered; see the tmcd log)'
                raise errors.ApiError(500, "InternalError", msg)
            raise errors.not_found(kind.plural, name)
        return entry

    async def watch(
        self, kind: Kind, namespace: str, *, selector: Selector | None, name: str, resource_version: str
    ) -> Watch:
        """A watch from ``resource_version`` (empty or "0": the current objects first, as ADDED).

        Raises before any event: 400 for a resourceVersion that is not a revision, 410 Expired
        for one outside the cache's window, 429 when too many watches are open, 503/504 as reads do.
        """
        _check_namespace(kind, namespace)
        since = -1
        if resource_version not in ("", "0"):
            if not resource_version.isascii() or not resource_version.isdigit():
                raise errors.bad_request(f"resourceVersion {resource_version!r} is not a resource version")
            since = int(resource_version)
        if self.watching >= self.max_watches:
            raise errors.ApiError(429, "TooManyRequests", f"too many watches open ({self.max_watches})")
        self.watching += 1  # the slot is taken before waiting, so concurrent starts cannot overshoot
        try:
            cache = self.cache.of(kind)
            revision = await cache.fresh()
            index, f = cache.index, Filter(namespace, name, selector)
            initial: list[Entry] = []
            if since < 0:
                initial = index.select(f)
                number = index.ring.end
            elif since > revision:
                raise expired(
                    f"resourceVersion {since} is newer than the latest revision of {kind.plural} ({revision}): "
                    "was the bucket re-created? List again"
                )
            else:
                try:
                    number = index.resume(since)
                except Expired as exc:
                    raise expired(str(exc)) from None
        except BaseException:
            self._released()
            raise
        return Watch(cache, f, number, initial, self._released)

    def _released(self) -> None:
        self.watching -= 1
