"""Agents' status writes: the status subresource's rules (:mod:`tmcd.resources.writes`) over KV
compare-and-set, re-read and retried on a conflict.

An agent that owns a kind's status (health: SyncTargets, placement: Placements, canary:
CanaryRollouts) writes it only through :func:`write_status`, so it never overwrites a spec or
labels a user saved in between: each attempt starts from the object as stored and changes only
its status, as ``PUT .../NAME/status`` does.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from tmcd.bus import CasConflictError, KvEntry, KvStore
from tmcd.resources import writes

log = logging.getLogger("tmcd.status")

R = TypeVar("R", bound=msgspec.Struct)
ATTEMPTS = 5
"""Conflicting writes tried before :func:`write_status` gives up (the caller tries again later)."""


class StatusConflictError(Exception):
    """The object kept changing under a status write (``ATTEMPTS`` conflicts in a row)."""


@dataclass(frozen=True)
class StatusWrite(Generic[R]):
    """What :func:`write_status` did."""

    entry: KvEntry[R] | None
    """The object as stored afterwards (written or not); None when it does not exist (any more)."""
    written: bool
    """True when a new status was written."""


async def write_status(
    kv: KvStore[R],
    key: str,
    status: Callable[[R], Any | None],
    *,
    current: KvEntry[R] | None = None,
    attempts: int = ATTEMPTS,
) -> StatusWrite[R]:
    """Write the status of the object at ``key``: compare-and-set, re-read and retried on a conflict.

    ``status(obj)`` gets the object as stored and returns its new status, or None to leave it as
    it is (nothing is written); it is called again with the fresh object after a conflict, so
    base the status on what it is given.  ``current`` is the entry the caller holds already (it
    saves a read; a stale one only costs a retry).  Spec and metadata are never changed.
    Raises :class:`StatusConflictError` after ``attempts`` conflicts, and the bus's errors.
    """
    entry = current if current is not None else await kv.get(key)
    for _ in range(attempts):
        if entry is None:
            return StatusWrite(None, False)
        new_status = status(entry.value)
        if new_status is None:
            return StatusWrite(entry, False)
        obj = writes.status_written(entry.value, new_status)
        try:
            revision = await kv.update(key, obj, entry.revision)
        except CasConflictError:
            entry = await kv.get(key)  # someone wrote it meanwhile (a user, another replica): look again
            await asyncio.sleep(0)
            continue
        return StatusWrite(KvEntry(key, obj, revision), True)
    raise StatusConflictError(f"{kv.bucket} {key}: status not written after {attempts} conflicting writes")


async def create_object(
    kv: KvStore[R], key: str, obj: R, *, clock: Callable[[], float] = time.time
) -> KvEntry[R] | None:
    """Create an object as the API does (uid, creationTimestamp, generation 1, empty status;
    see :func:`tmcd.resources.writes.created`); None when ``key`` exists already.  Its status is
    then written with :func:`write_status`."""
    new = writes.created(obj, now=clock(), uid=str(uuid.uuid4()))
    try:
        revision = await kv.create(key, new)
    except CasConflictError:
        return None
    return KvEntry(key, new, revision)


async def update_object(kv: KvStore[R], current: KvEntry[R], obj: R) -> KvEntry[R]:
    """Update metadata and spec as the API does (the stored status kept, generation bumped on a
    spec change; see :func:`tmcd.resources.writes.updated`) at ``current``'s revision; raises
    CasConflictError when it moved."""
    new = writes.updated(current.value, obj)
    revision = await kv.update(current.key, new, current.revision)
    return KvEntry(current.key, new, revision)
