"""Typed JetStream KV access with compare-and-set on revision.

Every failure reaches the caller as a :class:`~tmcd.bus.errors.BusError` (or
:class:`CasConflictError`), never as a nats-py exception.  A stored value that does not
decode as the bucket's type is treated like any malformed message: counted in
``tmc_events_invalid_total``, logged (rate-limited) and copied to
``tmc.dead.$KV.<bucket>.<key>``; snapshots and change streams then skip it, and
:meth:`KvStore.get` raises :class:`~tmcd.bus.errors.CorruptValueError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from nats import errors as nats_errors
from nats.js import errors as js_errors

from tmcd.bus.changefeed import MAX_PENDING, ChangeFeed
from tmcd.bus.errors import BusError, CorruptValueError
from tmcd.contracts.codec import InvalidMessage

T = TypeVar("T")
OnInvalid = Callable[[str, bytes, InvalidMessage], None]
"""Told of a stored value that does not decode: (subject, bytes, why)."""


class _ApiError(msgspec.Struct):
    code: int = 0
    description: str = ""


class _StreamState(msgspec.Struct):
    last_seq: int = 0


class _StreamInfo(msgspec.Struct):
    state: _StreamState | None = None
    created: str = ""
    error: _ApiError | None = None


@dataclass(frozen=True, slots=True)
class BucketState:
    """Where a bucket is: its latest revision, and when its stream was created (a bucket deleted
    and made again starts its revisions over, with a new creation time)."""

    revision: int
    created: str


_stream_info = msgspec.json.Decoder(_StreamInfo)


class CasConflictError(Exception):
    """The key changed since the revision the caller read (or already exists on create)."""


@contextlib.contextmanager
def _nats_errors(what: str) -> Iterator[None]:
    """nats-py's errors (and timeouts) as BusError, naming the operation."""
    try:
        yield
    except (nats_errors.Error, TimeoutError) as exc:
        raise BusError(f"{what}: {exc or type(exc).__name__}") from exc


def _kind(tp: type) -> str:
    """``SyncTarget`` -> ``sync_target``: the ``kind`` label of an invalid stored value."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", tp.__name__).lower()


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
    invalid: bool = False
    """The new value does not decode (reported already); only from a feed that keeps them."""


class KvStore(Generic[T]):
    """One KV bucket holding values of one msgspec type."""

    def __init__(
        self, kv: Any, value_type: type[T], js: Any = None, bucket: str = "", on_invalid: OnInvalid | None = None
    ) -> None:
        self._kv = kv
        self._js = js
        self._bucket = bucket
        self._type = value_type
        self._decoder = msgspec.json.Decoder(value_type)
        self._encoder = msgspec.json.Encoder()
        self._on_invalid = on_invalid
        self._kind = _kind(value_type)

    def _decode(self, key: str, data: bytes) -> T | None:
        """The value, or None (reported as invalid) when it does not decode."""
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, RecursionError) as exc:
            if isinstance(exc, RecursionError):
                reason = "too_deep"
            elif isinstance(exc, msgspec.ValidationError):
                reason = "invalid_fields"
            else:
                reason = "malformed_json"
            if self._on_invalid is not None:
                self._on_invalid(f"$KV.{self._bucket}.{key}", data, InvalidMessage(reason, str(exc), self._kind))
            return None

    async def get(self, key: str) -> KvEntry[T] | None:
        """The current entry, or None when the key is absent or deleted."""
        with _nats_errors(f"KV {self._bucket} get {key}"):
            try:
                entry = await self._kv.get(key)
            except js_errors.KeyNotFoundError:
                return None
        if entry.value is None:
            return None
        value = self._decode(key, entry.value)
        if value is None:
            raise CorruptValueError(f"KV {self._bucket}: the value of {key} is not a valid {self._type.__name__}")
        return KvEntry(key, value, entry.revision)

    async def put(self, key: str, value: T) -> int:
        """Write unconditionally; returns the new revision."""
        with _nats_errors(f"KV {self._bucket} put {key}"):
            rev: int = await self._kv.put(key, self._encoder.encode(value))
        return rev

    async def create(self, key: str, value: T) -> int:
        """Write only if the key does not exist; raises CasConflictError otherwise."""
        with _nats_errors(f"KV {self._bucket} create {key}"):
            try:
                rev: int = await self._kv.create(key, self._encoder.encode(value))
            except (js_errors.KeyWrongLastSequenceError, js_errors.BadRequestError) as exc:
                raise CasConflictError(f"{key} already exists") from exc
        return rev

    async def update(self, key: str, value: T, revision: int) -> int:
        """Write only if the key is still at ``revision``; raises CasConflictError otherwise."""
        with _nats_errors(f"KV {self._bucket} update {key}"):
            try:
                rev: int = await self._kv.update(key, self._encoder.encode(value), last=revision)
            except (js_errors.KeyWrongLastSequenceError, js_errors.BadRequestError) as exc:
                raise CasConflictError(f"{key} changed since revision {revision}") from exc
        return rev

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete the key (only at ``revision`` when given)."""
        with _nats_errors(f"KV {self._bucket} delete {key}"):
            try:
                await self._kv.delete(key, last=revision)
            except (js_errors.KeyWrongLastSequenceError, js_errors.BadRequestError) as exc:
                raise CasConflictError(f"{key} changed since revision {revision}") from exc

    async def keys(self) -> list[str]:
        """All live keys (empty list for an empty bucket)."""
        with _nats_errors(f"KV {self._bucket} keys"):
            try:
                keys: list[str] = await self._kv.keys()
            except js_errors.NoKeysError:
                return []
        return keys

    async def revision(self) -> int:
        """The bucket's latest revision (its stream's last sequence)."""
        return (await self.state()).revision

    async def state(self) -> BucketState:
        """The bucket's latest revision and creation time: one STREAM.INFO.

        Decoded for the two fields it needs (the API asks on every read; nats-py's own
        ``stream_info`` builds the whole configuration each time).
        """
        what = f"KV {self._bucket} revision"
        with _nats_errors(what):
            msg = await self._js._nc.request(
                f"{self._js._prefix}.STREAM.INFO.KV_{self._bucket}", b"", timeout=self._js._timeout
            )
        try:
            info = _stream_info.decode(msg.data)
        except msgspec.DecodeError as exc:
            raise BusError(f"{what}: bad STREAM.INFO reply: {exc}") from exc
        if info.error is not None or info.state is None:
            raise BusError(f"{what}: {info.error.description if info.error else 'no stream state'}")
        return BucketState(info.state.last_seq, info.created)

    async def next_revision(self, after: int) -> int | None:
        """The revision of the first change the bucket still holds after ``after``, or None.

        A reader that is behind :meth:`revision` with nothing left to read (the changes in
        between were removed, e.g. by a purge) can move on to it.
        """
        with _nats_errors(f"KV {self._bucket} next revision after {after}"):
            try:
                msg = await self._js.get_msg(
                    f"KV_{self._bucket}", seq=after + 1, subject=f"$KV.{self._bucket}.>", next=True
                )
            except js_errors.NotFoundError:
                return None
        seq: int = msg.seq
        return seq

    async def snapshot(self, keys: str = ">") -> tuple[list[KvEntry[T]], int]:
        """Every live entry and the bucket revision they are consistent with (one stream pass).

        ``keys`` narrows it to the keys a NATS subject filter matches (``shop.*``: one namespace's
        objects).  Values that do not decode are reported (see the module docstring) and left out.
        """
        revision = await self.revision()
        entries: list[KvEntry[T]] = []
        with _nats_errors(f"KV {self._bucket} snapshot"):
            watcher = await self._kv.watch(keys, ignore_deletes=True)
            try:
                while True:
                    e = await watcher.updates(timeout=10)
                    if e is None:
                        break
                    if e.value:
                        revision = max(revision, e.revision)
                        value = self._decode(e.key, e.value)
                        if value is not None:
                            entries.append(KvEntry(e.key, value, e.revision))
            finally:
                with contextlib.suppress(nats_errors.Error, TimeoutError):
                    await watcher.stop()
        return entries, revision

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self._bucket

    def change_feed(
        self, after_revision: int, stop: asyncio.Event, max_pending: int = MAX_PENDING, *, keep_invalid: bool = False
    ) -> ChangeFeed[KvChange[T]]:
        """Every change after ``after_revision``, in order, until ``stop`` is set, with at most
        ``max_pending`` changes buffered (see :mod:`tmcd.bus.changefeed`); ``async with`` it.

        A value that does not decode is reported and skipped, or with ``keep_invalid`` passed on
        as a change with ``invalid`` set (for a reader that must account for every revision).
        """
        make = self._change_keeping_invalid if keep_invalid else self._change
        return ChangeFeed(self._js, self._bucket, make, after_revision, stop, max_pending)

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

    def _change(self, key: str, data: bytes | None, revision: int) -> KvChange[T] | None:
        """A change; None (skipped by the feed) for a value that does not decode."""
        if data is None:
            return KvChange(key, None, revision)
        value = self._decode(key, data)
        return None if value is None else KvChange(key, value, revision)

    def _change_keeping_invalid(self, key: str, data: bytes | None, revision: int) -> KvChange[T]:
        change = self._change(key, data, revision)
        return KvChange(key, None, revision, invalid=True) if change is None else change
