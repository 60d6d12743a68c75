"""The OpenAPI 3.1 document of tmcd's HTTP API, generated from the route table and the msgspec types.

Resource operations come from the :class:`~tmcd.api.http.Route` table (one per kind and verb);
other JSON endpoints are :class:`Operation` entries (:data:`OPERATIONS`: document a new endpoint
with one more entry); the probes, ``/metrics`` and the docs pages are in :mod:`tmcd.api.docs_page`'s
sibling :func:`_plain_paths`.  Every schema is msgspec's JSON Schema of a wire type (field
docstrings become descriptions); examples come from :mod:`tmcd.resources.examples` and
:mod:`tmcd.contracts.examples`.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from tmcd.api import errors
from tmcd.api.http import Route
from tmcd.api.openapi_parts import (
    LIST_PARAMETERS,
    ListMeta,
    add_field_docs,
    error_responses,
    kind_examples,
    list_type,
    parameter,
    plain_paths,
    schema_hook,
)
from tmcd.contracts import examples as contract_examples
from tmcd.contracts.messages import HealthReport
from tmcd.resources.kinds import KINDS, Kind

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{name}"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

READ_SECURITY: list[dict[str, list[str]]] = [{}, {"bearerAuth": []}]
"""Reads: open unless ``api.require_auth_for_reads`` is set; a presented token must be valid."""
WRITE_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]

_DESCRIPTION = """\
Kubernetes-shaped resources of tmcd (SyncTargets, Placements, CanaryRollouts, AnalysisTemplates,
RolloutRevisions) stored in NATS JetStream KV, plus the health tree, probes and metrics.

* **Auth**: `Authorization: Bearer <token>` with a token from `[api] tokens`. Writes need a
  read-write token; reads are open unless `api.require_auth_for_reads` is set. With no tokens
  configured, writes are accepted from loopback clients only.
* **Errors** are Kubernetes `Status` objects with the HTTP code in `code`.
* **Concurrency**: `metadata.resourceVersion` is the KV revision; PUT (and a PATCH that sets
  it) fails with 409 Conflict when it is stale.
* **Lists** page with `limit`/`continue`; `?watch=1` streams changes as server-sent events.

Generated from the route table by `tmcd.api.openapi`; do not edit by hand.
"""


@dataclass(frozen=True)
class Operation:
    """A JSON endpoint outside the kind routes (e.g. ``POST /api/v1/placement-simulations``)."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    response: Any
    """The msgspec type (or Struct class) of the JSON answer."""
    response_example: Any
    request: Any = None
    """The msgspec type of the JSON request body; None for no body."""
    request_example: Any = None
    status: int = 200
    write: bool = False
    """Needs a read-write token (else it is a read)."""
    auth: bool = True
    """False: no token is ever checked (like ``/api/v1/health``)."""
    errors: tuple[int, ...] = (400, 401, 422, 503)
    parameters: tuple[dict[str, Any], ...] = ()
    description: str = ""


HEALTH = Operation(
    "GET",
    "/api/v1/health",
    "readHealth",
    "The health tree: fleet, locations and clusters (answered by the health agent over NATS)",
    "health",
    response=HealthReport,
    response_example=contract_examples.example(HealthReport),
    auth=False,
    errors=(503,),
    parameters=(
        parameter("location", "query", {"type": "string"}, "Only this location (a value of the location label).", ""),
        parameter("clusters", "query", {"type": "boolean", "default": True}, "Include cluster nodes.", True),
    ),
)
OPERATIONS: tuple[Operation, ...] = (HEALTH,)
"""Documented JSON operations besides the kind routes; add an entry to document a new one."""

_KIND_VERBS = ("list", "get", "create", "replace", "patch", "delete")
_VERB_ERRORS = {
    "list": (400, 401, 503),
    "get": (401, 404, 503),
    "create": (400, 401, 403, 409, 422, 503),
    "replace": (400, 401, 403, 404, 409, 422, 503),
    "patch": (400, 401, 403, 404, 409, 422, 503),
    "delete": (401, 403, 404, 409, 503),
}


def plural_camel(kind: Kind) -> str:
    """``CanaryRollouts``: the kind's name in the plural, for operation ids."""
    return kind.kind + ("es" if kind.kind.endswith("s") else "s")


def operation_id(route: Route) -> str:
    """``listPlacements``, ``readCanaryRollout``, ``listCanaryRolloutsAllNamespaces``..."""
    assert route.kind is not None
    k = route.kind
    if route.verb == "list":
        all_ns = k.namespaced and "{namespace}" not in route.path
        return f"list{plural_camel(k)}" + ("AllNamespaces" if all_ns else "")
    return {"get": "read"}.get(route.verb, route.verb) + k.kind


def component_types(extra: Iterable[Operation] = OPERATIONS) -> list[Any]:
    """Every type with a schema in components: kinds, their lists, Status, the operations' types."""
    types: list[Any] = [k.type for k in KINDS] + [list_type(k) for k in KINDS] + [errors.Status, ListMeta]
    for op in extra:
        types.extend(t for t in (op.request, op.response) if t is not None and t not in types)
    return types


def _content(schema: dict[str, Any], examples: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {media: {"schema": schema, "examples": {k: {"value": v} for k, v in examples.items()}}}


def _ref(tp: Any) -> dict[str, Any]:
    name = getattr(tp, "__name__", None)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct) and name:
        return {"$ref": REF.format(name=name)}
    return msgspec.json.schema(tp, schema_hook=schema_hook)


def _path_params(path: str, kind: Kind | None, name_example: str) -> list[dict[str, Any]]:
    out = []
    for p in re.findall(r"\{(\w+)\}", path):
        desc = "The namespace (a DNS-1123 label)." if p == "namespace" else f"The {p} (a DNS-1123 label)."
        schema = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 63}
        out.append(parameter(p, "path", schema, desc, "shop" if p == "namespace" else name_example))
    return out


def _kind_operation(route: Route, kind: Kind) -> dict[str, Any]:
    ex = kind_examples(kind)
    verb, k = route.verb, kind.kind
    params = _path_params(route.path, kind, ex["name"])
    if verb == "list":
        params += [dict(p) for p in LIST_PARAMETERS]
    op: dict[str, Any] = {
        "operationId": operation_id(route),
        "summary": route.summary,
        "tags": [k],
        "parameters": params,
        "security": WRITE_SECURITY if route.method != "GET" else READ_SECURITY,
    }
    ok: dict[str, Any]
    schema = {"$ref": REF.format(name=k)}
    if verb == "list":
        ok = {
            "description": f"A page of {kind.plural}; with `watch`, a text/event-stream of `event: "
            "ADDED|MODIFIED|DELETED`, `id: <resourceVersion>`, `data: {type, object}` events "
            "(resumable with `resourceVersion` or `Last-Event-ID`; `: ping` comments every 15 s).",
            "content": {
                **_content({"$ref": REF.format(name=f"{k}List")}, {"list": ex["list"]}),
                **_content({"type": "string"}, {"watch": ex["events"]}, "text/event-stream"),
            },
        }
    else:
        example = ex["patched"] if verb == "patch" else ex["full"]
        ok = {"description": f"The {k}" + (" as stored" if verb != "delete" else ", as it was"), **{}}
        ok["content"] = _content(schema, {kind.singular: example})
    if verb in ("create", "replace"):
        body = ex["new"] if verb == "create" else ex["full"]
        op["requestBody"] = {"required": True, "content": _content(schema, {kind.singular: body})}
    elif verb == "patch":
        patch_schema = {"type": "object", "description": f"An RFC 7386 JSON merge patch of a {k}."}
        op["requestBody"] = {
            "required": True,
            "content": {
                **_content(patch_schema, {"label": ex["patch"]}, "application/merge-patch+json"),
                **_content(patch_schema, {"label": ex["patch"]}),
            },
        }
    responses = {str(201 if verb == "create" else 200): ok}
    responses.update({str(c): {"$ref": f"#/components/responses/{c}"} for c in _VERB_ERRORS[verb]})
    op["responses"] = responses
    return op


def _extra_operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    if op.description:
        out["description"] = op.description
    out["parameters"] = [*_path_params(op.path, None, "example"), *(dict(p) for p in op.parameters)]
    out["security"] = [] if not op.auth else WRITE_SECURITY if op.write else READ_SECURITY
    if op.request is not None:
        req = msgspec.to_builtins(op.request_example)
        out["requestBody"] = {"required": True, "content": _content(_ref(op.request), {"example": req})}
    ok = {"description": op.summary, "content": _content(_ref(op.response), {"example": op.response_example})}
    ok["content"]["application/json"]["examples"]["example"]["value"] = msgspec.to_builtins(op.response_example)
    out["responses"] = {str(op.status): ok, **{str(c): {"$ref": f"#/components/responses/{c}"} for c in op.errors}}
    return out


def build_openapi(routes: Sequence[Route], version: str, extra: Sequence[Operation] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1.0 document for ``routes`` (the kind routes) plus ``extra`` operations.

    A route whose verb is not a kind verb must be described by an ``extra`` entry with the
    same method and path; ValueError otherwise.
    """
    by_key = {(op.method, op.path): op for op in extra}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        key = (route.method, route.path)
        if key in by_key:
            continue
        if route.kind is None or route.verb not in _KIND_VERBS:
            raise ValueError(f"no OpenAPI description for {route.method} {route.path} (add an Operation)")
        paths.setdefault(route.path, {})[route.method.lower()] = _kind_operation(route, route.kind)
    for op in extra:
        paths.setdefault(op.path, {})[op.method.lower()] = _extra_operation(op)
    for path, item in plain_paths(version).items():
        paths.setdefault(path, {}).update(item)
    _, schemas = msgspec.json.schema_components(component_types(extra), ref_template=REF, schema_hook=schema_hook)
    add_field_docs(schemas, component_types(extra))
    tags = [{"name": k.kind, "description": k.description} for k in KINDS]
    tags += [{"name": t, "description": d} for t, d in _OTHER_TAGS]
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "tmcd HTTP API",
            "version": version,
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": error_responses(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `[api] tokens` (read-only or read-write). Reads are open "
                    "unless `api.require_auth_for_reads` is set; with no tokens configured, writes are "
                    "accepted from loopback clients only.",
                }
            },
        },
    }


_OTHER_TAGS = (
    ("health", "The fleet health tree."),
    ("probes", "Liveness, readiness and health probes (Kubernetes style, text/plain)."),
    ("metrics", "Prometheus exposition."),
    ("docs", "This document and the API browser."),
)


@functools.cache
def _cached_json(routes: tuple[Route, ...], version: str, extra: tuple[Operation, ...]) -> bytes:
    return msgspec.json.encode(build_openapi(routes, version, extra))


def openapi_json(routes: Sequence[Route], version: str, extra: Sequence[Operation] = OPERATIONS) -> bytes:
    """The document as JSON bytes, built once per (routes, version, extra)."""
    return _cached_json(tuple(routes), version, tuple(extra))


def deep_copy(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy callers may change."""
    return copy.deepcopy(doc)
