"""Resources in JetStream KV with compare-and-set on ``resourceVersion`` (the KV revision): the writes.

Shared by the HTTP API and the NATS API: create, replace, patch (JSON merge patch or JSON
patch), delete, the status subresource, and the decoding and validation of request bodies.
What a write does to an object (status, generation, uid, creationTimestamp) follows
:mod:`tmcd.resources.writes`, the rules tmcd's agents follow too.  Reads (lists, gets,
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

from tmcd.api import errors, jsonbody, patches
from tmcd.bus import Bus, CasConflictError, KvStore
from tmcd.config import ApiConfig
from tmcd.contracts.names import InvalidNameError, is_valid_name, validate_name
from tmcd.resources import writes
from tmcd.resources.kinds import Kind, kv_key
from tmcd.resources.validate import validate

if TYPE_CHECKING:
    from tmcd.api.reads import ListResult, Reads
    from tmcd.resources.selectors import Selector

ATTEMPTS = 5
"""Writes without a resourceVersion retried when someone else (an agent's status write) wrote in between."""
_encoder = msgspec.json.Encoder()


def name_mismatch(name: str, url_name: str) -> errors.ApiError:
    """400: the body names another object than the URL (kube-apiserver's wording)."""
    return errors.bad_request(f"the name of the object ({name}) does not match the name on the URL ({url_name})")


class ResourceStore:
    """The writes over the kinds table (and, for code that has only a store, lists from the cache)."""

    def __init__(
        self,
        bus: Bus,
        clock: Callable[[], float] = time.time,
        reads: Reads | None = None,
        max_object_bytes: int = ApiConfig().max_object_bytes,
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._reads = reads
        self.max_object_bytes = max_object_bytes
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

    def decode(
        self, kind: Kind, body: bytes | Mapping[str, Any], *, name: str = "", namespace: str | None = None
    ) -> Any:
        """Decode and validate a request body as ``kind``; raises 400/413/422 ApiErrors.

        ``name``: the URL's (400 when the body names another object).  ``namespace``: the
        URL's; an object without one gets it, one with another is a 400, and a cluster-scoped
        object's is cleared (as kube-apiserver does); None leaves the body's as it is.
        """
        if isinstance(body, bytes | bytearray) and len(body) > self.max_object_bytes:
            raise self._too_large(len(body))
        obj: Any
        try:
            if isinstance(body, bytes | bytearray):
                obj = msgspec.json.decode(body, type=kind.type)
            else:
                obj = msgspec.convert(body, kind.type)
        except msgspec.ValidationError as exc:
            raise _invalid(kind, name, exc, body) from None
        except msgspec.DecodeError as exc:
            raise errors.bad_request(f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise jsonbody.too_deep() from None
        # only the free-form fields (a metric's evidence) can nest: deep ones would fail when copied or read back
        jsonbody.check_depth(msgspec.to_builtins(obj))
        if name and obj.metadata.name != name:
            raise name_mismatch(obj.metadata.name, name)
        if namespace is not None:
            self._namespace(kind, obj, namespace)
        self._check(kind, obj)
        return obj

    @staticmethod
    def _namespace(kind: Kind, obj: Any, namespace: str) -> None:
        meta = obj.metadata
        if not kind.namespaced:
            meta.namespace = ""
        elif not meta.namespace:
            meta.namespace = namespace
        elif namespace and meta.namespace != namespace:
            raise errors.bad_request(
                f"the namespace of the provided object ({meta.namespace}) does not match the namespace sent on "
                f"the request ({namespace})"
            )

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

    def _too_large(self, size: int) -> errors.ApiError:
        return errors.too_large(
            f"the object is {size} bytes, more than the {self.max_object_bytes} the store takes (api.max_object_bytes)"
        )

    def _encoded_size_ok(self, obj: Any) -> None:
        size = len(_encoder.encode(obj))
        if size > self.max_object_bytes:
            raise self._too_large(size)

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
        """Store a new object (status emptied: see :func:`tmcd.resources.writes.created`); 409 AlreadyExists
        if the name is taken."""
        self._namespace(kind, obj, namespace)
        meta = obj.metadata
        if kind.namespaced and not is_valid_name(meta.namespace):
            cause = errors.StatusCause(field="metadata.namespace", message="must be a DNS-1123 label")
            raise errors.invalid(kind.kind, meta.name, [cause])
        obj = writes.created(obj, now=self._clock(), uid=str(uuid.uuid4()))
        self._encoded_size_ok(obj)
        try:
            rev = await (await self._kv(kind)).create(kv_key(kind, obj.metadata.namespace, meta.name), obj)
        except CasConflictError:
            raise errors.already_exists(kind.plural, meta.name) from None
        return self._with_version(obj, rev)

    async def replace(self, kind: Kind, namespace: str, name: str, obj: Any) -> Any:
        """Replace an object's metadata and spec, keeping its status (409 Conflict on a stale resourceVersion)."""
        if obj.metadata.name != name:
            raise name_mismatch(obj.metadata.name, name)
        return await self._retried(kind, namespace, name, obj.metadata.resource_version, lambda _cur: obj)

    async def replace_status(self, kind: Kind, namespace: str, name: str, obj: Any) -> Any:
        """The status subresource's PUT: only ``obj``'s status is written (409 on a stale resourceVersion)."""
        self._status_kind(kind)
        if obj.metadata.name != name:
            raise name_mismatch(obj.metadata.name, name)
        wanted = obj.metadata.resource_version
        return await self._retried(kind, namespace, name, wanted, lambda cur: obj, status=True)

    async def patch(self, kind: Kind, namespace: str, name: str, patch: Any, patch_type: str = patches.MERGE) -> Any:
        """Apply a merge or JSON patch to metadata and spec (a patched status is ignored); retried on
        concurrent writes unless the patch pins a resourceVersion."""
        return await self._patched(kind, namespace, name, patch, patch_type, status=False)

    async def patch_status(
        self, kind: Kind, namespace: str, name: str, patch: Any, patch_type: str = patches.MERGE
    ) -> Any:
        """The status subresource's PATCH: only the patched status is written."""
        self._status_kind(kind)
        return await self._patched(kind, namespace, name, patch, patch_type, status=True)

    async def _patched(
        self, kind: Kind, namespace: str, name: str, patch: Any, patch_type: str, *, status: bool
    ) -> Any:
        patches.check(patch_type, patch)
        pinned = _pinned_version(patch_type, patch)

        def apply(current: Any) -> Any:
            return self.patched(kind, current, patch, patch_type, status=status)

        return await self._retried(kind, namespace, name, pinned, apply, status=status)

    def patched(self, kind: Kind, current: Any, patch: Any, patch_type: str, *, status: bool = False) -> Any:
        """``current`` with the patch applied and checked as a write of metadata and spec (or, with
        ``status``, of the status); raises 400/422 ApiErrors.  Pure: the fuzz tests call it too."""
        stored = msgspec.to_builtins(current)
        data = patches.apply(patch_type, stored, patch)
        if not isinstance(data, dict):
            raise errors.bad_request("the patched object is not a JSON object")
        if writes.has_status(kind.type):
            # only the part the write changes counts: a patched status (or, on /status, spec and
            # metadata) is ignored before anything is checked
            data = {**stored, "status": data.get("status")} if status else {**data, "status": stored["status"]}
        return self.decode(kind, data, name=current.metadata.name)  # a patch that renames the object: 400

    async def _retried(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        wanted: str,
        make: Callable[[Any], Any],
        *,
        status: bool = False,
    ) -> Any:
        """Write ``make(current)`` over the current object (as an update, or a status write);
        ``wanted``, a resourceVersion the caller read at, must be current, else without one
        a concurrent write is retried."""
        for _ in range(ATTEMPTS):
            current = await self.get(kind, namespace, name)
            if wanted and wanted != current.metadata.resource_version:
                raise errors.conflict(kind.plural, name)
            obj = make(current)
            new = writes.status_written(current, obj.status) if status else writes.updated(current, obj)
            try:
                return await self._update(kind, current, new)
            except errors.ApiError as exc:
                if exc.reason != "Conflict" or wanted:
                    raise
                await asyncio.sleep(0)
        raise errors.conflict(kind.plural, name, "too many concurrent writers")

    async def _update(self, kind: Kind, current: Any, obj: Any) -> Any:
        self._encoded_size_ok(obj)
        meta = obj.metadata
        try:
            rev = await (await self._kv(kind)).update(
                kv_key(kind, meta.namespace, meta.name), obj, int(current.metadata.resource_version)
            )
        except CasConflictError:
            raise errors.conflict(kind.plural, meta.name) from None
        return self._with_version(obj, rev)

    @staticmethod
    def _status_kind(kind: Kind) -> None:
        if not writes.has_status(kind.type):
            raise errors.not_found(f"{kind.plural}/status", "")

    async def delete(self, kind: Kind, namespace: str, name: str) -> Any:
        """Delete and return the object; 404 when absent."""
        current = await self.get(kind, namespace, name)
        try:
            await (await self._kv(kind)).delete(kv_key(kind, namespace, name), int(current.metadata.resource_version))
        except CasConflictError:
            raise errors.conflict(kind.plural, name) from None
        return current


_NAME_FIELDS = {"metadata.name": ("name", "resource"), "metadata.namespace": ("namespace", "namespace")}


class _Meta(msgspec.Struct):
    metadata: dict[str, Any] = {}


def _invalid(kind: Kind, name: str, exc: msgspec.ValidationError, body: bytes | Mapping[str, Any]) -> errors.ApiError:
    """422 for a body msgspec refused; a bad name or namespace says what is wrong with it (msgspec's
    own message only quotes the DNS-1123 regular expression, and the object's name is not known yet)."""
    err = errors.from_validation(kind.kind, name, exc)
    field = err.causes[0].field if len(err.causes) == 1 else ""
    if field not in _NAME_FIELDS:
        return err
    key, what = _NAME_FIELDS[field]
    try:
        if isinstance(body, bytes | bytearray):
            value = msgspec.json.decode(body, type=_Meta).metadata[key]
        else:
            value = body["metadata"][key]
        validate_name(value, what)
    except InvalidNameError as bad:
        cause = errors.StatusCause(field=field, message=str(bad))
        return errors.invalid(kind.kind, name or (value if key == "name" else ""), [cause])
    except (msgspec.DecodeError, RecursionError, LookupError, TypeError):
        pass
    return err


def _pinned_version(patch_type: str, patch: Any) -> str:
    """The resourceVersion a patch sets (it must then be current: optimistic concurrency), else ``""``."""
    if patch_type == patches.MERGE:
        meta = patch.get("metadata") if isinstance(patch, dict) else None
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        return str(version) if version else ""
    for op in patch:
        if op.get("op") in ("add", "replace") and op.get("path") == "/metadata/resourceVersion" and op.get("value"):
            return str(op["value"])
    return ""
