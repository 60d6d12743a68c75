"""Placement simulations: a Placement decided against the current clusters, nothing saved.

Saved Placements need nothing special: as for every kind, a create stores an empty status
(Pending) and an update keeps the stored one (:mod:`tmcd.resources.writes`); the placement
agent (:mod:`tmcd.placement.agent`) writes status through the same rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tmcd.api import errors
from tmcd.api.store import ResourceStore
from tmcd.placement.model import Decision, decide
from tmcd.resources.kinds import PLACEMENT, SYNC_TARGET
from tmcd.resources.placement import Placement


async def simulate(store: ResourceStore, placement: Placement, clock: Callable[[], float] = time.time) -> Decision:
    """Decide without saving anything."""
    clusters = (await store.list(SYNC_TARGET)).items
    previous = [c.cluster for c in placement.status.selected_clusters]
    try:
        return decide(placement, clusters, previous=previous, now=clock())
    except ValueError as exc:  # SelectorError included: validation normally catches these first
        cause = errors.StatusCause(field="spec", message=str(exc))
        raise errors.invalid(PLACEMENT.kind, placement.metadata.name, [cause]) from None
