"""Typed JetStream KV access with compare-and-set on revision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from nats.js import errors as js_errors

T = TypeVar("T")


class CasConflictError(Exception):
    """The key changed since the revision the caller read (or already exists on create)."""


@dataclass(frozen=True, slots=True)
class KvEntry(Generic[T]):
    """A decoded value and the revision to pass to :meth:`KvStore.update`."""

    key: str
    value: T
    revision: int


class KvStore(Generic[T]):
    """One KV bucket holding values of one msgspec type."""

    def __init__(self, kv: Any, value_type: type[T]) -> None:
        self._kv = kv
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
