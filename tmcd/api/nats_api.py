"""The resource API over NATS: the micro service ``tmc`` with endpoints ``tmc.api.<verb>.<plural>``.

Requests and replies are JSON; the same types and errors as the HTTP API (a failed
request gets the ``Status`` object as the body and the micro-service error headers with
the HTTP-like code).  Access is governed by NATS permissions on ``tmc.api.>``.  Lists, gets
and watches are served from the watch cache (:mod:`tmcd.api.reads`).

==========  ======================================================  =====================
verb        request body                                             reply
==========  ======================================================  =====================
list        {namespace?, labelSelector?, fieldSelector?, limit?,     a ``<Kind>List``
            continue?}
get         {namespace?, name}                                       the object
create      {namespace?, object}                                     the object
replace     {namespace?, name, object}                               the object
patch       {namespace?, name, patch}  (JSON merge patch)            the object
delete      {namespace?, name}                                       the deleted object
watch       {namespace?, labelSelector?, fieldSelector?,             a stream of watch
            resourceVersion?, timeoutSeconds?}                       events (see below)
simulate    {object: Placement}  (``tmc.api.simulate.placements``)   the decision
==========  ======================================================  =====================

A watch streams its events to the request's reply subject (:mod:`tmcd.api.nats_watch`):
list, then watch from the list's ``metadata.resourceVersion``, and nothing is missed in
between.  Each list endpoint names its kind's watch subject in its ``$SRV.INFO`` metadata.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tmcd import __version__
from tmcd.api import errors, placement
from tmcd.api.context import ApiContext
from tmcd.api.nats_watch import NatsWatches
from tmcd.api.reads import Reads, list_filters, list_object
from tmcd.api.store import ResourceStore
from tmcd.bus import Bus
from tmcd.bus.service import Endpoint, Reply, StreamEndpoint
from tmcd.resources.kinds import KINDS, PLACEMENT, Kind

VERBS = ("list", "get", "create", "replace", "patch", "delete")
"""The request/reply verbs (``watch`` streams: see :mod:`tmcd.api.nats_watch`)."""
READ_CONCURRENCY = 64
"""Lists and gets of one kind handled at once over NATS."""
_encoder = msgspec.json.Encoder()


class ApiRequest(msgspec.Struct, kw_only=True, rename="camel"):
    """The body of a ``tmc.api.<verb>.<plural>`` request."""

    namespace: str = ""
    name: str = ""
    object: dict[str, Any] | None = None
    patch: dict[str, Any] | None = None
    label_selector: str = ""
    field_selector: str = ""
    limit: int = 0
    continue_: str = msgspec.field(default="", name="continue")


def endpoints(ctx: ApiContext, watches: NatsWatches) -> list[Endpoint | StreamEndpoint]:
    """Every endpoint of the ``tmc`` service; list endpoints name their kind's watch subject."""
    out: list[Endpoint | StreamEndpoint] = []
    for kind in KINDS:
        meta = {"kind": kind.kind, "watch": f"tmc.api.watch.{kind.plural}", "bucket": kind.bucket}
        for verb in VERBS:
            handler = _handler(ctx, verb, kind)
            # a read waits for the cache to catch up: others go on meanwhile (and share its STREAM.INFO)
            concurrency = READ_CONCURRENCY if verb in ("list", "get") else 1
            subject = f"tmc.api.{verb}.{kind.plural}"
            out.append(
                Endpoint(f"{verb}-{kind.plural}", subject, handler, meta if verb == "list" else None, concurrency)
            )
        out.append(watches.endpoint(kind))
    out.append(Endpoint("simulate-placements", "tmc.api.simulate.placements", _handler(ctx, "simulate", PLACEMENT)))
    return out


def _error(err: errors.ApiError) -> Reply:
    return Reply(_encoder.encode(err.status()), str(err.code), err.message)


def _handler(ctx: ApiContext, verb: str, kind: Kind) -> Any:
    async def handle(_subject: str, data: bytes) -> Reply:
        try:
            req = msgspec.json.decode(data or b"{}", type=ApiRequest)
        except msgspec.DecodeError as exc:
            return _error(errors.bad_request(f"request is not a valid {verb} request: {exc}"))
        try:
            if verb in ("list", "get"):
                return Reply(_encoder.encode(await _read(ctx.reads(), verb, kind, req)))
            return Reply(_encoder.encode(await _run(ctx.store(), verb, kind, req)))
        except errors.ApiError as err:
            return _error(err)

    return handle


async def _read(reads: Reads, verb: str, kind: Kind, req: ApiRequest) -> Any:
    ns = req.namespace
    if verb == "list":
        selector, name = list_filters(req.label_selector, req.field_selector)
        page = await reads.list(
            kind, ns, selector=selector, name=name, limit=max(0, req.limit), continue_token=req.continue_
        )
        return list_object(kind, page)
    if kind.namespaced and not ns:
        raise errors.bad_request(f"{kind.plural} are namespaced: give a namespace")
    if not req.name:
        raise errors.bad_request("name is required")
    return (await reads.entry(kind, ns, req.name)).raw  # encoded as is


async def _run(store: ResourceStore, verb: str, kind: Kind, req: ApiRequest) -> Any:
    ns = req.namespace
    if kind.namespaced and not ns and verb not in ("create", "simulate"):
        raise errors.bad_request(f"{kind.plural} are namespaced: give a namespace")
    if verb in ("replace", "patch", "delete") and not req.name:
        raise errors.bad_request("name is required")
    if verb == "delete":
        return await store.delete(kind, ns, req.name)
    if verb == "patch":
        if req.patch is None:
            raise errors.bad_request("patch is required")
        patch = placement.patch_without_status(req.patch) if kind is PLACEMENT else req.patch
        return await store.patch(kind, ns, req.name, patch)
    if req.object is None:
        raise errors.bad_request("object is required")
    obj = store.decode(kind, req.object, name=req.name)
    if verb == "simulate":
        return await placement.simulate(store, obj)
    if verb == "create":
        return await store.create(kind, placement.new(obj) if kind is PLACEMENT else obj, ns)
    if kind is PLACEMENT:
        return await placement.replace(store, req.name, obj)
    return await store.replace(kind, ns, req.name, obj)


async def start(bus: Bus, ctx: ApiContext, watches: NatsWatches | None = None) -> tuple[Any, NatsWatches]:
    """Start the ``tmc`` micro service; returns it and its watches (close those after stopping it)."""
    watches = NatsWatches(ctx.reads) if watches is None else watches
    description = "tmcd resource API: list/get/watch/create/replace/patch/delete per kind"
    return await bus.service("tmc", __version__, description, endpoints(ctx, watches)), watches
