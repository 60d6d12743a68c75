"""The canary's data plane: traffic weights through the router, canary clusters through the child Placement.

:class:`DataPlane` applies a recorded :class:`~tmcd.resources.canary.StepAction`.  Every
action is idempotent: the router is given the action's traffic generation (a repeat is the same
desired state), and the ``<rollout>-canary`` Placement is written with the action's clusters.
The ``stable`` action -- all traffic back to stable in one pass, then the canary Placement
emptied -- is the one interface through which a failed rollout returns to stable; the rollback
engine takes it over (see docs/canary.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from tmcd.bus import Bus, BusError, CasConflictError, KvStore
from tmcd.canary.clusters import canary_placement, canary_placement_name
from tmcd.canary.model import Applied
from tmcd.canary.traffic import RouteRef, RouterSet, TrafficRouter
from tmcd.contracts import subjects
from tmcd.contracts.traffic import ClusterAnnotations, RouterFactory
from tmcd.placement.model import CandidateResult, Decision, to_message, to_status
from tmcd.resources.canary import CanaryRollout, StepAction
from tmcd.resources.placement import Placement, PlacementStatus
from tmcd.runtime.status import StatusConflictError, create_object, update_object, write_status

__all__ = ["DataPlane", "route_of"]

log = logging.getLogger("tmcd.canary")

APPLIED_POLL = 0.25
"""Seconds between looks at the router's applied-weights reports (in memory)."""


def route_of(r: CanaryRollout) -> RouteRef:
    """The route a rollout shifts traffic on."""
    tr = r.spec.traffic_routing
    return RouteRef(
        r.metadata.namespace,
        tr.route,
        r.spec.workload_ref.name,
        router=tr.router,
        stable_service=tr.stable_service or "",
        canary_service=tr.canary_service or "",
    )


class DataPlane:
    """Applies canary actions: weights through the traffic router, clusters through the canary Placement."""

    def __init__(
        self,
        bus: Bus,
        placements: KvStore[Placement],
        router: TrafficRouter | None = None,
        *,
        factory: RouterFactory | None = None,
        clusters: ClusterAnnotations | None = None,
    ) -> None:
        """``router`` (tests) serves every route; otherwise each route gets the router its rollout
        names, ``nats`` here and the Kubernetes ones through ``factory`` (see :class:`RouterSet`)."""
        self._bus = bus
        self._placements = placements
        self._router: TrafficRouter = router if router is not None else RouterSet(bus, factory, clusters)
        self._routes: dict[tuple[str, str], RouteRef] = {}
        self._seen: dict[tuple[str, str], int] = {}

    async def apply(self, r: CanaryRollout, action: StepAction, decision: Decision | None, now: float) -> None:
        """Apply ``action`` (idempotent): traffic first, then the canary Placement."""
        ref = route_of(r)
        self._routes[(ref.namespace, ref.route)] = ref
        weight = action.weight if action.kind in ("clusters", "weight", "promote") else 0
        clusters = list(action.clusters) if weight else []
        await self._router.set_weights(ref, weight, clusters, action.generation)
        await self._write_placement(r, action, decision, now)

    async def _write_placement(
        self, r: CanaryRollout, action: StepAction, decision: Decision | None, now: float
    ) -> None:
        """The canary Placement's decision is the action's clusters (empty after stable/finalize/reset)."""
        name = canary_placement_name(r)
        clusters = list(action.clusters) if action.kind in ("clusters", "weight", "promote") else []
        if decision is None or list(decision.selected) != clusters:
            decision = Decision(
                phase="Bound" if clusters else "Unbound",
                policy="Spread",
                selected=clusters,
                candidates=[CandidateResult(c, True, 0.0, "Selected", "") for c in clusters],
                decided_at=now,
                message=f"canary clusters of {r.metadata.namespace}/{r.metadata.name}",
            )
        obj = canary_placement(r, len(clusters) or None)
        started = time.perf_counter()
        entry = None
        for _ in range(5):  # the object as the API writes it, then its status as /status does
            entry = await self._placements.get(name)
            if entry is None:
                entry = await create_object(self._placements, name, obj)
            elif (entry.value.spec, entry.value.metadata.owner_references) != (obj.spec, obj.metadata.owner_references):
                try:
                    entry = await update_object(self._placements, entry, obj)
                except CasConflictError:
                    entry = None
            if entry is not None:
                break
        if entry is None:
            raise BusError(f"placement {name}: not written after 5 conflicting writes")
        chosen = decision

        def status(p: Placement) -> PlacementStatus:
            return to_status(chosen, now, observed_generation=p.metadata.generation, previous=p.status.conditions)

        try:
            await write_status(self._placements, name, status, current=entry)
        except StatusConflictError as exc:
            raise BusError(str(exc)) from exc
        message = to_message(decision, name, time.perf_counter() - started, decided_by="canary")
        try:
            await self._bus.js_publish(subjects.placement_decision(name), message)
        except BusError as exc:  # the placement is written; only the event is lost
            log.warning("placement %s: decision not published: %s", name, exc)

    async def reverse(self, r: CanaryRollout, generation: int) -> None:
        """100 % stable on every cluster of the route, in one message (the rollback's first stage)."""
        ref = route_of(r)
        self._routes[(ref.namespace, ref.route)] = ref
        await self._router.set_weights(ref, 0, [], generation)

    async def empty_placement(self, r: CanaryRollout, now: float) -> None:
        """The canary Placement chooses no cluster any more, and its decision is published."""
        if await self._placements.get(canary_placement_name(r)) is None:
            return  # never written (no setClusters yet) or already cleaned up
        await self._write_placement(r, StepAction(kind="stable"), None, now)

    async def remove_placement(self, r: CanaryRollout) -> None:
        """Delete the canary Placement (idempotent)."""
        name = canary_placement_name(r)
        entry = await self._placements.get(name)
        if entry is not None and any(o.name == r.metadata.name for o in entry.value.metadata.owner_references):
            try:
                await self._placements.delete(name, entry.revision)
            except CasConflictError:
                await self._placements.delete(name)

    async def applied(self, r: CanaryRollout) -> Applied | None:
        """What the router reports as applied on the rollout's route."""
        ref = route_of(r)
        self._routes[(ref.namespace, ref.route)] = ref
        report = await self._router.applied(ref)
        if report is None:
            return None
        return Applied(report.generation, dict(report.canary))

    async def follow(self, stop: asyncio.Event, on_applied: Callable[[str, str], None]) -> None:
        """Call ``on_applied(namespace, route)`` when a followed route's applied report changes.

        A router that pushes its reports (``on_report``) is heard at once; every router is also
        looked at every ``APPLIED_POLL`` seconds (a report read from the stream after a restart).
        """
        listen = getattr(self._router, "on_report", None)
        if callable(listen):
            listen(on_applied)
        while not stop.is_set():
            for key, ref in list(self._routes.items()):
                try:
                    report = await self._router.applied(ref)
                except BusError:
                    continue
                gen = report.generation if report is not None else -1
                if self._seen.get(key) != gen:
                    self._seen[key] = gen
                    on_applied(*key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), APPLIED_POLL)

    def router_error(self, r: CanaryRollout) -> str:
        """Why the rollout's traffic router cannot be used; empty when it can."""
        name = r.spec.traffic_routing.router
        if isinstance(self._router, RouterSet):
            return self._router.check(name)
        return "" if name in ("nats", self._router.name) else f"the {name} router is not available here; use nats"

    async def close(self) -> None:
        """Release the router."""
        await self._router.close()
