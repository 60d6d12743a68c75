"""Property-based tests of the live HTTP API against its OpenAPI document (schemathesis).

A daemon with an API token runs in-process on a fresh nats-server; schemathesis generates
requests for every documented operation, valid (positive) and invalid (negative) ones, and
runs every check schemathesis runs by default: tmcd never answers 5xx, every answer (status
code, content type, headers, body, each server-sent event of a watch) is the one the document
promises, valid data is accepted and invalid data rejected.  Before the random requests, every path parameter is also
tried with a fixed set of impossible names, and every list is watched once with the example
objects saved, each event checked (deterministic, so a regression fails every run).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET

from tests.helpers import daemon_config, nats_connect, running_daemon
from tmcd import __version__
from tmcd.api.openapi import build_openapi
from tmcd.api.server import API_KEY, ROUTES_KEY
from tmcd.contracts.codec import decode_as, encode
from tmcd.contracts.messages import CanaryControl, ControlReply
from tmcd.runtime.embedded import EmbeddedNats

TOKEN = "x" * 24
MAX_EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8}
"""Generated requests per operation: 20 in all."""
BUDGET = 80.0
"""Seconds for the whole run; operations not reached by then are reported as not tested."""

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
EDGE_NAMES = ("a:b", "a b", ".x", "x.", "a.b", "*", ">", "\u00e9", "a" * 300)
"""Not DNS-1123 labels, so no object has them; most are not valid in a NATS KV key either."""
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
"""What schemathesis' positive_data_acceptance takes as accepted by default."""
CONFIG = {
    "operations": [
        # A resourceVersion the bucket does not hold (newer than its latest revision, or older than the
        # cache's window) is 410 Gone: a state of the server, like 404 and 409, not a schema violation.
        {"include-method": "GET", "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "410"]}}},
        # Writes are checked beyond what a JSON Schema can say, as kube-apiserver checks them: an object's
        # name must be the URL's and a namespace the URL's (400 BadRequest); canaryVersion must differ from
        # stableVersion, a JSON patch's path must exist, ... (422 Invalid). `explained_rejections` below
        # holds these answers to exactly those reasons.
        {
            "include-method": ["POST", "PUT", "PATCH"],
            "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400", "422"]}},
        },
        # A cluster-scoped create has no name or namespace in its URL to disagree with: never 400.
        {
            "include-path-regex": "^/api/v1/(synctargets|placements)$",
            "include-method": "POST",
            "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
        },
    ]
}
"""Only the expected statuses of positive_data_acceptance are adjusted; every default check runs, and
:func:`explained_rejections` on top."""
MISMATCH = ("does not match the name on the URL", "does not match the namespace sent on the request")
"""The only reasons a well-formed write may answer 400."""


@schemathesis.check
def explained_rejections(ctx: Any, response: Any, case: Any) -> bool | None:
    """A valid write (positive data) answers 400 only for a name or namespace that is not the URL's, and
    422 never for metadata.name or metadata.namespace: the document's patterns say what they may be."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or case.method.upper() not in ("POST", "PUT", "PATCH"):
        return None
    try:
        status = response.json()
    except ValueError:
        return None
    if response.status_code == 400:
        assert any(m in status.get("message", "") for m in MISMATCH), f"unexpected 400 for valid data: {status}"
    if response.status_code == 422:
        fields = {c.get("field") for c in (status.get("details") or {}).get("causes", [])}
        assert not fields & {"metadata.name", "metadata.namespace"}, f"422 for a name the schema allows: {status}"
    return None


WATCH_SECONDS = 0.3
"""How long a watch streams here (the server's own bound), so its events are read and validated."""


def _property(operation: Any, mode: GenerationMode, base_url: str) -> Any:
    """The Hypothesis test of one operation in one generation mode."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=HEADERS, timeout=10)  # every default check

    return run


def _edge_names(operation: Any, doc: dict[str, Any], base_url: str) -> list[str]:
    """Every path parameter set to names no object can have (nor a NATS KV key): 4xx, as documented."""
    names = re.findall(r"\{(\w+)\}", operation.path)
    body, media = _example_body(operation, doc)
    bad: list[str] = []
    for value in EDGE_NAMES if names else ():
        for param in names:
            params = {n: ("shop" if n == "namespace" else "x") for n in names} | {param: value}
            sent = body
            if isinstance(body, dict) and "name" in body.get("metadata", {}) and "name" in params:
                # a full object (PUT) names itself as the URL does, so the request gets past the name check
                sent = {**body, "metadata": {**body["metadata"], "name": params["name"]}}
            case = operation.Case(path_parameters=params, body=sent, media_type=media)
            response = case.call(base_url=base_url, headers=HEADERS, timeout=10)
            try:
                case.validate_response(response, headers=HEADERS)
            except (Exception, BaseExceptionGroup) as exc:
                problems = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
                what = ", ".join(sorted({type(e).__name__ for e in problems}))
                bad.append(f"{param}={value!r} -> {response.status_code} ({what})")
    return [f"{operation.label} with bad names:\n  " + "\n  ".join(bad)] if bad else []


def _example_body(operation: Any, doc: dict[str, Any]) -> tuple[Any, str | None]:
    content = doc["paths"][operation.path][operation.method.lower()].get("requestBody", {}).get("content", {})
    media = next(iter(content), None)
    return (next(iter(content[media]["examples"].values()))["value"] if media else NOT_SET), media


def _path_parameters(operation: Any, doc: dict[str, Any]) -> dict[str, Any]:
    params = doc["paths"][operation.path][operation.method.lower()].get("parameters", [])
    return {p["name"]: p["example"] for p in params if p["in"] == "path"}


def _seed(schema: Any, doc: dict[str, Any], base_url: str) -> None:
    """Create the example object of every kind, so that every watch below starts with events."""
    for result in schema.get_all_operations():
        operation = result.ok()
        op = doc["paths"][operation.path].get(operation.method.lower(), {})
        if op.get("operationId", "").startswith("create"):
            body, media = _example_body(operation, doc)
            case = operation.Case(path_parameters=_path_parameters(operation, doc), body=body, media_type=media)
            assert case.call(base_url=base_url, headers=HEADERS, timeout=10).status_code == 201, operation.label


def _watch(operation: Any, doc: dict[str, Any], base_url: str) -> list[str]:
    """A watch of every list operation streams events, each valid as the document says."""
    ok = doc["paths"][operation.path][operation.method.lower()]["responses"].get("200", {}).get("content", {})
    if "text/event-stream" not in ok:
        return []
    case = operation.Case(path_parameters=_path_parameters(operation, doc), query={"watch": "true"})
    response = case.call(base_url=base_url, headers=HEADERS, timeout=10)
    problems = []
    if response.status_code != 200 or b"event: ADDED" not in response.content:
        problems.append(f"no ADDED event: {response.status_code} {response.content[:200]!r}")
    try:
        case.validate_response(response, headers=HEADERS)
    except (Exception, BaseExceptionGroup) as exc:
        problems.append(_describe(exc))
    return [f"{operation.label} watch:\n" + "\n".join(problems)] if problems else []


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, BaseExceptionGroup):
        text += "".join(f"\n  - {type(e).__name__}: {e}" for e in exc.exceptions)
    return text


def _fuzz(doc: dict[str, Any], base_url: str) -> tuple[list[str], int]:
    """Run every operation (positive, then negative data); the failures, and how many runs happened."""
    schema = schemathesis.openapi.from_dict(doc, config=schemathesis.Config.from_dict(CONFIG))
    failures: list[str] = []
    ran = 0
    deadline = time.monotonic() + BUDGET
    _seed(schema, doc, base_url)
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:  # before the random requests delete the objects
        failures += _watch(operation, doc, base_url)
    for operation in operations:
        failures += _edge_names(operation, doc, base_url)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if time.monotonic() > deadline:
                failures.append(f"{operation.label} ({mode}): not tested within {BUDGET:.0f} s")
                continue
            try:
                _property(operation, mode, base_url)()
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE, operation.label  # nothing to make invalid: no inputs
            except (Exception, BaseExceptionGroup) as exc:  # check failures (AssertionError, FailureGroup)
                failures.append(f"{operation.label} ({mode}):\n{_describe(exc)}")
            ran += 1
    return failures, ran


@pytest.mark.slow
@pytest.mark.timeout(110)
async def test_the_api_conforms_to_its_openapi_document(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    tokens = [{"name": "t", "token": TOKEN, "access": "read-write"}]
    cfg = daemon_config(nats_server.url, tmp_path, **{"api.tokens": tokens})
    nc = await nats_connect(nats_server.url)

    async def controller(msg: Any) -> None:  # a stand-in canary controller: every control request is answered
        req = decode_as(CanaryControl, msg.data)
        await msg.respond(encode(ControlReply(ok=True, target=f"{req.namespace}/{req.name}", state=req.action)))

    await nc.subscribe("tmc.ctl.canary.>", cb=controller)
    await nc.flush()
    try:
        async with running_daemon(cfg) as d:
            d.http.app[API_KEY].watch_timeout = WATCH_SECONDS
            doc = build_openapi(d.http.app[ROUTES_KEY], __version__)
            failures, ran = await asyncio.to_thread(_fuzz, doc, d.http.base_url)
    finally:
        await nc.close()
    assert ran > 0
    assert not failures, f"{len(failures)} operation(s) failed:\n\n" + "\n\n".join(failures)
