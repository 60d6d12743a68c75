"""The resource API over NATS: the micro service ``tmc`` with endpoints ``tmc.api.<verb>.<plural>``.

Requests and replies are JSON; the same types, rules and errors as the HTTP API (a failed
request gets the ``Status`` object as the body and the micro-service error headers with
the HTTP-like code).  Authorization is the HTTP API's (:mod:`tmcd.api.auth`): with ``[api]
tokens`` configured, a write carries ``Authorization: Bearer <token>`` as a NATS header (and a
read too when ``api.require_auth_for_reads``); with none, NATS permissions on ``tmc.api.>``
govern access.  Lists, gets and watches are served from the watch cache (:mod:`tmcd.api.reads`).

=============  ======================================================  =====================
verb           request body                                             reply
=============  ======================================================  =====================
list           {namespace?, labelSelector?, fieldSelector?, limit?,     a ``<Kind>List``
               continue?}
get            {namespace?, name}                                       the object
create         {namespace?, object}  (any status is ignored)            the object
replace        {namespace?, name, object}  (the status is kept)         the object
patch          {namespace?, name, patch, patchType?}  (merge or json)   the object
replacestatus  {namespace?, name, object}  (only the status is written) the object
patchstatus    {namespace?, name, patch, patchType?}  (only the status) the object
delete         {namespace?, name}                                       the deleted object
watch          {namespace?, labelSelector?, fieldSelector?,             a stream of watch
               resourceVersion?, timeoutSeconds?}                       events (see below)
simulate       {object: Placement}  (``tmc.api.simulate.placements``)   the decision
replicas       {}  (``tmc.api.get.replicas``)                           a ReplicaReport
=============  ======================================================  =====================

A watch streams its events to the request's reply subject (:mod:`tmcd.api.nats_watch`):
list, then watch from the list's ``metadata.resourceVersion``, and nothing is missed in
between.  Each list endpoint names its kind's watch subject in its ``$SRV.INFO`` metadata.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tmcd import __version__
from tmcd.api import errors, jsonbody, patches, placement
from tmcd.api.auth import authorize
from tmcd.api.context import ApiContext
from tmcd.api.nats_watch import NatsWatches
from tmcd.api.reads import Reads, list_filters, list_object
from tmcd.api.replicas import replica_report
from tmcd.api.store import ResourceStore
from tmcd.bus import Bus
from tmcd.bus.service import Endpoint, Headers, Reply, StreamEndpoint
from tmcd.resources import writes
from tmcd.resources.kinds import KINDS, PLACEMENT, Kind

VERBS = ("list", "get", "create", "replace", "patch", "delete")
"""The request/reply verbs (``watch`` streams: see :mod:`tmcd.api.nats_watch`)."""
STATUS_VERBS = ("replacestatus", "patchstatus")
"""The status subresource's verbs, for kinds with a status."""
WRITES = frozenset(("create", "replace", "patch", "delete", *STATUS_VERBS))
READ_CONCURRENCY = 64
"""Lists and gets of one kind handled at once over NATS."""
_encoder = msgspec.json.Encoder()


class ApiRequest(msgspec.Struct, kw_only=True, rename="camel"):
    """The body of a ``tmc.api.<verb>.<plural>`` request."""

    namespace: str = ""
    name: str = ""
    object: dict[str, Any] | None = None
    patch: dict[str, Any] | list[Any] | None = None
    """A JSON merge patch (an object) or, with ``patchType: json``, a JSON patch (a list of operations)."""
    patch_type: str = patches.MERGE
    """``merge`` (RFC 7386, the default) or ``json`` (RFC 6902)."""
    label_selector: str = ""
    field_selector: str = ""
    limit: int = 0
    continue_: str = msgspec.field(default="", name="continue")


def endpoints(ctx: ApiContext, watches: NatsWatches) -> list[Endpoint | StreamEndpoint]:
    """Every endpoint of the ``tmc`` service; list endpoints name their kind's watch subject."""
    out: list[Endpoint | StreamEndpoint] = []
    for kind in KINDS:
        meta = {"kind": kind.kind, "watch": f"tmc.api.watch.{kind.plural}", "bucket": kind.bucket}
        for verb in VERBS + (STATUS_VERBS if writes.has_status(kind.type) else ()):
            handler = _handler(ctx, verb, kind)
            # a read waits for the cache to catch up: others go on meanwhile (and share its STREAM.INFO)
            concurrency = READ_CONCURRENCY if verb in ("list", "get") else 1
            subject = f"tmc.api.{verb}.{kind.plural}"
            out.append(
                Endpoint(f"{verb}-{kind.plural}", subject, handler, meta if verb == "list" else None, concurrency)
            )
        out.append(watches.endpoint(kind))
    out.append(Endpoint("simulate-placements", "tmc.api.simulate.placements", _handler(ctx, "simulate", PLACEMENT)))
    out.append(Endpoint("get-replicas", "tmc.api.get.replicas", _replicas_handler(ctx)))
    return out


def _replicas_handler(ctx: ApiContext) -> Any:
    async def handle(_subject: str, _data: bytes, headers: Headers) -> Reply:
        try:
            authorize(ctx.cfg, headers.get("Authorization"), write=False, remote=None)
            report = await replica_report(ctx.bus(), ctx.lease_prefix, time.time(), election=ctx.election)
        except errors.ApiError as err:
            return _error(err)
        return Reply(_encoder.encode(report))

    return handle


def _error(err: errors.ApiError) -> Reply:
    return Reply(_encoder.encode(err.status()), str(err.code), err.message)


def _handler(ctx: ApiContext, verb: str, kind: Kind) -> Any:
    async def handle(_subject: str, data: bytes, headers: Headers) -> Reply:
        try:
            # the HTTP API's check; remote None: no loopback rule over NATS (its permissions apply)
            authorize(ctx.cfg, headers.get("Authorization"), write=verb in WRITES, remote=None)
        except errors.ApiError as err:
            return _error(err)
        try:
            req = decode_request(verb, data, ctx.cfg.max_object_bytes)
            if verb in ("list", "get"):
                return Reply(_encoder.encode(await _read(ctx.reads(), verb, kind, req)))
            return Reply(_encoder.encode(await _run(ctx.store(), verb, kind, req)))
        except errors.ApiError as err:
            return _error(err)

    return handle


def decode_request(verb: str, data: bytes, max_bytes: int) -> ApiRequest:
    """The body of a ``tmc.api.<verb>.*`` request: 413 beyond ``max_bytes``, 400 when it is not one
    (or is nested too deeply)."""
    if len(data) > max_bytes:
        raise errors.too_large(f"the request is {len(data)} bytes, more than api.max_object_bytes")
    try:
        req = msgspec.json.decode(data or b"{}", type=ApiRequest)
    except msgspec.DecodeError as exc:
        raise errors.bad_request(f"request is not a valid {verb} request: {exc}") from None
    except RecursionError:
        raise jsonbody.too_deep("the request") from None
    jsonbody.check_depth(req.object, "the request's object")
    jsonbody.check_depth(req.patch, "the request's patch")
    return req


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
    if verb not in ("create", "simulate") and not req.name:
        raise errors.bad_request("name is required")
    if verb == "delete":
        return await store.delete(kind, ns, req.name)
    if verb in ("patch", "patchstatus"):
        if req.patch is None:
            raise errors.bad_request("patch is required")
        if req.patch_type not in patches.PATCH_TYPES:
            raise errors.bad_request(f"patchType must be one of {', '.join(patches.PATCH_TYPES)}")
        write = store.patch if verb == "patch" else store.patch_status
        return await write(kind, ns, req.name, req.patch, req.patch_type)
    if req.object is None:
        raise errors.bad_request("object is required")
    if verb == "simulate":
        return await placement.simulate(store, store.decode(kind, req.object, namespace=""))
    obj = store.decode(kind, req.object, name=req.name, namespace=ns)
    if verb == "create":
        return await store.create(kind, obj, obj.metadata.namespace)
    if verb == "replacestatus":
        return await store.replace_status(kind, ns, req.name, obj)
    return await store.replace(kind, ns, req.name, obj)


async def start(bus: Bus, ctx: ApiContext, watches: NatsWatches | None = None) -> tuple[Any, NatsWatches]:
    """Start the ``tmc`` micro service; returns it and its watches (close those after stopping it)."""
    if watches is None:
        watches = NatsWatches(
            ctx.reads, authorize=lambda h: authorize(ctx.cfg, h.get("Authorization"), write=False, remote=None)
        )
    description = "tmcd resource API: list/get/watch/create/replace/patch/delete (and their status) per kind"
    return await bus.service("tmc", __version__, description, endpoints(ctx, watches)), watches
