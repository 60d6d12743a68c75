"""Typed JetStream KV access with compare-and-set on revision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from nats.js import errors as js_errors

from tmcd.bus.changefeed import MAX_PENDING, ChangeFeed

T = TypeVar("T")


class CasConflictError(Exception):
    """The key changed since the revision the caller read (or already exists on create)."""


@dataclass(frozen=True, slots=True)
class KvEntry(Generic[T]):
    """A decoded value and the revision to pass to :meth:`KvStore.update`."""

    key: str
    value: T
    revision: int


@dataclass(frozen=True, slots=True)
class KvChange(Generic[T]):
    """One change of a key: a new value, or a deletion (``value`` None)."""

    key: str
    value: T | None
    revision: int


class KvStore(Generic[T]):
    """One KV bucket holding values of one msgspec type."""

    def __init__(self, kv: Any, value_type: type[T], js: Any = None, bucket: str = "") -> None:
        self._kv = kv
        self._js = js
        self._bucket = bucket
        self._type = value_type
        self._decoder = msgspec.json.Decoder(value_type)
        self._encoder = msgspec.json.Encoder()

    async def get(self, key: str) -> KvEntry[T] | None:
        """The current entry, or None when the key is absent or deleted."""
        try:
            entry = await self._kv.get(key)
        except js_errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return KvEntry(key, self._decoder.decode(entry.value), entry.revision)

    async def put(self, key: str, value: T) -> int:
        """Write unconditionally; returns the new revision."""
        rev: int = await self._kv.put(key, self._encoder.encode(value))
        return rev

    async def create(self, key: str, value: T) -> int:
        """Write only if the key does not exist; raises CasConflictError otherwise."""
        try:
            rev: int = await self._kv.create(key, self._encoder.encode(value))
        except (js_errors.KeyWrongLastSequenceError, js_errors.BadRequestError) as exc:
            raise CasConflictError(f"{key} already exists") from exc
        return rev

    async def update(self, key: str, value: T, revision: int) -> int:
        """Write only if the key is still at ``revision``; raises CasConflictError otherwise."""
        try:
            rev: int = await self._kv.update(key, self._encoder.encode(value), last=revision)
        except (js_errors.KeyWrongLastSequenceError, js_errors.BadRequestError) as exc:
            raise CasConflictError(f"{key} changed since revision {revision}") from exc
        return rev

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete the key (only at ``revision`` when given)."""
        try:
            await self._kv.delete(key, last=revision)
        except (js_errors.KeyWrongLastSequenceError, js_errors.BadRequestError) as exc:
            raise CasConflictError(f"{key} changed since revision {revision}") from exc

    async def keys(self) -> list[str]:
        """All live keys (empty list for an empty bucket)."""
        try:
            keys: list[str] = await self._kv.keys()
        except js_errors.NoKeysError:
            return []
        return keys

    async def revision(self) -> int:
        """The bucket's latest revision (its stream's last sequence)."""
        info = await self._js.stream_info(f"KV_{self._bucket}")
        last: int = info.state.last_seq
        return last

    async def snapshot(self) -> tuple[list[KvEntry[T]], int]:
        """Every live entry and the bucket revision they are consistent with (one stream pass)."""
        revision = await self.revision()
        watcher = await self._kv.watch(">", ignore_deletes=True)
        entries: list[KvEntry[T]] = []
        try:
            while True:
                e = await watcher.updates(timeout=10)
                if e is None:
                    break
                if e.value:
                    entries.append(KvEntry(e.key, self._decoder.decode(e.value), e.revision))
                    revision = max(revision, e.revision)
        finally:
            await watcher.stop()
        return entries, revision

    def change_feed(
        self, after_revision: int, stop: asyncio.Event, max_pending: int = MAX_PENDING
    ) -> ChangeFeed[KvChange[T]]:
        """Every change after ``after_revision``, in order, until ``stop`` is set, with at most
        ``max_pending`` changes buffered (see :mod:`tmcd.bus.changefeed`); ``async with`` it."""
        return ChangeFeed(self._js, self._bucket, self._change, after_revision, stop, max_pending)

    async def changes(
        self, after_revision: int, stop: asyncio.Event, max_pending: int = MAX_PENDING
    ) -> AsyncIterator[KvChange[T]]:
        """Every change after ``after_revision``, in order, until ``stop`` is set.

        A reader that stops iterating should ``aclose()`` the iterator (or let it be
        garbage-collected): that deletes the server-side consumer and stops its tasks.
        """
        feed = self.change_feed(after_revision, stop, max_pending)
        try:
            await feed.start()
            async for change in feed:
                yield change
        finally:
            await feed.close()

    def _change(self, key: str, data: bytes | None, revision: int) -> KvChange[T]:
        return KvChange(key, None if data is None else self._decoder.decode(data), revision)
