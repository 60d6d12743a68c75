"""The resource API over NATS: the micro service ``tmc`` with endpoints ``tmc.api.<verb>.<plural>``.

Requests and replies are JSON; the same types and errors as the HTTP API (a failed
request gets the ``Status`` object as the body and the micro-service error headers with
the HTTP-like code).  Access is governed by NATS permissions on ``tmc.api.>``.

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
simulate    {object: Placement}  (``tmc.api.simulate.placements``)   the decision
==========  ======================================================  =====================

Watching over NATS needs no endpoint: each kind lives in a JetStream KV bucket, so a
NATS-only client runs a KV watcher on it (keys ``NAME``, or ``NAMESPACE.NAME`` for
namespaced kinds; the revision is the object's resourceVersion).  Each list endpoint
names its bucket and watch subject in its ``$SRV.INFO`` metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from tmcd import __version__
from tmcd.api import errors, placement
from tmcd.api.store import ResourceStore, list_filters, list_object
from tmcd.bus import Bus
from tmcd.bus.service import Endpoint, Reply
from tmcd.resources.kinds import KINDS, PLACEMENT, Kind

VERBS = ("list", "get", "create", "replace", "patch", "delete")
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


def endpoints(store: Callable[[], ResourceStore]) -> list[Endpoint]:
    """Every endpoint of the ``tmc`` service; list endpoints name their KV bucket for watchers."""
    out = []
    for kind in KINDS:
        watch = {"kind": kind.kind, "watch": f"$KV.{kind.bucket}.>", "bucket": kind.bucket}
        for verb in VERBS:
            handler = _handler(store, verb, kind)
            meta = watch if verb == "list" else None
            out.append(Endpoint(f"{verb}-{kind.plural}", f"tmc.api.{verb}.{kind.plural}", handler, meta))
    simulate_ = _handler(store, "simulate", PLACEMENT)
    out.append(Endpoint("simulate-placements", "tmc.api.simulate.placements", simulate_))
    return out


def _error(err: errors.ApiError) -> Reply:
    return Reply(_encoder.encode(err.status()), str(err.code), err.message)


def _handler(store_of: Callable[[], ResourceStore], verb: str, kind: Kind) -> Any:
    async def handle(_subject: str, data: bytes) -> Reply:
        try:
            req = msgspec.json.decode(data or b"{}", type=ApiRequest)
        except msgspec.DecodeError as exc:
            return _error(errors.bad_request(f"request is not a valid {verb} request: {exc}"))
        try:
            return Reply(_encoder.encode(await _run(store_of(), verb, kind, req)))
        except errors.ApiError as err:
            return _error(err)

    return handle


async def _run(store: ResourceStore, verb: str, kind: Kind, req: ApiRequest) -> Any:
    ns = req.namespace
    if kind.namespaced and not ns and verb not in ("list", "create", "simulate"):
        raise errors.bad_request(f"{kind.plural} are namespaced: give a namespace")
    if verb in ("get", "replace", "patch", "delete") and not req.name:
        raise errors.bad_request("name is required")
    if verb == "list":
        selector, name = list_filters(req.label_selector, req.field_selector)
        page = await store.list(
            kind, ns, selector=selector, name=name, limit=max(0, req.limit), continue_token=req.continue_
        )
        return list_object(kind, page)
    if verb == "get":
        return await store.get(kind, ns, req.name)
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


async def start(bus: Bus, store: Callable[[], ResourceStore]) -> Any:
    """Start the ``tmc`` micro service."""
    return await bus.service(
        "tmc", __version__, "tmcd resource API: list/get/create/replace/patch/delete per kind", endpoints(store)
    )
