"""JSON Schemas and wire examples for the OpenAPI document (see :mod:`tmcd.api.openapi`).

Schemas are msgspec's JSON Schema (2020-12, the OpenAPI 3.1 dialect) of the wire types, with
field docstrings added as descriptions; ``<Kind>List`` types are made from the kind table.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec

from tmcd.api import errors
from tmcd.api.index import WINDOW
from tmcd.contracts import jsonschema
from tmcd.resources import examples as resource_examples
from tmcd.resources.kinds import Kind

REF = "#/components/schemas/{name}"
JSON = "application/json"


def content(schema: dict[str, Any], examples: dict[str, Any], media: str = JSON) -> dict[str, Any]:
    """An OpenAPI ``content`` map with one media type and named examples."""
    return {media: {"schema": schema, "examples": {k: {"value": v} for k, v in examples.items()}}}


class ListMeta(
    msgspec.Struct,
    kw_only=True,
    omit_defaults=True,
    rename={"resource_version": "resourceVersion", "continue_": "continue"},
):
    """List metadata."""

    resource_version: str
    """The KV revision the list was read at (start a watch from it)."""
    continue_: str = ""
    """Opaque token of the next page (pass it as `continue`); absent on the last page."""


@functools.cache
def list_type(kind: Kind) -> type[msgspec.Struct]:
    """``<Kind>List``: the type of a list answer, made from the kind's type."""
    fields: list[tuple[str, Any, Any] | tuple[str, Any]] = [
        ("api_version", str, kind.api_version),
        ("kind", str, f"{kind.kind}List"),
        ("metadata", ListMeta),
        ("items", list[kind.type]),  # type: ignore[name-defined]
    ]
    cls = msgspec.defstruct(f"{kind.kind}List", fields, kw_only=True, rename="camel", module=__name__)
    cls.__doc__ = f"A page of {kind.plural}, sorted by namespace and name."
    return cls


class BookmarkMeta(msgspec.Struct, kw_only=True, rename="camel"):
    """Metadata of a BOOKMARK event."""

    resource_version: str
    """Every change up to this revision has been sent: watch again from it."""


class WatchBookmark(msgspec.Struct, kw_only=True, rename="camel"):
    """The object of a BOOKMARK event (NATS watches): only the resourceVersion to resume from."""

    api_version: str
    kind: str
    metadata: BookmarkMeta


WatchEventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]
SseEventType = Literal["ADDED", "MODIFIED", "DELETED", "ERROR"]


@functools.cache
def watch_event_type(kind: Kind) -> type[msgspec.Struct]:
    """``<Kind>WatchEvent``: one event of a watch, over HTTP (an SSE event's data) and NATS."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        ("type", Annotated[WatchEventType, msgspec.Meta(description="What happened.")]),
        ("object", kind.type),
    ]
    cls = msgspec.defstruct(f"{kind.kind}WatchEvent", fields, kw_only=True, module=__name__)
    cls.__doc__ = (
        f"One event of a watch on {kind.plural}: `object` is the {kind.kind} (ADDED, MODIFIED; DELETED: its last "
        "state at the deletion's resourceVersion), a WatchBookmark (BOOKMARK, NATS only) or a Status (ERROR: "
        f"410 Expired when the watch fell more than {WINDOW:,} events behind; list again)."
    )
    return cls


_ID = msgspec.Meta(pattern=r"^[0-9]+$", description="The resourceVersion (not on ERROR).")


@functools.cache
def sse_type(kind: Kind) -> type[msgspec.Struct]:
    """``<Kind>ServerSentEvent``: one event of an HTTP watch as the SSE framing carries it."""
    event_ref = REF.format(name=watch_event_type(kind).__name__)
    data = msgspec.Meta(
        description=f"A {watch_event_type(kind).__name__} as JSON.",
        extra_json_schema={"contentMediaType": JSON, "contentSchema": {"$ref": event_ref}},
    )
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        ("event", Annotated[SseEventType, msgspec.Meta(description="The event's type.")]),
        ("data", Annotated[str, data]),
        ("id", Annotated[str, _ID] | msgspec.UnsetType, msgspec.UNSET),
    ]
    cls = msgspec.defstruct(f"{kind.kind}ServerSentEvent", fields, kw_only=True, module=__name__)
    cls.__doc__ = (
        f"One server-sent event of a watch on {kind.plural} (`: ping` comments every 15 s are not events); "
        "reconnect with its id as `Last-Event-ID` (or `resourceVersion`) to resume."
    )
    return cls


def _watch_event_objects(types: Sequence[Any], schemas: dict[str, Any]) -> None:
    """A watch event's ``object`` is the kind, a WatchBookmark or a Status, by its ``type`` (msgspec
    cannot say so itself: its unions of several structs need a tag field the kinds do not have)."""
    for tp in types:
        name = getattr(tp, "__name__", "")
        if name.endswith("WatchEvent") and name in schemas:
            schema = schemas[name]
            obj = schema["properties"]["object"]
            by_type = {
                ("ADDED", "MODIFIED", "DELETED"): obj.pop("$ref"),
                ("BOOKMARK",): REF.format(name=WatchBookmark.__name__),
                ("ERROR",): REF.format(name=errors.Status.__name__),
            }
            obj["anyOf"] = [{"$ref": ref} for ref in by_type.values()]
            schema["allOf"] = [
                {"if": {"properties": {"type": {"enum": list(t)}}}, "then": {"properties": {"object": {"$ref": ref}}}}
                for t, ref in by_type.items()
            ]


def components(types: Sequence[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(one $ref schema per type, components.schemas)``, with field docstrings as descriptions."""
    refs, schemas = jsonschema.schema_components(types, REF)
    _watch_event_objects(types, schemas)
    jsonschema.add_field_docs(types, schemas)
    return list(refs), schemas


# --- examples ------------------------------------------------------------------------------------


def kind_examples(kind: Kind) -> dict[str, Any]:
    """Wire-form examples of a kind: name, new (a create body), full, patch, patched, list, events (a copy)."""
    return copy.deepcopy(_kind_examples(kind))


@functools.cache
def _kind_examples(kind: Kind) -> dict[str, Any]:
    obj: Any = resource_examples.example(kind.kind)
    meta = obj.metadata
    meta.uid = meta.uid or "6f1c2d9e-4b7a-4c1e-9a53-2f8e7d6c5b4a"
    meta.resource_version = meta.resource_version or "42"
    meta.creation_timestamp = meta.creation_timestamp or "2025-01-15T10:00:00Z"
    meta.generation = meta.generation or 1
    full = msgspec.to_builtins(obj)
    new = {k: v for k, v in full.items() if k != "status"}
    new["metadata"] = {k: v for k, v in full["metadata"].items() if k in ("name", "namespace", "labels")}
    patch = {"metadata": {"labels": {"tier": "gold"}}}
    patched = copy.deepcopy(full)
    patched["metadata"]["labels"] = {**patched["metadata"].get("labels", {}), "tier": "gold"}
    patched["metadata"]["resourceVersion"] = "43"
    listing = list_type(kind)(metadata=ListMeta(resource_version="42"), items=[obj])
    data = msgspec.json.encode({"type": "ADDED", "object": obj}).decode()
    events = f"event: ADDED\nid: 42\ndata: {data}\n\n: ping\n\n"
    out = {"name": meta.name, "new": new, "full": full, "patch": patch, "patched": patched, "events": events}
    out["json_patch"] = [{"op": "add", "path": "/metadata/labels/tier", "value": "gold"}]
    status = full.get("status") or {}
    first = next(iter(status), "")
    out["status_patch"] = {"status": {first: status[first]} if first else {}}
    out["status_json_patch"] = [{"op": "replace", "path": f"/status/{first}", "value": status[first]}] if first else []
    return {**out, "list": msgspec.to_builtins(listing)}


_ERRORS = (
    (400, "Bad request", errors.bad_request("labelSelector: unexpected character '!' at 3")),
    (401, "Missing or invalid bearer token", errors.unauthorized()),
    (403, "A read-only token, or a remote write with no tokens", errors.forbidden("token 'ci' is read-only")),
    (404, "No such object", errors.not_found("placements", "checkout-eu")),
    (409, "Already exists, or a stale resourceVersion", errors.already_exists("placements", "checkout-eu")),
    (409, "", errors.conflict("placements", "checkout-eu")),
    (413, "The body or the object is larger than api.max_object_bytes", errors.too_large(
        "the object is 900000 bytes, more than the 786432 the store takes (api.max_object_bytes)")),
    (415, "The body's media type is not one the operation takes", errors.unsupported_media_type(
        "text/plain", ("application/json",))),
    (422, "The object is invalid", errors.invalid("placements", "checkout-eu", [errors.StatusCause(
        field="spec.numberOfClusters", message="Expected `int` >= 1")])),
    (410, "The resourceVersion is older than the watch cache's window (list again)", errors.ApiError(
        410, "Expired", "too old resource version: 7 (1024)")),
    (429, "Too many watches open", errors.ApiError(429, "TooManyRequests", "too many watches open (10000)")),
    (503, "Not connected to NATS, the API cache still loading (or no agent answered)", errors.ApiError(
        503, "ServiceUnavailable", "not connected")),
    (504, "The API cache did not catch up with the bucket in time", errors.ApiError(
        504, "Timeout", "the API cache of placements did not reach revision 4242 within 3s")),
)  # fmt: skip


def error_responses() -> dict[str, Any]:
    """``components.responses``: one Status response per error code, with examples."""
    out: dict[str, Any] = {}
    for code, desc, err in _ERRORS:
        resp = out.setdefault(
            str(code), {"description": desc, "content": content({"$ref": REF.format(name="Status")}, {})}
        )
        resp["content"][JSON]["examples"][err.reason] = {"value": msgspec.to_builtins(err.status())}
    return out
