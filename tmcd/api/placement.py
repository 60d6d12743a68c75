"""Placements in the resource API: simulations, and saves that leave status to the placement agent.

The placement agent (:mod:`tmcd.placement.agent`) is the one writer of a Placement's status:
it decides a saved Placement within milliseconds and again whenever the fleet changes.  So a
create stores a Pending status, and a replace or merge patch keeps the stored status whatever
the body says.  A simulation decides a Placement against the current clusters and saves nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tmcd.api import errors
from tmcd.api.store import ResourceStore
from tmcd.placement.model import Decision, decide
from tmcd.resources.kinds import PLACEMENT, SYNC_TARGET
from tmcd.resources.placement import Placement, PlacementStatus

REPLACE_ATTEMPTS = 5
"""Replaces without a resourceVersion retried when the agent writes status in between."""


async def simulate(store: ResourceStore, placement: Placement, clock: Callable[[], float] = time.time) -> Decision:
    """Decide without saving anything."""
    clusters = (await store.list(SYNC_TARGET)).items
    previous = [c.cluster for c in placement.status.selected_clusters]
    try:
        return decide(placement, clusters, previous=previous, now=clock())
    except ValueError as exc:  # SelectorError included: validation normally catches these first
        cause = errors.StatusCause(field="spec", message=str(exc))
        raise errors.invalid(PLACEMENT.kind, placement.metadata.name, [cause]) from None


def new(placement: Placement) -> Placement:
    """A Placement about to be created: status Pending until the agent decides it."""
    placement.status = PlacementStatus()
    return placement


async def replace(store: ResourceStore, name: str, placement: Placement) -> Any:
    """Replace a Placement's metadata and spec, keeping the stored status (409 on a stale resourceVersion)."""
    wanted = placement.metadata.resource_version
    for _ in range(REPLACE_ATTEMPTS):
        current = await store.get(PLACEMENT, "", name)
        if wanted and wanted != current.metadata.resource_version:
            raise errors.conflict(PLACEMENT.plural, name)
        placement.status = current.status
        placement.metadata.resource_version = current.metadata.resource_version
        try:
            return await store.replace(PLACEMENT, "", name, placement)
        except errors.ApiError as exc:
            if exc.reason != "Conflict" or wanted:
                raise
    raise errors.conflict(PLACEMENT.plural, name, "too many concurrent writers")


def patch_without_status(patch: Any) -> Any:
    """A merge patch with any ``status`` left out (the agent owns it)."""
    if isinstance(patch, dict) and "status" in patch:
        return {k: v for k, v in patch.items() if k != "status"}
    return patch
