"""What a write does to an object, as kube-apiserver does it: the rules every writer follows.

Pure functions of (the stored object, the object sent, the time), shared by the resource API's
store (:mod:`tmcd.api.store`) and the agents' status writes (:mod:`tmcd.runtime.status`), so an
object written by a user and one written by an agent obey the same rules:

* **create** sets ``uid``, ``creationTimestamp`` and ``generation`` 1, and stores an empty
  status (status is written through the status subresource only);
* **update** (replace or patch) keeps the stored status, namespace, uid and creation time, and
  increases ``generation`` only when the spec changed;
* **status write** keeps the stored spec and metadata, and takes only the new status.

``resourceVersion`` is never stored meaningfully: it is the KV revision, set when read.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from tmcd.resources.meta import rfc3339

R = TypeVar("R", bound=msgspec.Struct)


def has_status(cls: type[msgspec.Struct]) -> bool:
    """True when the kind has a ``status`` (and so a status subresource)."""
    return "status" in cls.__struct_fields__


def empty_status(cls: type[msgspec.Struct]) -> Any:
    """The status a new object of ``cls`` starts with (the field's default)."""
    for f in msgspec.structs.fields(cls):
        if f.name == "status":
            if f.default_factory is not msgspec.NODEFAULT:
                return f.default_factory()
            return f.default
    raise TypeError(f"{cls.__name__} has no status")


def spec_of(obj: msgspec.Struct) -> Any:
    """The spec as plain data (``None`` for a kind without one), for comparisons."""
    return msgspec.to_builtins(getattr(obj, "spec", None))


def created(obj: R, *, now: float, uid: str) -> R:
    """``obj`` as a create stores it: new uid, creationTimestamp ``now``, generation 1, empty status."""
    meta = getattr(obj, "metadata")  # noqa: B009 - every kind has metadata; R only knows Struct
    changes: dict[str, Any] = {
        "metadata": msgspec.structs.replace(
            meta, uid=uid, creation_timestamp=rfc3339(now), generation=1, resource_version=""
        )
    }
    if has_status(type(obj)):
        changes["status"] = empty_status(type(obj))
    return msgspec.structs.replace(obj, **changes)


def updated(current: R, obj: R) -> R:
    """``obj`` as an update (replace or patch) stores it over ``current``.

    The stored status, namespace, uid and creationTimestamp stay; ``generation`` goes up by
    one only when the spec changed.  Labels, annotations and the spec are ``obj``'s.
    """
    old, meta = getattr(current, "metadata"), getattr(obj, "metadata")  # noqa: B009
    generation = old.generation + (1 if spec_of(obj) != spec_of(current) else 0)
    changes: dict[str, Any] = {
        "metadata": msgspec.structs.replace(
            meta,
            namespace=old.namespace,
            uid=old.uid,
            creation_timestamp=old.creation_timestamp,
            generation=generation,
        )
    }
    if has_status(type(obj)):
        changes["status"] = getattr(current, "status")  # noqa: B009
    return msgspec.structs.replace(obj, **changes)


def status_written(current: R, status: Any) -> R:
    """``current`` with ``status``: a status write changes nothing else (spec and metadata stay)."""
    return msgspec.structs.replace(current, status=status)
