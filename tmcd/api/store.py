"""Resources in JetStream KV with compare-and-set on ``resourceVersion`` (the KV revision): the writes.

Shared by the HTTP API and the NATS API: create, replace, JSON merge patch, delete and
status writes, and the decoding and validation of request bodies.  Reads (lists, gets,
watches) are served from the watch cache (:mod:`tmcd.api.reads`); :meth:`ResourceStore.get`
reads KV itself, for the writes to compare-and-set against.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from tmcd.api import errors
from tmcd.bus import Bus, CasConflictError, KvStore
from tmcd.contracts.names import is_valid_name
from tmcd.resources.kinds import Kind, kv_key
from tmcd.resources.meta import rfc3339
from tmcd.resources.validate import validate

if TYPE_CHECKING:
    from tmcd.api.reads import ListResult, Reads
    from tmcd.resources.selectors import Selector


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class ResourceStore:
    """The writes over the kinds table (and, for code that has only a store, lists from the cache)."""

    def __init__(self, bus: Bus, clock: Callable[[], float] = time.time, reads: Reads | None = None) -> None:
        self._bus = bus
        self._clock = clock
        self._reads = reads
        self._stores: dict[str, KvStore[Any]] = {}

    async def _kv(self, kind: Kind) -> KvStore[Any]:
        store = self._stores.get(kind.plural)
        if store is None:
            store = self._stores[kind.plural] = await self._bus.kv(kind.bucket, kind.type)
        return store

    @staticmethod
    def _with_version(obj: Any, revision: int) -> Any:
        obj.metadata.resource_version = str(revision)
        return obj

    # -- decoding and validation -------------------------------------------------------

    def decode(self, kind: Kind, body: bytes | Mapping[str, Any], *, name: str = "") -> Any:
        """Decode and validate a request body as ``kind``; raises 400/422 ApiErrors."""
        try:
            if isinstance(body, bytes | bytearray):
                obj = msgspec.json.decode(body, type=kind.type)
            else:
                obj = msgspec.convert(body, kind.type)
        except msgspec.ValidationError as exc:
            raise errors.from_validation(kind.kind, name, exc) from None
        except msgspec.DecodeError as exc:
            raise errors.bad_request(f"request body is not valid JSON: {exc}") from None
        self._check(kind, obj)
        return obj

    def _check(self, kind: Kind, obj: Any) -> None:
        name = obj.metadata.name
        causes = []
        if obj.api_version != kind.api_version:
            causes.append(errors.StatusCause(field="apiVersion", message=f"must be {kind.api_version}"))
        if obj.kind != kind.kind:
            causes.append(errors.StatusCause(field="kind", message=f"must be {kind.kind}"))
        causes.extend(validate(obj))
        if causes:
            raise errors.invalid(kind.kind, name, causes)

    # -- reads the writes need -------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str, name: str) -> Any:
        """The object as stored in KV now (what a write compares and sets against); 404 when absent."""
        if not is_valid_name(name) or (kind.namespaced and not is_valid_name(namespace)):
            raise errors.not_found(kind.plural, name)
        entry = await (await self._kv(kind)).get(kv_key(kind, namespace, name))
        if entry is None:
            raise errors.not_found(kind.plural, name)
        return self._with_version(entry.value, entry.revision)

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
        """A list served by the watch cache (see :meth:`tmcd.api.reads.Reads.list`); 503 without one."""
        if self._reads is None:
            raise errors.ApiError(503, "ServiceUnavailable", "the API cache is not running")
        return await self._reads.list(
            kind, namespace, selector=selector, name=name, limit=limit, continue_token=continue_token
        )

    # -- writes --------------------------------------------------------------------------

    async def create(self, kind: Kind, obj: Any, namespace: str = "") -> Any:
        """Store a new object; 409 AlreadyExists if the name is taken."""
        meta = obj.metadata
        if kind.namespaced:
            meta.namespace = meta.namespace or namespace
            if not is_valid_name(meta.namespace):
                cause = errors.StatusCause(field="metadata.namespace", message="must be a DNS-1123 label")
                raise errors.invalid(kind.kind, meta.name, [cause])
            if namespace and meta.namespace != namespace:
                raise errors.bad_request(
                    f"metadata.namespace {meta.namespace!r} does not match the URL ({namespace!r})"
                )
        else:
            meta.namespace = ""
        meta.uid = str(uuid.uuid4())
        meta.creation_timestamp = rfc3339(self._clock())
        meta.generation = 1
        meta.resource_version = ""
        try:
            rev = await (await self._kv(kind)).create(kv_key(kind, meta.namespace, meta.name), obj)
        except CasConflictError:
            raise errors.already_exists(kind.plural, meta.name) from None
        return self._with_version(obj, rev)

    async def replace(self, kind: Kind, namespace: str, name: str, obj: Any) -> Any:
        """Replace an object; the body's resourceVersion must be current (409 Conflict otherwise)."""
        if obj.metadata.name != name:
            raise errors.bad_request(f"metadata.name {obj.metadata.name!r} does not match the URL ({name!r})")
        current = await self.get(kind, namespace, name)
        wanted = obj.metadata.resource_version
        if wanted and wanted != current.metadata.resource_version:
            raise errors.conflict(kind.plural, name)
        return await self._write(kind, current, obj)

    async def _write(self, kind: Kind, current: Any, obj: Any) -> Any:
        meta, old = obj.metadata, current.metadata
        meta.namespace, meta.uid, meta.creation_timestamp = old.namespace, old.uid, old.creation_timestamp
        spec_changed = msgspec.to_builtins(getattr(obj, "spec", None)) != msgspec.to_builtins(
            getattr(current, "spec", None)
        )
        meta.generation = old.generation + (1 if spec_changed else 0)
        try:
            rev = await (await self._kv(kind)).update(
                kv_key(kind, meta.namespace, meta.name), obj, int(old.resource_version)
            )
        except CasConflictError:
            raise errors.conflict(kind.plural, meta.name) from None
        return self._with_version(obj, rev)

    async def write_status(self, kind: Kind, obj: Any) -> Any:
        """Write an object read at ``obj.metadata.resourceVersion`` back (status updates; 409 if it moved)."""
        meta = obj.metadata
        try:
            rev = await (await self._kv(kind)).update(
                kv_key(kind, meta.namespace, meta.name), obj, int(meta.resource_version)
            )
        except CasConflictError:
            raise errors.conflict(kind.plural, meta.name) from None
        return self._with_version(obj, rev)

    async def patch(self, kind: Kind, namespace: str, name: str, patch: Any) -> Any:
        """Apply a JSON merge patch (retried on concurrent writes unless it pins a resourceVersion)."""
        if not isinstance(patch, dict):
            raise errors.bad_request("a merge patch must be a JSON object")
        pinned = bool(
            ((patch.get("metadata") or {}) if isinstance(patch.get("metadata"), dict) else {}).get("resourceVersion")
        )
        for _ in range(5):
            current = await self.get(kind, namespace, name)
            data = merge_patch(msgspec.to_builtins(current), patch)
            obj = self.decode(kind, data, name=name)
            if obj.metadata.name != name:
                raise errors.bad_request("a patch cannot rename an object")
            if pinned and obj.metadata.resource_version != current.metadata.resource_version:
                raise errors.conflict(kind.plural, name)
            try:
                return await self._write(kind, current, obj)
            except errors.ApiError as exc:
                if exc.reason != "Conflict" or pinned:
                    raise
                await asyncio.sleep(0)
        raise errors.conflict(kind.plural, name, "too many concurrent writers")

    async def delete(self, kind: Kind, namespace: str, name: str) -> Any:
        """Delete and return the object; 404 when absent."""
        current = await self.get(kind, namespace, name)
        try:
            await (await self._kv(kind)).delete(kv_key(kind, namespace, name), int(current.metadata.resource_version))
        except CasConflictError:
            raise errors.conflict(kind.plural, name) from None
        return current
