"""Running the placement engine on saved Placements and on simulations (I/O side).

A saved Placement is decided at once against the cluster registry; its status records the
decision and the decision is published as ``PlacementDecision`` on
``tmc.placement.<name>.decision`` (which the metrics agent counts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tmcd.api import errors
from tmcd.api.store import ResourceStore
from tmcd.bus import Bus
from tmcd.contracts import subjects
from tmcd.placement.model import Decision, decide, to_message, to_status
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


async def decide_and_record(
    store: ResourceStore, bus: Bus, placement: Placement, clock: Callable[[], float] = time.time
) -> Any:
    """Decide a saved Placement, write its status (compare-and-set) and publish the decision."""
    started = time.perf_counter()
    decision = await simulate(store, placement, clock)
    latency = time.perf_counter() - started
    placement.status = to_status(decision, decision.decided_at, observed_generation=placement.metadata.generation)
    saved = await store.write_status(PLACEMENT, placement)
    await bus.js_publish(
        subjects.placement_decision(placement.metadata.name), to_message(decision, placement.metadata.name, latency)
    )
    return saved
