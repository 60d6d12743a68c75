"""The ``gateway-api`` and ``smi`` traffic routers: canary weights as HTTPRoute backendRef weights
or TrafficSplit backend weights, on every cluster's API server.

Each cluster is reached through a kubeconfig context: the SyncTarget's annotation
``tmc.kcp.io/kubeconfig-context``, else ``[kube.contexts]``.  A weight change is one JSON patch
per cluster that starts with a ``test`` op on the object's resourceVersion, so a concurrent writer
makes it fail (409 or 422) instead of being overwritten; the router then reads the object again
and retries (``MAX_ATTEMPTS``).  The patch also records the traffic generation in the annotation
``tmc.kcp.io/traffic-generation``, which :meth:`KubeRouter.applied` reads back with the weights.

These classes satisfy :class:`tmcd.contracts.traffic.TrafficRouter`; the runtime builds them with
:func:`router_factory` and hands the factory to the canary and rollback agents.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tmcd.config import KubeConfig
from tmcd.contracts.traffic import (
    AppliedWeights,
    ClusterAnnotations,
    RouteRef,
    RouterFactory,
    TrafficError,
    TrafficRouter,
    UnsupportedRouter,
)
from tmcd.kube.client import Clients, Conflict, Invalid, Kube, NotFound, Resource, Unreachable, annotation_patch

__all__ = [
    "CONTEXT_ANNOTATION",
    "GENERATION_ANNOTATION",
    "HTTPROUTE",
    "TRAFFICSPLIT",
    "GatewayApiRouter",
    "KubeRouter",
    "SmiRouter",
    "context_of",
    "router_factory",
]

log = logging.getLogger("tmcd.kube")

CONTEXT_ANNOTATION = "tmc.kcp.io/kubeconfig-context"
"""On a SyncTarget: the kubeconfig context of the cluster's API server."""
GENERATION_ANNOTATION = "tmc.kcp.io/traffic-generation"
"""On an HTTPRoute or TrafficSplit: the traffic generation its weights belong to."""
HTTPROUTE = Resource("gateway.networking.k8s.io", "v1", "httproutes")
TRAFFICSPLIT = Resource("split.smi-spec.io", "v1alpha4", "trafficsplits")
MAX_ATTEMPTS = 5
"""Patches of one object tried (each after a fresh read) before a conflict is an error."""
REREAD_AFTER = 5.0
"""Seconds :meth:`KubeRouter.applied` answers from what it last read or patched before reading again
(the canary agent asks every 0.25 s; the API servers need not hear it)."""


def context_of(settings: KubeConfig, clusters: ClusterAnnotations, cluster: str) -> str | None:
    """The kubeconfig context of ``cluster``: its SyncTarget's annotation, else ``[kube.contexts]``."""
    annotated = (clusters().get(cluster) or {}).get(CONTEXT_ANNOTATION)
    return annotated or settings.contexts.get(cluster)


@dataclass
class _Seen:
    """What one cluster's object said, as of ``at`` (monotonic)."""

    canary: int
    generation: int


@dataclass(frozen=True)
class _Pair:
    """Where a stable/canary split lives in an object (JSON pointers) and its weights."""

    stable_path: str
    canary_path: str
    stable: int
    canary: int


@dataclass
class _Route:
    seen: dict[str, _Seen] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    canary_clusters: tuple[str, ...] = ()
    read_at: float | None = None


class KubeRouter:
    """Shared by both routers: cluster -> context, the patch loop, the read-back.  Subclasses say
    which resource holds the weights and where (:meth:`weights`, :meth:`weight_ops`)."""

    name = ""
    resource: Resource
    kind = ""

    def __init__(
        self,
        settings: KubeConfig,
        clusters: ClusterAnnotations | None = None,
        *,
        clients: Clients | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clusters = clusters or dict
        self.clients = clients or Clients(settings)
        self._monotonic = monotonic
        self._routes: dict[tuple[str, str], _Route] = {}

    # -- what subclasses say ---------------------------------------------------------------

    def weights(self, obj: Mapping[str, Any], ref: RouteRef) -> list[_Pair]:
        """Every place in ``obj`` that splits traffic between the two Services (empty: none)."""
        raise NotImplementedError

    # -- the contract ------------------------------------------------------------------------

    def context_of(self, cluster: str) -> str | None:
        """The kubeconfig context of ``cluster`` (annotation first, then ``[kube.contexts]``)."""
        return context_of(self.settings, self._clusters, cluster)

    def targets(self, extra: Sequence[str] = ()) -> list[str]:
        """Every cluster with a context, and ``extra``."""
        known = {c for c, ann in self._clusters().items() if ann.get(CONTEXT_ANNOTATION)}
        return sorted(known | set(self.settings.contexts) | set(extra))

    async def set_weights(self, ref: RouteRef, canary_weight: int, clusters: Sequence[str], generation: int) -> None:
        """Patch the route on every cluster with a context: ``canary_weight`` on ``clusters``, 0 on
        the others.  Raises TrafficError when a canary cluster could not be patched (a missing
        object, no context, unreachable); a stable-only cluster that fails is logged and reported
        by :meth:`applied` instead (an unreachable cluster must not stop a rollback elsewhere)."""
        if not 0 <= canary_weight <= 100:
            raise ValueError(f"canary weight must be within 0..100, got {canary_weight}")
        route = self._route(ref)
        route.canary_clusters = tuple(sorted(clusters)) if canary_weight else ()
        wanted = set(route.canary_clusters)
        targets = self.targets(list(clusters))
        results = await asyncio.gather(
            *(self._set_one(ref, c, canary_weight if c in wanted else 0, generation) for c in targets),
            return_exceptions=True,
        )
        failed: list[str] = []
        for cluster, res in zip(targets, results, strict=True):
            route.unreachable.pop(cluster, None)
            route.missing.discard(cluster)
            if isinstance(res, _Seen):
                route.seen[cluster] = res
                continue
            if not isinstance(res, Exception):
                raise res
            route.seen.pop(cluster, None)
            why = self._describe(ref, cluster, res)
            if isinstance(res, NotFound):
                route.missing.add(cluster)
            else:
                route.unreachable[cluster] = why
            if cluster in wanted:
                failed.append(why)
            else:
                log.warning("%s", why)
        route.read_at = self._monotonic()
        if failed:
            raise TrafficError("; ".join(failed))

    async def applied(self, ref: RouteRef) -> AppliedWeights | None:
        """The weights on every cluster's object (read again at most every ``REREAD_AFTER`` s after
        the last read or patch): the lowest generation among them, the canary percent per cluster,
        the clusters that have no such object (``unknown_clusters``) or could not be read."""
        route = self._route(ref)
        now = self._monotonic()
        if route.read_at is None or now - route.read_at >= REREAD_AFTER:
            route.read_at = now
            targets = self.targets(route.canary_clusters)
            results = await asyncio.gather(*(self._read_one(ref, c) for c in targets), return_exceptions=True)
            route.seen.clear()
            route.unreachable.clear()
            route.missing.clear()
            for cluster, res in zip(targets, results, strict=True):
                if isinstance(res, _Seen):
                    route.seen[cluster] = res
                elif isinstance(res, NotFound):
                    route.missing.add(cluster)
                elif isinstance(res, Exception):
                    route.unreachable[cluster] = self._describe(ref, cluster, res)
                else:
                    raise res
        if not route.seen:
            return None
        return AppliedWeights(
            generation=min(s.generation for s in route.seen.values()),
            canary={c: s.canary for c, s in sorted(route.seen.items()) if s.canary},
            unknown_clusters=tuple(sorted(route.missing)),
            unreachable=dict(sorted(route.unreachable.items())),
        )

    async def close(self) -> None:
        """Close every API server connection."""
        await self.clients.close()
        self._routes.clear()

    # -- one cluster -------------------------------------------------------------------------

    def _route(self, ref: RouteRef) -> _Route:
        return self._routes.setdefault((ref.namespace, ref.route), _Route())

    def _where(self, ref: RouteRef, cluster: str) -> str:
        return f"{self.kind} {ref.namespace}/{ref.route} on cluster {cluster}"

    def _describe(self, ref: RouteRef, cluster: str, exc: Exception) -> str:
        """The error in words that name the object and the cluster."""
        msg = str(exc)
        return msg if msg.startswith(self.kind) else f"{self._where(ref, cluster)}: {msg}"

    async def _client_for(self, ref: RouteRef, cluster: str) -> Kube:
        context = self.context_of(cluster)
        if not context:
            raise Unreachable(
                f"{self._where(ref, cluster)}: no kubeconfig context (annotate its SyncTarget with "
                f"{CONTEXT_ANNOTATION} or add it to [kube.contexts])"
            )
        return await self.clients.get(context)

    def _observe(self, obj: Mapping[str, Any], ref: RouteRef, cluster: str) -> _Seen:
        pairs = self.weights(obj, ref)
        if not pairs:
            raise TrafficError(
                f"{self._where(ref, cluster)} does not route to both {ref.stable_service} and {ref.canary_service}"
            )
        total = pairs[0].stable + pairs[0].canary
        percent = round(100 * pairs[0].canary / total) if total > 0 else 0
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        try:
            generation = int(annotations.get(GENERATION_ANNOTATION, -1))
        except ValueError:
            generation = -1
        return _Seen(percent, generation)

    async def _read_one(self, ref: RouteRef, cluster: str) -> _Seen:
        kube = await self._client_for(ref, cluster)
        try:
            obj = await kube.get(self.resource, ref.namespace, ref.route)
        except NotFound as exc:
            raise NotFound(f"{self._where(ref, cluster)} not found ({kube.where})", 404) from exc
        return self._observe(obj, ref, cluster)

    async def _set_one(self, ref: RouteRef, cluster: str, canary: int, generation: int) -> _Seen:
        kube = await self._client_for(ref, cluster)
        for _ in range(MAX_ATTEMPTS):
            try:
                obj = await kube.get(self.resource, ref.namespace, ref.route)
            except NotFound as exc:
                raise NotFound(f"{self._where(ref, cluster)} not found ({kube.where})", 404) from exc
            seen = self._observe(obj, ref, cluster)
            pairs = self.weights(obj, ref)
            if seen.generation > generation or (
                seen.generation == generation and all((p.stable, p.canary) == (100 - canary, canary) for p in pairs)
            ):
                return seen  # a newer generation is there, or this one already is: nothing to do
            ops: list[dict[str, Any]] = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": obj["metadata"]["resourceVersion"]}
            ]
            for p in pairs:  # "add" sets a member whether or not it is there (a backendRef may omit weight)
                ops.append({"op": "add", "path": p.stable_path, "value": 100 - canary})
                ops.append({"op": "add", "path": p.canary_path, "value": canary})
            ops.append(annotation_patch(obj, GENERATION_ANNOTATION, str(generation)))
            try:
                patched = await kube.json_patch(self.resource, ref.namespace, ref.route, ops)
            except (Conflict, Invalid) as exc:  # changed since read (409), or the test op failed (422)
                log.info("%s: %s; reading it again", self._where(ref, cluster), exc)
                continue
            return self._observe(patched, ref, cluster)
        raise Conflict(f"{self._where(ref, cluster)}: still changing after {MAX_ATTEMPTS} patches", 409)


class GatewayApiRouter(KubeRouter):
    """``gateway-api``: the weights of an HTTPRoute's backendRefs (gateway.networking.k8s.io/v1)
    to the stable and canary Services, in every rule that has both."""

    name = "gateway-api"
    resource = HTTPROUTE
    kind = "HTTPRoute"

    def weights(self, obj: Mapping[str, Any], ref: RouteRef) -> list[_Pair]:
        """See :meth:`KubeRouter.weights` (a backendRef without a weight weighs 1, as Gateway API says)."""
        out = []
        for i, rule in enumerate((obj.get("spec") or {}).get("rules") or []):
            refs = {b.get("name"): (j, b) for j, b in enumerate(rule.get("backendRefs") or [])}
            if ref.stable_service in refs and ref.canary_service in refs:
                (js, s), (jc, c) = refs[ref.stable_service], refs[ref.canary_service]
                base = f"/spec/rules/{i}/backendRefs"
                out.append(_Pair(f"{base}/{js}/weight", f"{base}/{jc}/weight", s.get("weight", 1), c.get("weight", 1)))
        return out


class SmiRouter(KubeRouter):
    """``smi``: the weights of a TrafficSplit's backends (split.smi-spec.io/v1alpha4)."""

    name = "smi"
    resource = TRAFFICSPLIT
    kind = "TrafficSplit"

    def weights(self, obj: Mapping[str, Any], ref: RouteRef) -> list[_Pair]:
        """See :meth:`KubeRouter.weights`."""
        backends = {b.get("service"): (j, b) for j, b in enumerate((obj.get("spec") or {}).get("backends") or [])}
        if ref.stable_service not in backends or ref.canary_service not in backends:
            return []
        (js, s), (jc, c) = backends[ref.stable_service], backends[ref.canary_service]
        return [
            _Pair(f"/spec/backends/{js}/weight", f"/spec/backends/{jc}/weight", s.get("weight", 0), c.get("weight", 0))
        ]


ROUTER_CLASSES: dict[str, type[KubeRouter]] = {"gateway-api": GatewayApiRouter, "smi": SmiRouter}


def router_factory(settings: KubeConfig, **kw: Any) -> RouterFactory:
    """The factory the runtime hands to the canary and rollback agents: builds a ``gateway-api``
    or ``smi`` router (each with its own client cache, closed with it)."""

    def build(name: str, clusters: ClusterAnnotations) -> TrafficRouter:
        cls = ROUTER_CLASSES.get(name)
        if cls is None:
            raise UnsupportedRouter(f"unknown Kubernetes traffic router {name!r}: expected gateway-api or smi")
        return cls(settings, clusters, **kw)

    return build
