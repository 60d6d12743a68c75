"""The resource API over HTTP (aiohttp), under /api/v1.

Routes come from the kind table: cluster-scoped kinds at ``/api/v1/<plural>[/NAME]``,
namespaced kinds at ``/api/v1/namespaces/NS/<plural>[/NAME]`` and across namespaces at
``/api/v1/<plural>``.  Errors are Kubernetes ``Status`` objects; ``?watch=1`` streams
changes as server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from tmcd.api import errors, placement
from tmcd.api.auth import authorize
from tmcd.api.store import ResourceStore, list_filters, list_object
from tmcd.bus import Bus
from tmcd.config import ApiConfig
from tmcd.resources.kinds import KINDS, PLACEMENT, Kind

log = logging.getLogger("tmcd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BusGetter = Callable[[], "Bus | None"]

_encoder = msgspec.json.Encoder()
HEARTBEAT = 15.0
"""Seconds between SSE comments on an idle watch (they also detect gone clients)."""


@dataclass(frozen=True)
class Route:
    """One operation of the HTTP API (the OpenAPI document is generated from these)."""

    method: str
    path: str
    verb: str
    """list, get, create, replace, patch, delete, watch or simulate."""
    kind: Kind | None
    summary: str
    handler: Handler


class ApiContext:
    """What the handlers need: settings, the bus (once connected), a store, a stop signal."""

    def __init__(self, cfg: ApiConfig, bus: BusGetter) -> None:
        self.cfg = cfg
        self._bus = bus
        self._store: ResourceStore | None = None
        self._store_bus: Bus | None = None
        self.stopping = asyncio.Event()

    def store(self) -> ResourceStore:
        bus = self._bus()
        if bus is None or not bus.connected:
            raise errors.ApiError(503, "ServiceUnavailable", "not connected to NATS")
        if self._store is None or self._store_bus is not bus:
            self._store, self._store_bus = ResourceStore(bus), bus
        return self._store


def respond(obj: Any, status: int = 200) -> web.Response:
    """JSON response from a msgspec object or plain data."""
    return web.Response(body=_encoder.encode(obj), status=status, content_type="application/json")


def error_response(err: errors.ApiError) -> web.Response:
    """A Status object with the error's HTTP code."""
    return respond(err.status(), err.code)


def build_routes(ctx: ApiContext) -> list[Route]:
    """Every route of the resource API."""
    out: list[Route] = []
    for kind in KINDS:
        out.extend(_kind_routes(ctx, kind))
    out.append(_simulation_route(ctx))
    return out


def _kind_routes(ctx: ApiContext, kind: Kind) -> list[Route]:
    collection = f"/api/v1/namespaces/{{namespace}}/{kind.plural}" if kind.namespaced else f"/api/v1/{kind.plural}"
    item = collection + "/{name}"

    async def list_(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=False)
        ns = request.match_info.get("namespace", "")
        q = request.query
        if q.get("watch", "") in ("1", "true"):
            return await watch(ctx, request, kind, ns)
        selector, name = list_filters(q.get("labelSelector", ""), q.get("fieldSelector", ""))
        try:
            limit = int(q.get("limit", "0") or 0)
        except ValueError:
            raise errors.bad_request("limit must be an integer") from None
        if limit < 0:
            raise errors.bad_request("limit must be >= 0")
        page = await ctx.store().list(
            kind, ns, selector=selector, name=name, limit=limit, continue_token=q.get("continue", "")
        )
        return respond(list_object(kind, page))

    async def get(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=False)
        return respond(await ctx.store().get(kind, request.match_info.get("namespace", ""), request.match_info["name"]))

    async def create(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=True)
        store = ctx.store()
        obj = store.decode(kind, await request.read())
        if kind is PLACEMENT:
            obj = placement.new(obj)
        return respond(await store.create(kind, obj, request.match_info.get("namespace", "")), 201)

    async def replace(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=True)
        store = ctx.store()
        name = request.match_info["name"]
        obj = store.decode(kind, await request.read(), name=name)
        if kind is PLACEMENT:
            return respond(await placement.replace(store, name, obj))
        return respond(await store.replace(kind, request.match_info.get("namespace", ""), name, obj))

    async def patch(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=True)
        try:
            body = msgspec.json.decode(await request.read())
        except msgspec.DecodeError as exc:
            raise errors.bad_request(f"request body is not valid JSON: {exc}") from None
        if kind is PLACEMENT:
            body = placement.patch_without_status(body)
        return respond(
            await ctx.store().patch(kind, request.match_info.get("namespace", ""), request.match_info["name"], body)
        )

    async def delete(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=True)
        return respond(
            await ctx.store().delete(kind, request.match_info.get("namespace", ""), request.match_info["name"])
        )

    k = kind.kind
    routes = [
        Route("GET", collection, "list", kind, f"List {kind.plural} (or watch with ?watch=1)", list_),
        Route("POST", collection, "create", kind, f"Create a {k}", create),
        Route("GET", item, "get", kind, f"Read a {k}", get),
        Route("PUT", item, "replace", kind, f"Replace a {k} (409 on a stale resourceVersion)", replace),
        Route("PATCH", item, "patch", kind, f"Merge-patch a {k} (RFC 7386)", patch),
        Route("DELETE", item, "delete", kind, f"Delete a {k}", delete),
    ]
    if kind.namespaced:
        routes.append(
            Route("GET", f"/api/v1/{kind.plural}", "list", kind, f"List {kind.plural} in all namespaces", list_)
        )
    return routes


def _simulation_route(ctx: ApiContext) -> Route:
    async def simulate_(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=False)  # nothing is saved
        store = ctx.store()
        return respond(await placement.simulate(store, store.decode(PLACEMENT, await request.read())))

    summary = "Decide a Placement (body) against the current clusters without saving anything"
    return Route("POST", "/api/v1/placement-simulations", "simulate", PLACEMENT, summary, simulate_)


def auth(ctx: ApiContext, request: web.Request, *, write: bool) -> None:
    """Authorise the request or raise."""
    authorize(ctx.cfg, request.headers.get("Authorization"), write=write, remote=request.remote)


async def watch(ctx: ApiContext, request: web.Request, kind: Kind, namespace: str) -> web.StreamResponse:
    """Server-sent events: ``event: ADDED|MODIFIED|DELETED``, ``id: <resourceVersion>``, the object as data."""
    store = ctx.store()
    since = request.query.get("resourceVersion") or request.headers.get("Last-Event-ID") or ""
    stop = asyncio.Event()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    events = store.watch(kind, namespace, since, stop)
    stopper = asyncio.create_task(_stop_when(ctx.stopping, stop))
    try:
        while True:
            try:
                ev = await asyncio.wait_for(anext(events), HEARTBEAT)
            except TimeoutError:
                await resp.write(b": ping\n\n")
                continue
            except StopAsyncIteration:
                break
            data = _encoder.encode({"type": ev.type, "object": ev.object})
            rv = ev.object.metadata.resource_version
            await resp.write(b"event: " + ev.type.encode() + b"\nid: " + rv.encode() + b"\ndata: " + data + b"\n\n")
    except ConnectionResetError:
        pass  # the client went away: the stream is over (a cancellation, by contrast, propagates)
    finally:
        stop.set()
        stopper.cancel()
        # asyncio.wait neither raises the stopper's cancellation nor hides one of this task
        await asyncio.wait({stopper})
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]
    return resp


async def _stop_when(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiErrors become Status objects; anything unexpected a 500 Status, never a traceback."""
    try:
        return await handler(request)
    except errors.ApiError as err:
        return error_response(err)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(errors.ApiError(500, "InternalError", "internal error; see the tmcd log"))


def cors(origins: list[str]) -> Any:
    """CORS for the listed origins only (none by default: browsers then refuse cross-origin calls)."""
    allowed = frozenset(origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        if not allowed or origin not in allowed or not request.path.startswith("/api/"):
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            resp: web.StreamResponse = web.Response(status=204)
        else:
            resp = await handler(request)
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Vary"] = "Origin"
        resp.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE"
        resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        return resp

    return middleware


def add_api(app: web.Application, ctx: ApiContext) -> list[Route]:
    """Register the resource API on an app; returns the routes (for OpenAPI)."""
    routes = build_routes(ctx)
    for r in routes:
        app.router.add_route(r.method, r.path, r.handler)

    async def on_shutdown(_app: web.Application) -> None:
        ctx.stopping.set()

    app.on_shutdown.append(on_shutdown)
    return routes
