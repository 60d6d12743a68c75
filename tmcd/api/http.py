"""The resource API over HTTP (aiohttp), under /api/v1.

Routes come from the kind table: cluster-scoped kinds at ``/api/v1/<plural>[/NAME]``,
namespaced kinds at ``/api/v1/namespaces/NS/<plural>[/NAME]`` and across namespaces at
``/api/v1/<plural>``.  Errors are Kubernetes ``Status`` objects; ``?watch=1`` streams
changes as server-sent events.  Reads are served by the watch cache (:mod:`tmcd.api.reads`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from tmcd.api import control, errors, patches, placement
from tmcd.api.auth import Caller, authorize
from tmcd.api.context import ApiContext
from tmcd.api.http_errors import JSON_TYPES, PATCH_TYPES, api_errors, check_content_type, read_body
from tmcd.api.index import Expired
from tmcd.api.reads import Watch, expired, list_filters, list_object
from tmcd.resources import writes
from tmcd.resources.kinds import CANARY_ROLLOUT, KINDS, PLACEMENT, Kind
from tmcd.resources.selectors import Selector

log = logging.getLogger("tmcd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["ApiContext", "Route", "add_api", "api_errors", "build_routes", "cors", "watch"]

_encoder = msgspec.json.Encoder()
HEARTBEAT = 15.0
"""Seconds between SSE comments on an idle watch (they also detect gone clients)."""
WRITE_TIMEOUT = 30.0
"""Seconds a watch's write may wait for a client that reads nothing before the stream is dropped."""


@dataclass(frozen=True)
class Route:
    """One operation of the HTTP API (the OpenAPI document is generated from these)."""

    method: str
    path: str
    verb: str
    """list, get, create, replace, patch, delete, replacestatus, patchstatus, simulate, or a canary
    control action (promote, abort, pause, resume, retry)."""
    kind: Kind | None
    summary: str
    handler: Handler


def respond(obj: Any, status: int = 200) -> web.Response:
    """JSON response from a msgspec object or plain data."""
    return web.Response(body=_encoder.encode(obj), status=status, content_type="application/json")


def build_routes(ctx: ApiContext) -> list[Route]:
    """Every route of the resource API."""
    out: list[Route] = []
    for kind in KINDS:
        out.extend(_kind_routes(ctx, kind))
    out.extend(_control_routes(ctx))
    out.append(_simulation_route(ctx))
    return out


def _kind_routes(ctx: ApiContext, kind: Kind) -> list[Route]:
    collection = f"/api/v1/namespaces/{{namespace}}/{kind.plural}" if kind.namespaced else f"/api/v1/{kind.plural}"
    item = collection + "/{name}"

    async def list_(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=False)
        ns = request.match_info.get("namespace", "")
        q = request.query
        params = ReadParams.of(request)  # every parameter is checked, used here or not
        if params.watch:
            return await watch(ctx, request, kind, ns)
        page = await ctx.reads().list(
            kind,
            ns,
            selector=params.selector,
            name=params.name,
            limit=params.limit,
            continue_token=q.get("continue", ""),
        )
        return respond(list_object(kind, page))

    async def get(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=False)
        entry = await ctx.reads().entry(kind, request.match_info.get("namespace", ""), request.match_info["name"])
        return web.Response(body=bytes(entry.raw), content_type="application/json")

    async def create(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=True)
        store, ns = ctx.store(), request.match_info.get("namespace", "")
        obj = store.decode(kind, await read_body(request), namespace=ns)
        return respond(await store.create(kind, obj, ns), 201)

    async def replace(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=True)
        store, ns, name = ctx.store(), request.match_info.get("namespace", ""), request.match_info["name"]
        obj = store.decode(kind, await read_body(request), name=name, namespace=ns)
        return respond(await store.replace(kind, ns, name, obj))

    async def patch(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=True)
        patch_type, body = await _patch_body(request)
        ns, name = request.match_info.get("namespace", ""), request.match_info["name"]
        return respond(await ctx.store().patch(kind, ns, name, body, patch_type))

    async def replace_status(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=True)
        store, ns, name = ctx.store(), request.match_info.get("namespace", ""), request.match_info["name"]
        obj = store.decode(kind, await read_body(request), name=name, namespace=ns)
        return respond(await store.replace_status(kind, ns, name, obj))

    async def patch_status(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=True)
        patch_type, body = await _patch_body(request)
        ns, name = request.match_info.get("namespace", ""), request.match_info["name"]
        return respond(await ctx.store().patch_status(kind, ns, name, body, patch_type))

    async def delete(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=True)
        return respond(
            await ctx.store().delete(kind, request.match_info.get("namespace", ""), request.match_info["name"])
        )

    k = kind.kind
    routes = [
        Route("GET", collection, "list", kind, f"List {kind.plural} (or watch with ?watch=1)", list_),
        Route("POST", collection, "create", kind, f"Create a {k} (any status sent is ignored)", create),
        Route("GET", item, "get", kind, f"Read a {k}", get),
        Route("PUT", item, "replace", kind, f"Replace a {k}'s metadata and spec (409 on a stale resourceVersion)",
              replace),
        Route("PATCH", item, "patch", kind, f"Patch a {k}'s metadata and spec (merge patch or JSON patch)", patch),
        Route("DELETE", item, "delete", kind, f"Delete a {k}", delete),
    ]  # fmt: skip
    if writes.has_status(kind.type):
        routes += [
            Route("PUT", item + "/status", "replacestatus", kind, f"Replace a {k}'s status (only the status is "
                  "written; 409 on a stale resourceVersion)", replace_status),
            Route("PATCH", item + "/status", "patchstatus", kind, f"Patch a {k}'s status (merge patch or JSON "
                  "patch; only the status is written)", patch_status),
        ]  # fmt: skip
    if kind.namespaced:
        routes.append(
            Route("GET", f"/api/v1/{kind.plural}", "list", kind, f"List {kind.plural} in all namespaces", list_)
        )
    return routes


async def _patch_body(request: web.Request) -> tuple[str, Any]:
    """The patch type (from the media type: 415 for another) and the decoded patch document."""
    media = check_content_type(request, PATCH_TYPES)
    return patches.MEDIA_TYPES[media], patches.decode(await request.read())


def _control_routes(ctx: ApiContext) -> list[Route]:
    """``POST .../canaryrollouts/NAME/<action>``: forwarded to the canary controller over NATS."""
    out = []
    for action in control.ACTIONS:

        async def handle(request: web.Request, action: str = action) -> web.StreamResponse:
            caller = auth(ctx, request, write=True)
            check_content_type(request, JSON_TYPES, optional=True)
            req = control.decode_request(await request.read())
            ns, name = request.match_info["namespace"], request.match_info["name"]
            reply = await control.send(ctx.bus(), ns, name, action, req, requested_by=caller.name, now=time.time())
            return respond(reply, control.http_code(reply))

        path = f"/api/v1/namespaces/{{namespace}}/{CANARY_ROLLOUT.plural}/{{name}}/{action}"
        summary = f"{action.title()} a CanaryRollout (answered by the canary controller over NATS)"
        out.append(Route("POST", path, action, CANARY_ROLLOUT, summary, handle))
    return out


def _simulation_route(ctx: ApiContext) -> Route:
    async def simulate_(request: web.Request) -> web.StreamResponse:
        auth(ctx, request, write=False)  # nothing is saved
        store = ctx.store()
        obj = store.decode(PLACEMENT, await read_body(request), namespace="")  # cluster-scoped: cleared
        return respond(await placement.simulate(store, obj))

    summary = "Decide a Placement (body) against the current clusters without saving anything"
    return Route("POST", "/api/v1/placement-simulations", "simulate", PLACEMENT, summary, simulate_)


def auth(ctx: ApiContext, request: web.Request, *, write: bool) -> Caller:
    """Authorise the request or raise."""
    return authorize(ctx.cfg, request.headers.get("Authorization"), write=write, remote=request.remote)


def _count(text: str, name: str) -> int:
    """A non-negative integer parameter (0 when empty); 400 otherwise."""
    if not text:
        return 0
    if not text.isascii() or not text.isdigit():
        raise errors.bad_request(f"{name} must be a non-negative integer")
    return int(text)


@dataclass(frozen=True)
class ReadParams:
    """The parameters of a list or watch request, checked (400 for a bad one, used or not)."""

    watch: bool
    selector: Selector | None
    name: str
    limit: int
    timeout_seconds: int
    since: str
    """``resourceVersion``, else ``Last-Event-ID``: where a watch starts (lists are always the latest)."""

    @classmethod
    def of(cls, request: web.Request) -> ReadParams:
        """The request's parameters; raises 400 for the first bad one."""
        q = request.query
        watch = q.get("watch", "")
        if watch not in ("", "true", "false", "1", "0"):
            raise errors.bad_request("watch must be true or false")
        selector, name = list_filters(q.get("labelSelector", ""), q.get("fieldSelector", ""))
        version = q.get("resourceVersion", "")
        event_id = request.headers.get("Last-Event-ID", "")
        _count(version, "resourceVersion")
        _count(event_id, "Last-Event-ID")
        limit, seconds = _count(q.get("limit", ""), "limit"), _count(q.get("timeoutSeconds", ""), "timeoutSeconds")
        return cls(watch in ("true", "1"), selector, name, limit, seconds, version or event_id)


async def watch(ctx: ApiContext, request: web.Request, kind: Kind, namespace: str) -> web.StreamResponse:
    """Server-sent events: ``event: ADDED|MODIFIED|DELETED``, ``id: <resourceVersion>``, the event as data.

    Every error (a bad or too old resourceVersion or Last-Event-ID, a bad selector, the cache
    not ready) is answered as a Status before the stream starts; a watch that falls out of the
    cache's window later gets an ``ERROR`` event with a 410 Status, and the stream ends.
    """
    p = ReadParams.of(request)
    seconds = p.timeout_seconds
    duration = min(seconds, ctx.watch_timeout) if seconds else ctx.watch_timeout
    w = await ctx.reads().watch(kind, namespace, selector=p.selector, name=p.name, resource_version=p.since)
    try:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await _stream(ctx, resp, w, duration)
    finally:
        w.close()
    return resp


async def _stream(ctx: ApiContext, resp: web.StreamResponse, w: Watch, duration: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    last_write = loop.time()
    stopper = asyncio.ensure_future(ctx.stopping.wait())

    async def write(data: bytes) -> None:
        async with asyncio.timeout(WRITE_TIMEOUT):
            await resp.write(data)

    try:
        while not ctx.stopping.is_set() and not w.closed:
            try:
                events = w.take()
            except Expired as exc:
                await write(sse(b"ERROR", b"", {"type": "ERROR", "object": expired(str(exc)).status()}))
                return
            now = loop.time()
            if events:
                chunks = [sse(t.encode(), obj.metadata.resource_version.encode(), {"type": t, "object": raw})
                          for t, obj, raw in events]  # fmt: skip
                await write(b"".join(chunks))
                last_write = now
            elif now - last_write >= HEARTBEAT:
                await write(b": ping\n\n")
                last_write = now
            if now >= end:
                return
            await w.wait(min(HEARTBEAT - (now - last_write), end - now), stopper)
    except (ConnectionResetError, TimeoutError):
        pass  # the client went away or reads nothing: the stream is over (a cancellation propagates)
    finally:
        stopper.cancel()
        # asyncio.wait neither raises the stopper's cancellation nor hides one of this task
        await asyncio.wait({stopper})


def sse(event: bytes, event_id: bytes, data: Any) -> bytes:
    """One server-sent event (``id`` left out when empty)."""
    head = b"event: " + event + (b"\nid: " + event_id if event_id else b"")
    return head + b"\ndata: " + _encoder.encode(data) + b"\n\n"


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
