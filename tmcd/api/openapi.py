"""The OpenAPI 3.1 document of tmcd's HTTP API, generated from the route table and the msgspec types.

Kind operations (list, get, create, replace, patch, delete) come from the
:class:`~tmcd.api.http.Route` table; other JSON endpoints are :class:`Operation` entries in
:data:`OPERATIONS` (one entry documents a new endpoint); the text endpoints (probes,
``/metrics``) and the docs are :func:`_plain_paths`.  Schemas and examples come from
:mod:`tmcd.api.openapi_schemas`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from tmcd.api import control, errors
from tmcd.api.camel import camel_keys, camel_schema
from tmcd.api.http import Route
from tmcd.api.index import WINDOW
from tmcd.api.openapi_schemas import (
    REF,
    WatchBookmark,
    components,
    content,
    error_responses,
    kind_examples,
    list_type,
    sse_type,
    watch_event_type,
)
from tmcd.contracts import examples as contract_examples
from tmcd.contracts import jsonschema
from tmcd.contracts.lease import REPLICA_REPORT_EXAMPLE, ReplicaReport
from tmcd.contracts.messages import ControlReply, HealthReport
from tmcd.placement.model import Decision, decide
from tmcd.resources import examples as resource_examples
from tmcd.resources.kinds import KINDS, PLACEMENT, Kind
from tmcd.resources.placement import Placement
from tmcd.resources.synctarget import SyncTarget

OPENAPI_VERSION = "3.1.0"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
READ_SECURITY: list[dict[str, list[str]]] = [{}, {"bearerAuth": []}]
"""Reads are open unless ``api.require_auth_for_reads`` is set (a presented token must be valid)."""
WRITE_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]

_DESCRIPTION = """\
Kubernetes-shaped resources stored in NATS JetStream KV (SyncTargets, Placements,
CanaryRollouts, AnalysisTemplates, RolloutRevisions), the fleet health tree, probes and metrics.

* **Auth**: `Authorization: Bearer <token>` with a token from `[api] tokens`. Writes need a
  read-write token; reads are open unless `api.require_auth_for_reads` is set. With no tokens
  configured, writes are accepted from loopback clients only.
* **Errors** are Kubernetes `Status` objects carrying the HTTP code in `code`.
* **Writes** follow kube-apiserver: a create stores an empty status (any status sent is
  ignored) and sets `uid`, `creationTimestamp` and `generation` 1; a PUT or PATCH changes
  metadata and spec and keeps the stored status (`generation` goes up only when the spec
  changed); the status is written only through `.../NAME/status` (PUT, or PATCH), which keeps
  spec and metadata. A body's name must be the URL's (400); a namespaced object without a
  namespace gets the URL's.
* **Bodies** are `application/json`; a PATCH is `application/merge-patch+json` (or plain
  `application/json`, also a merge patch) or `application/json-patch+json` (RFC 6902); any
  other media type answers 415. A body or object larger than `api.max_object_bytes` answers
  413, annotations over 256 KiB in all 422.
* **Concurrency**: `metadata.resourceVersion` is the KV revision; a PUT (or a PATCH that sets
  it) with a stale one fails with 409 Conflict.
* **Reads** (lists, gets, watches) are served from a watch cache per kind that has caught up
  with every write acknowledged before the read (503 while it loads, 504 if it cannot catch up).
* **Lists** page with `limit` and `continue`; `?watch=1` streams changes as server-sent events,
  from a list's `resourceVersion` (410 Expired when it is older than the cache's window).

Generated from the route table and the wire types by `tmcd.api.openapi`.
"""


def parameter(name: str, where: str, schema: dict[str, Any], description: str, example: Any) -> dict[str, Any]:
    """An OpenAPI parameter object (path parameters are required)."""
    out = {"name": name, "in": where, "description": description, "required": where == "path", "schema": schema}
    return {**out, "example": example}


@dataclass(frozen=True)
class Operation:
    """A JSON endpoint outside the kind verbs, e.g. ``POST /api/v1/placement-simulations``.

    A route in the route table with the same method and path is documented by this entry.
    """

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    response: Any
    """The msgspec type of the JSON answer."""
    response_example: Any
    request: Any = None
    """The msgspec type of the JSON request body; None for no body."""
    request_example: Any = None
    status: int = 200
    write: bool = False
    """Needs a read-write token (else it is a read)."""
    auth: bool = True
    """False: no token is ever checked (like ``/api/v1/health``)."""
    errors: tuple[int, ...] = (400, 401, 422, 503, 504)
    parameters: tuple[tuple[str, str, dict[str, Any], str, Any], ...] = ()
    """Query parameters as :func:`parameter` arguments."""
    camel: bool = False
    """The answer is the response type with its snake_case wire names in camelCase (the health tree)."""


def _decision_example() -> Decision:
    """The decision on the example Placement with the example SyncTarget as the only cluster."""
    placement = cast(Placement, resource_examples.example("Placement"))
    return decide(placement, [cast(SyncTarget, resource_examples.example("SyncTarget"))], now=1736935470.0)


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/api/v1/placement-simulations",
        "simulatePlacement",
        "Decide a Placement (body) against the current clusters without saving anything",
        PLACEMENT.kind,
        response=Decision,
        response_example=_decision_example(),
        request=Placement,
        request_example=kind_examples(PLACEMENT)["new"],
    ),
    Operation(
        "GET",
        "/api/v1/health",
        "readHealth",
        "The health tree: fleet, locations and clusters (answered by the health agent over NATS)",
        "health",
        response=HealthReport,
        response_example=contract_examples.example(HealthReport),
        auth=False,
        camel=True,
        errors=(400, 503),
        parameters=(
            ("location", "query", {"type": "string"}, "Only this location (a value of the location label).", ""),
            ("clusters", "query", {"type": "boolean", "default": True}, "Include the cluster nodes.", True),
        ),
    ),
    Operation(
        "GET",
        "/api/v1/replicas",
        "readReplicas",
        "The tmcd replicas of this deployment and the replica leading each leader-only agent",
        "replicas",
        response=ReplicaReport,
        response_example=REPLICA_REPORT_EXAMPLE,
        errors=(401, 403, 503),
    ),
)
"""JSON operations besides the kind verbs; add an entry to document a new one."""

_KIND_VERBS = ("list", "get", "create", "replace", "patch", "delete", "replacestatus", "patchstatus")
_WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 415, 422, 503)
_VERB_ERRORS = {
    "list": (400, 401, 410, 429, 503, 504),
    "get": (401, 404, 503, 504),
    "create": (400, 401, 403, 409, 413, 415, 422, 503),
    "replace": _WRITE_ERRORS,
    "patch": _WRITE_ERRORS,
    "replacestatus": _WRITE_ERRORS,
    "patchstatus": _WRITE_ERRORS,
    "delete": (401, 403, 404, 409, 503),
}
_CONTROLLER_CODES = (400, 404, 409)
"""Codes a canary controller's ControlReply may carry (the answer is then the reply, not a Status)."""
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
_KEY = f"({_PREFIX})?{_NAME}"
_SET = rf"\( *({_NAME})?( *, *({_NAME})?)* *\)"
_TERM = rf"(! *{_KEY}|{_KEY} *(==|=|!=) *({_NAME})?|{_KEY} +(in|notin) *{_SET}|{_KEY})"
LABEL_SELECTOR = rf"^ *({_TERM}( *, *{_TERM})*)? *$"
"""The label selector syntax of :mod:`tmcd.resources.selectors` (label keys and values included)."""

_LIST_PARAMETERS = (
    (
        "labelSelector",
        {"type": "string", "pattern": LABEL_SELECTOR},
        "Only objects whose labels match (`k=v,k!=v,k in (a,b),k notin (a),k,!k`).",
        "app=x",
    ),
    (
        "fieldSelector",
        {"type": "string", "pattern": r"^(metadata\.name=[\s\S]+)?$"},
        "Only `metadata.name=NAME` is supported.",
        "metadata.name=checkout",
    ),
    ("limit", {"type": "integer", "minimum": 0}, "At most this many items per page (0: no limit).", 50),
    ("continue", {"type": "string"}, "The `metadata.continue` token of the previous page.", ""),
    ("watch", {"type": "boolean"}, "Stream changes as server-sent events instead of listing.", False),
    (
        "resourceVersion",
        {"type": "string", "pattern": "^[0-9]*$"},
        "With `watch`: only changes after this revision (a list's `metadata.resourceVersion`); empty or `0`: "
        f"the current objects first, as ADDED. One older than the cache's window ({WINDOW:,} events per kind) "
        "answers 410 Expired.",
        "",
    ),
    (
        "timeoutSeconds",
        {"type": "integer", "minimum": 0},
        "With `watch`: end the stream after this many seconds (0 or absent: after 1800 s, also the most).",
        0,
    ),
)
_LAST_EVENT_ID = (
    "Last-Event-ID",
    "header",
    {"type": "string", "pattern": "^[0-9]*$"},
    "With `watch` and no `resourceVersion`: the id of the last event seen (an EventSource sends it on reconnecting).",
    "",
)


def operation_id(route: Route) -> str:
    """``listPlacements``, ``readCanaryRollout``, ``listCanaryRolloutsAllNamespaces``..."""
    assert route.kind is not None
    k = route.kind
    if route.verb == "list":
        all_ns = k.namespaced and "{namespace}" not in route.path
        return f"list{k.kind}s" + ("AllNamespaces" if all_ns else "")
    if route.verb.endswith("status"):
        return route.verb.removesuffix("status") + k.kind + "Status"
    return {"get": "read"}.get(route.verb, route.verb) + k.kind


def _path_params(path: str, name_example: str) -> list[dict[str, Any]]:
    schema = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 63}
    return [
        parameter(p, "path", schema, f"The {p} (a DNS-1123 label).", "shop" if p == "namespace" else name_example)
        for p in re.findall(r"\{(\w+)\}", path)
    ]


def _responses(ok_code: int, ok: dict[str, Any], error_codes: Sequence[int]) -> dict[str, Any]:
    return {str(ok_code): ok, **{str(c): {"$ref": f"#/components/responses/{c}"} for c in error_codes}}


def _kind_operation(route: Route, kind: Kind) -> dict[str, Any]:
    ex, verb, k = kind_examples(kind), route.verb, kind.kind
    ref = {"$ref": REF.format(name=k)}
    params = _path_params(route.path, ex["name"])
    if verb == "list":
        params += [parameter(n, "query", s, d, e) for n, s, d, e in _LIST_PARAMETERS]
        params.append(parameter(*_LAST_EVENT_ID))
    op: dict[str, Any] = {"operationId": operation_id(route), "summary": route.summary, "tags": [k]}
    op["parameters"] = params
    op["security"] = READ_SECURITY if route.method == "GET" else WRITE_SECURITY
    if verb == "list":
        ok = {
            "description": f"A page of {kind.plural}; with `watch`, a text/event-stream of `event: ADDED|MODIFIED|"
            "DELETED`, `id: <resourceVersion>`, `data: {type, object}` events (resumable from `resourceVersion` "
            "or `Last-Event-ID`; `: ping` comments every 15 s; an `ERROR` event with a 410 Status, and the end, "
            "when the watch falls behind the cache's window). The text/event-stream schema describes one event.",
            "content": {
                **content({"$ref": REF.format(name=f"{k}List")}, {"list": ex["list"]}),
                **content(
                    {"$ref": REF.format(name=f"{k}ServerSentEvent")}, {"watch": ex["events"]}, "text/event-stream"
                ),
            },
        }
    else:
        what = {"delete": "as it was before deletion", "get": "as stored"}.get(verb, "as stored after the write")
        example = ex["patched" if verb == "patch" else "full"]
        ok = {"description": f"The {k}, {what}.", "content": content(ref, {kind.singular: example})}
    if verb in ("create", "replace", "replacestatus"):
        body = ex["new"] if verb == "create" else ex["full"]
        op["requestBody"] = {"required": True, "content": content(ref, {kind.singular: body})}
    elif verb in ("patch", "patchstatus"):
        op["requestBody"] = {"required": True, "content": _patch_content(k, ex, status=verb == "patchstatus")}
    op["responses"] = _responses(201 if verb == "create" else 200, ok, _VERB_ERRORS[verb])
    return op


def _patch_content(k: str, ex: dict[str, Any], *, status: bool) -> dict[str, Any]:
    """A PATCH body: a merge patch (``application/merge-patch+json``, or plain ``application/json``)
    or a JSON patch (``application/json-patch+json``)."""
    what = f"the status of a {k} (anything else is ignored)" if status else f"a {k} (a status in it is ignored)"
    merge = {"type": "object", "description": f"An RFC 7386 JSON merge patch of {what}; null deletes a field."}
    pointer = {"type": "string", "pattern": "^(/[^/]*)*$", "description": "A JSON pointer, e.g. /metadata/labels/tier."}
    ops: list[tuple[set[str], dict[str, Any], list[str]]] = [
        ({"add", "replace", "test"}, {"value": {}}, ["op", "path", "value"]),
        ({"remove"}, {}, ["op", "path"]),
        ({"move", "copy"}, {"from": pointer}, ["op", "path", "from"]),
    ]
    json_patch = {
        "type": "array",
        "description": f"An RFC 6902 JSON patch of {what}.",
        "items": {
            "oneOf": [
                {
                    "type": "object",
                    "required": required,
                    "properties": {"op": {"enum": sorted(names)}, "path": pointer, **extra},
                }
                for names, extra, required in ops
            ]
        },
    }
    merge_ex = {"status": ex["status_patch"]} if status else {"labels": ex["patch"]}
    json_ex = {"status": ex["status_json_patch"]} if status else {"labels": ex["json_patch"]}
    return {
        **content(merge, merge_ex, "application/merge-patch+json"),
        **content(json_patch, json_ex, "application/json-patch+json"),
        **content(merge, merge_ex),
    }


def _control_operation(route: Route, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """``POST .../canaryrollouts/{name}/<action>``: a CanaryControl forwarded over NATS."""
    action = route.verb
    op: dict[str, Any] = {"operationId": f"{action}CanaryRollout", "summary": route.summary, "tags": ["CanaryRollout"]}
    op["parameters"] = _path_params(route.path, "checkout")
    op["security"] = WRITE_SECURITY
    body = {"full": True, "reason": "canary looks good"} if action == "promote" else {"reason": "on-call request"}
    op["requestBody"] = {"required": False, "content": content(refs[control.ControlRequest], {"example": body})}
    reply = ControlReply(ok=True, target="shop/checkout", message=f"{action} accepted", state="Progressing")
    ok = {
        "description": "The canary controller carried the request out: its ControlReply.",
        "content": content(refs[ControlReply], {"reply": msgspec.to_builtins(reply)}),
    }
    responses = _responses(200, ok, (401, 403, 415, 503))
    refused = ControlReply(ok=False, target="shop/checkout", message="the rollout is not paused", code=409)
    either = {"anyOf": [refs[ControlReply], {"$ref": REF.format(name="Status")}]}
    for code in _CONTROLLER_CODES:
        example = msgspec.to_builtins(msgspec.structs.replace(refused, code=code))
        responses[str(code)] = {
            "description": "The canary controller refused (its ControlReply, code as the HTTP status), or the "
            "request itself was bad (a Status).",
            "content": content(either, {"reply": example}),
        }
    op["responses"] = dict(sorted(responses.items()))
    return op


def _operation(op: Operation, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    out["parameters"] = [*_path_params(op.path, "example"), *(parameter(*p) for p in op.parameters)]
    out["security"] = WRITE_SECURITY if op.write else READ_SECURITY if op.auth else []
    if op.request is not None:
        req = msgspec.to_builtins(op.request_example)
        out["requestBody"] = {"required": True, "content": content(refs[op.request], {"example": req})}
    res = msgspec.to_builtins(op.response_example)
    res = camel_keys(res) if op.camel else res
    ok = {"description": op.summary + ".", "content": content(refs[op.response], {"example": res})}
    out["responses"] = _responses(op.status, ok, op.errors)
    return out


def _text(description: str, examples: dict[str, str], media: str = "text/plain") -> dict[str, Any]:
    return {"description": description, "content": content({"type": "string"}, examples, media)}


def _get(op_id: str, summary: str, tag: str, responses: dict[str, Any], params: Sequence[Any] = ()) -> dict[str, Any]:
    op = {"operationId": op_id, "summary": summary, "tags": [tag], "parameters": list(params), "security": []}
    return {"get": {**op, "responses": responses}}


def _plain_paths() -> dict[str, dict[str, Any]]:
    """The probes, /metrics, /openapi.json and /docs: not JSON resources, never authenticated."""
    paths: dict[str, dict[str, Any]] = {}
    verbose = parameter("verbose", "query", {"type": "string"}, "If present, list every check.", "")
    exclude = parameter("exclude", "query", {"type": "array", "items": {"type": "string"}}, "Skip checks.", ["nats"])
    check = parameter("check", "path", {"type": "string"}, "Run only this check.", "nats")
    for probe in ("livez", "readyz", "healthz"):
        passed = {"ok": "ok", "verbose": f"[+]nats ok\n{probe} check passed\n"}
        failed = {"failed": f"[-]nats failed: not connected\n{probe} check failed\n"}
        responses = {"200": _text("Every check passed.", passed), "503": _text("A check failed.", failed)}
        paths[f"/{probe}"] = _get(
            f"probe{probe.title()}", f"The {probe} probe", "probes", responses, [verbose, exclude]
        )
        responses["404"] = _text("No such check.", {"missing": f"no check named 'nope' in {probe}\n"})
        one = _get(f"probe{probe.title()}Check", f"One {probe} check", "probes", responses, [check, verbose, exclude])
        paths[f"/{probe}/{{check}}"] = one
    metric = "# HELP tmcd_up 1 while tmcd runs.\n# TYPE tmcd_up gauge\ntmcd_up 1.0\n"
    text = _text("The exposition.", {"text": metric})
    text["content"].update(content({"type": "string"}, {"om": metric + "# EOF\n"}, "application/openmetrics-text"))
    paths["/metrics"] = _get("readMetrics", "Prometheus metrics (OpenMetrics when asked)", "metrics", {"200": text})
    doc = {"openapi": OPENAPI_VERSION, "info": {"title": "tmcd HTTP API", "version": "0.1.0"}, "paths": {}}
    ok = {"description": "The document.", "content": content({"type": "object"}, {"document": doc})}
    paths["/openapi.json"] = _get("readOpenApi", "This OpenAPI document", "docs", {"200": ok})
    page = _text("The page.", {"page": "<!DOCTYPE html>..."}, "text/html")
    paths["/docs"] = _get("readDocs", "Browse the API (Swagger UI, served by tmcd)", "docs", {"200": page})
    moved = {"description": "Permanent redirect to /docs.", "headers": {"Location": {"schema": {"type": "string"}}}}
    followed = _text("The page, once the redirect is followed.", {"page": "<!DOCTYPE html>..."}, "text/html")
    paths["/docs/"] = _get("redirectDocs", "Redirects to /docs", "docs", {"200": followed, "308": moved})
    return paths


_OTHER_TAGS = {
    "health": "The fleet health tree.",
    "replicas": "The tmcd replicas of the deployment and the leader of each leader-only agent.",
    "probes": "Liveness, readiness and health probes (Kubernetes style, text/plain).",
    "metrics": "Prometheus exposition.",
    "docs": "This document and a browser for it.",
}


def component_types(extra: Sequence[Operation] = OPERATIONS) -> list[Any]:
    """Types with a schema in components: the kinds, their lists, Status and the operations' types."""
    types: list[Any] = [k.type for k in KINDS] + [list_type(k) for k in KINDS] + [errors.Status, WatchBookmark]
    types += [control.ControlRequest, ControlReply]
    types += [watch_event_type(k) for k in KINDS] + [sse_type(k) for k in KINDS]
    for op in extra:
        types.extend(t for t in (op.request, op.response) if t is not None and t not in types)
    return types


def build_openapi(routes: Sequence[Route], version: str, extra: Sequence[Operation] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1.0 document of ``routes`` (the route table) plus ``extra`` operations.

    A route whose verb is not a kind verb needs an ``extra`` entry with its method and path
    (ValueError otherwise).
    """
    types = component_types(extra)
    refs, schemas = components(types)
    by_type = dict(zip(types, refs, strict=True))
    described = {(op.method, op.path) for op in extra}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if (route.method, route.path) in described:
            continue
        if route.kind is not None and route.verb in control.ACTIONS:
            paths.setdefault(route.path, {})[route.method.lower()] = _control_operation(route, by_type)
            continue
        if route.kind is None or route.verb not in _KIND_VERBS:
            raise ValueError(f"no OpenAPI description of {route.method} {route.path}: add an Operation")
        paths.setdefault(route.path, {})[route.method.lower()] = _kind_operation(route, route.kind)
    for op in extra:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, by_type)
        if op.camel:  # the HTTP spelling of a NATS type (no other operation uses these schemas)
            for st in jsonschema.struct_types([op.response]):
                camel_schema(schemas[st.cls.__name__])
    for path, item in _plain_paths().items():
        paths.setdefault(path, {}).update(item)
    tags = [{"name": k.kind, "description": k.description} for k in KINDS]
    tags += [{"name": name, "description": desc} for name, desc in _OTHER_TAGS.items()]
    bearer = {"type": "http", "scheme": "bearer", "description": "A token from `[api] tokens` in the tmcd config."}
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
        "components": {"schemas": schemas, "responses": error_responses(), "securitySchemes": {"bearerAuth": bearer}},
    }
