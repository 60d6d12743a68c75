"""Traffic routers: set the canary weight of a route on a set of clusters, read back what the
data plane applied.

``nats`` publishes TrafficWeights to TMC_TRAFFIC (the mock service mesh, or any data plane
that speaks the contract, obeys it) and learns the applied weights from TrafficApplied
reports.  ``gateway-api`` (HTTPRoute backendRef weights) and ``smi`` (TrafficSplit) come with
the Kubernetes adapters; until then :func:`router_for` refuses them with
:class:`UnsupportedRouter`, whose message a rollout's status can carry as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tmcd.bus import Bus, Delivery, last_message
from tmcd.contracts import subjects
from tmcd.contracts.messages import TrafficApplied, TrafficWeights
from tmcd.contracts.names import validate_name

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


class UnsupportedRouter(ValueError):
    """A traffic router tmcd cannot use (yet); the message says why and what to use instead."""


@dataclass(frozen=True)
class RouteRef:
    """A route and the workload it serves (empty: the route name)."""

    namespace: str
    route: str
    workload: str = ""


@dataclass(frozen=True)
class AppliedWeights:
    """What the data plane reported for a route: the generation it applied and the canary percent
    per cluster (a cluster not listed is 100 % stable)."""

    generation: int
    canary: dict[str, int]
    timestamp: float = 0.0
    """When the data plane applied it (Unix seconds)."""
    unknown_clusters: tuple[str, ...] = ()
    """Clusters the weights named that the data plane does not serve."""


class TrafficRouter(Protocol):
    """Sets and reads back the canary weight of routes."""

    name: str

    async def set_weights(self, ref: RouteRef, canary_weight: int, clusters: Sequence[str], generation: int) -> None:
        """``canary_weight`` % of the route's traffic to the canary on ``clusters``, every other
        cluster (all of them when ``clusters`` is empty) 100 % stable.  Idempotent; a newer
        ``generation`` replaces an older one, an older one is ignored by the data plane."""
        ...

    async def applied(self, ref: RouteRef) -> AppliedWeights | None:
        """The latest weights the data plane reports as applied for the route; None before any."""
        ...

    async def close(self) -> None:
        """Release what the router holds (subscriptions)."""
        ...


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


def router_for(name: str, bus: Bus) -> TrafficRouter:
    """The router called ``name``; raises :class:`UnsupportedRouter` for one tmcd cannot use."""
    if name == "nats":
        return NatsRouter(bus)
    if name in ROUTERS:
        raise UnsupportedRouter(
            f"traffic router {name!r} is not supported yet (it comes with the Kubernetes adapters); use 'nats'"
        )
    raise UnsupportedRouter(f"unknown traffic router {name!r}: expected one of {', '.join(ROUTERS)}")
