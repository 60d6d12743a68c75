"""Traffic routers: set the canary weight of a route on a set of clusters, read back what the
data plane applied.

``nats`` publishes TrafficWeights to TMC_TRAFFIC (the mock service mesh, or any data plane
that speaks the contract, obeys it) and learns the applied weights from TrafficApplied
reports.  ``gateway-api`` (HTTPRoute backendRef weights) and ``smi`` (TrafficSplit) live in
``tmcd/kube/``, which this package does not import: the runtime hands the agents a
:data:`~tmcd.contracts.traffic.RouterFactory` that builds them, and :class:`RouterSet` picks a
router per route by the rollout's ``trafficRouting.router``.  Without a factory they are
refused with :class:`UnsupportedRouter`, whose message a rollout's status can carry as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tmcd.bus import Bus, Delivery, last_message
from tmcd.contracts import subjects
from tmcd.contracts.messages import TrafficApplied, TrafficWeights
from tmcd.contracts.names import validate_name
from tmcd.contracts.traffic import (
    AppliedWeights,
    ClusterAnnotations,
    RouteRef,
    RouterFactory,
    TrafficError,
    TrafficRouter,
    UnsupportedRouter,
)

__all__ = [
    "ROUTERS",
    "AppliedWeights",
    "NatsRouter",
    "RouteRef",
    "RouterFactory",
    "RouterSet",
    "TrafficError",
    "TrafficRouter",
    "UnsupportedRouter",
    "router_for",
]

log = logging.getLogger("tmcd.canary")

ROUTERS: tuple[str, ...] = ("nats", "gateway-api", "smi")
"""Every router name a rollout may give (``spec.trafficRouting.router``)."""
MAX_ROUTES = 10_000
"""Routes a NatsRouter remembers reports for (least recently used beyond it are forgotten)."""
MAX_PENDING_REPORTS = 10_000
REREAD_AFTER = 2.0
"""Seconds before a route whose report is missing or behind is read from the stream again: the
subscription brings new reports at once, the stream read only covers what it missed, so callers
that poll often (the canary agent, every 0.25 s) do not turn into a stream read each."""


@dataclass
class _Route:
    desired: int = -1
    """The highest generation this router set."""
    report: AppliedWeights | None = None
    read_at: float | None = None
    """When the stream was last read for this route (monotonic), and for which generation."""
    read_for: int = -2


@dataclass
class NatsRouter:
    """The ``nats`` router: TrafficWeights out (JetStream, TMC_TRAFFIC), TrafficApplied back.

    Reports arrive on a subscription and are kept for the routes this router was asked about;
    a route with no report yet, or with a report older than the generation set, is read from
    the stream (its last report), so a restarted tmcd or a report missed during a reconnect
    costs one read, not a wait for the next change.
    """

    bus: Bus
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    max_routes: int = MAX_ROUTES
    name: str = "nats"
    _routes: OrderedDict[tuple[str, str], _Route] = field(default_factory=OrderedDict)
    _sub: Any = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closed: bool = False
    _listeners: list[Callable[[str, str], None]] = field(default_factory=list)

    async def set_weights(self, ref: RouteRef, canary_weight: int, clusters: Sequence[str], generation: int) -> None:
        """Publish the route's desired weights (see :class:`TrafficRouter`); raises BusError when
        JetStream does not store them, ValueError for a weight outside 0..100 or a bad name."""
        if not 0 <= canary_weight <= 100:
            raise ValueError(f"canary weight must be within 0..100, got {canary_weight}")
        if generation < 0:
            raise ValueError(f"generation must be >= 0, got {generation}")
        named = sorted({validate_name(c, "cluster") for c in clusters})
        if ref.workload:
            validate_name(ref.workload, "workload")
        subject = subjects.traffic_weights(ref.namespace, ref.route)
        weight = canary_weight if named else 0  # no cluster runs the canary: all stable everywhere
        msg = TrafficWeights(
            namespace=ref.namespace,
            route=ref.route,
            timestamp=self.clock(),
            weights={"stable": 100 - weight, "canary": weight},
            clusters=named,
            generation=generation,
            workload="" if ref.workload == ref.route else ref.workload,
        )
        await self._subscribe()
        route = self._route(ref)
        route.desired = max(route.desired, generation)
        await self.bus.js_publish(subject, msg)

    async def applied(self, ref: RouteRef) -> AppliedWeights | None:
        """The latest report for the route (None before any); reads the stream when the router
        has none, or only one older than the generation it set (at once after a new generation
        was set, else at most every ``REREAD_AFTER`` seconds)."""
        await self._subscribe()
        route = self._route(ref)
        if self._should_read(route):
            route.read_at, route.read_for = self.monotonic(), route.desired
            d = await last_message(
                self.bus,
                subjects.STREAM_TRAFFIC,
                subjects.traffic_applied(ref.namespace, ref.route),
                subjects.TRAFFIC_APPLIED,
            )
            if d is not None:
                self._keep(route, d.msg)
        return route.report

    async def close(self) -> None:
        """Stop the subscription; the router cannot be used afterwards."""
        self._closed = True
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # a closed or draining connection: nothing to undo
                await sub.unsubscribe()
        self._routes.clear()

    def _should_read(self, route: _Route) -> bool:
        if route.report is not None and route.report.generation >= route.desired:
            return False
        if route.read_at is None or route.read_for != route.desired:
            return True
        return self.monotonic() - route.read_at >= REREAD_AFTER

    def _route(self, ref: RouteRef) -> _Route:
        key = (ref.namespace, ref.route)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = _Route()
            while len(self._routes) > self.max_routes:
                self._routes.popitem(last=False)
        else:
            self._routes.move_to_end(key)
        return route

    @staticmethod
    def _keep(route: _Route, report: TrafficApplied) -> None:
        have = route.report
        if have is not None and (have.generation, have.timestamp) > (report.generation, report.timestamp):
            return
        route.report = AppliedWeights(
            generation=report.generation,
            canary=report.canary(),
            timestamp=report.timestamp,
            unknown_clusters=tuple(report.unknown_clusters),
        )

    async def _subscribe(self) -> None:
        if self._closed:
            raise RuntimeError("traffic router is closed")
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is None:
                self._sub = await self.bus.subscribe(
                    subjects.TRAFFIC_APPLIED.wildcard,
                    self._on_report,
                    channel=subjects.TRAFFIC_APPLIED,
                    max_pending=MAX_PENDING_REPORTS,
                )

    async def _on_report(self, d: Delivery[Any]) -> None:
        report: TrafficApplied = d.msg
        route = self._routes.get((report.namespace, report.route))
        if route is not None:  # only the routes this router serves: memory stays bounded
            self._keep(route, report)
            for listener in self._listeners:
                listener(report.namespace, report.route)

    def on_report(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(namespace, route)`` whenever a report for a served route arrives."""
        self._listeners.append(listener)


def router_for(
    name: str, bus: Bus, factory: RouterFactory | None = None, clusters: ClusterAnnotations | None = None
) -> TrafficRouter:
    """The router called ``name`` (``nats`` here, the others through ``factory``); raises
    :class:`UnsupportedRouter` for one tmcd cannot use."""
    if name == "nats":
        return NatsRouter(bus)
    if name not in ROUTERS:
        raise UnsupportedRouter(f"unknown traffic router {name!r}: expected one of {', '.join(ROUTERS)}")
    if factory is None:
        raise UnsupportedRouter(
            f"traffic router {name!r} needs the Kubernetes adapters, which this process was started without; use 'nats'"
        )
    return factory(name, clusters or dict)


class RouterSet:
    """One :class:`TrafficRouter` over several: each route goes to the router its ``RouteRef.router``
    names, built on first use (``nats`` always; the Kubernetes ones through the factory)."""

    name = "set"

    def __init__(
        self,
        bus: Bus,
        factory: RouterFactory | None = None,
        clusters: ClusterAnnotations | None = None,
        nats: TrafficRouter | None = None,
    ) -> None:
        self._bus, self._factory, self._clusters = bus, factory, clusters
        self._routers: dict[str, TrafficRouter] = {}
        if nats is not None:
            self._routers[nats.name] = nats

    def router(self, name: str) -> TrafficRouter:
        """The router called ``name``, built once; raises :class:`UnsupportedRouter`."""
        r = self._routers.get(name)
        if r is None:
            r = self._routers[name] = router_for(name, self._bus, self._factory, self._clusters)
        return r

    def check(self, name: str) -> str:
        """Why the router called ``name`` cannot be used; empty when it can."""
        try:
            self.router(name)
        except UnsupportedRouter as exc:
            return str(exc)
        return ""

    async def set_weights(self, ref: RouteRef, canary_weight: int, clusters: Sequence[str], generation: int) -> None:
        """See :class:`TrafficRouter`; a router that cannot be built raises TrafficError."""
        await self._pick(ref).set_weights(ref, canary_weight, clusters, generation)

    async def applied(self, ref: RouteRef) -> AppliedWeights | None:
        """See :class:`TrafficRouter` (None from a router that cannot be built)."""
        try:
            router = self._pick(ref)
        except TrafficError:
            return None
        return await router.applied(ref)

    def on_report(self, listener: Callable[[str, str], None]) -> None:
        """Pass ``listener`` to every router that pushes its reports (now and later built)."""
        self._listener = listener
        for r in self._routers.values():
            self._listen(r)

    _listener: Callable[[str, str], None] | None = None

    def _listen(self, r: TrafficRouter) -> None:
        listen = getattr(r, "on_report", None)
        if self._listener is not None and callable(listen):
            listen(self._listener)

    def _pick(self, ref: RouteRef) -> TrafficRouter:
        name = ref.router or "nats"
        known = name in self._routers
        try:
            r = self.router(name)
        except UnsupportedRouter as exc:
            raise TrafficError(str(exc)) from None
        if not known:
            self._listen(r)
        return r

    async def close(self) -> None:
        """Close every router built."""
        routers, self._routers = list(self._routers.values()), {}
        for r in routers:
            await r.close()
