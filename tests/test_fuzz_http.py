"""Property-based tests of tmcd's HTTP side: random requests (paths under /api/v1 and the probes,
methods, bodies, headers, query strings) against a real daemon over loopback.

tmcd must never answer 5xx to a client's error (NATS is up throughout, so not even 503), must answer
every /api error with a Kubernetes Status whose code is the HTTP status, must keep answering, and
must log no traceback for any of it.  Beside the random requests, the limits a client meets are
checked one by one: the body size (api.max_object_bytes, set low here, 413), deep nesting (400),
huge label values (422), unicode and NATS wildcards in names (422 naming the field).
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fuzz.live import LiveTmcd, live_tmcd
from tests.fuzz.mutations import Mutation, json_values, mutations
from tests.helpers import new_object
from tmcd.api.control import ACTIONS
from tmcd.resources.kinds import KINDS

MAX_BYTES = 64 * 1024
"""api.max_object_bytes of the daemon under test (the default is 768 KiB)."""
MAX_EXAMPLES = 300

_examples = st.sampled_from(["sim-001", "checkout-eu", "shop", "checkout", "error-rate", "checkout-2"])
names = st.one_of(
    _examples,
    _examples,
    st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z"),
    st.sampled_from(["a*b", "*", ">", "a.b", ".", "..", "a>b", "A", "-a", "a" * 64, "x" * 3000, "%2F", "%00", ""]),
    st.text(min_size=1, max_size=20),
)
"""Names for URL paths and bodies: the examples' (the objects exist), valid ones, and every kind of
invalid one (quoted into the path below)."""
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "BREW"]
QUERY_KEYS = [
    "labelSelector",
    "fieldSelector",
    "limit",
    "continue",
    "watch",
    "timeoutSeconds",
    "resourceVersion",
    "exclude",
    "verbose",
    "location",
    "clusters",
    "x",
]
QUERY_VALUES = [
    "",
    "1",
    "true",
    "-1",
    "99999999999999999999",
    "a=b",
    "a in (b,c)",
    "!a",
    "metadata.name=x",
    "a=b,c!=d",
    "a==",
    "((",
    "a>1",
    "\u00e9",
    "0",
]
CONTENT_TYPES = [
    "application/json",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "text/plain",
    "application/json; charset=utf-8",
    "",
]
OTHER_PATHS = [
    "/api/v1/health",
    "/api/v1/replicas",
    "/api",
    "/api/v1",
    "/api/v1/{name}",
    "/api/v1/{name}/{name}/{name}",
    "/livez",
    "/readyz",
    "/healthz",
    "/readyz/{name}",
    "/healthz/{name}",
    "/livez/{name}",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/{name}",
]


def _operations() -> list[tuple[str, str, str]]:
    """(method, path template, kind) of every operation of the API."""
    out = []
    for k in KINDS:
        coll = f"/api/v1/namespaces/{{ns}}/{k.plural}" if k.namespaced else f"/api/v1/{k.plural}"
        item = coll + "/{name}"
        out += [
            ("GET", coll, k.kind),
            ("POST", coll, k.kind),
            ("GET", item, k.kind),
            ("PUT", item, k.kind),
            ("PATCH", item, k.kind),
            ("DELETE", item, k.kind),
            ("PUT", item + "/status", k.kind),
            ("PATCH", item + "/status", k.kind),
        ]
        if k.namespaced:
            out.append(("GET", f"/api/v1/{k.plural}", k.kind))
        if k.kind == "CanaryRollout":
            out += [("POST", f"{item}/{a}", k.kind) for a in ACTIONS]
    out.append(("POST", "/api/v1/placement-simulations", "Placement"))
    return out


OPERATIONS = _operations()
OTHERS = [("GET", path, "Placement") for path in OTHER_PATHS]


def _quote(value: str) -> str:
    return value if value.startswith("%") else urllib.parse.quote(value, safe="*>")


@st.composite
def bodies(draw: st.DrawFn, kind: str, method: str, name: str, ns: str) -> tuple[bytes | None, str]:
    """A body for the operation and its Content-Type: mostly the right shape, often broken."""
    obj = new_object(kind)
    obj["metadata"]["name"] = name
    if "namespace" in obj["metadata"]:
        obj["metadata"]["namespace"] = ns
    if method == "PATCH":
        patch_type = draw(st.sampled_from(["application/merge-patch+json", "application/json-patch+json"]))
        if patch_type.startswith("application/merge"):
            merge = st.fixed_dictionaries(
                {},
                optional={
                    "metadata": st.just({"labels": {"a": "b"}}) | json_values,
                    "spec": json_values,
                    "status": json_values,
                },
            )
            patch: Any = draw(merge | json_values)
        else:
            paths = st.sampled_from(["/metadata/labels/a", "/spec", "/status", "/metadata/name", "/x/y", "", "/"])
            op = st.fixed_dictionaries(
                {
                    "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test"]),
                    "path": paths | st.text(max_size=12),
                    "value": json_values,
                    "from": paths,
                }
            )
            patch = draw(st.lists(op, max_size=3) | json_values)
        body, ctype = msgspec.json.encode(patch), patch_type
    else:
        body, ctype = msgspec.json.encode(obj), "application/json"
    how = draw(st.sampled_from(["as is", "as is", "mutated", "bytes", "deep", "big", "none"]))
    if how == "mutated":
        body = draw(mutations).apply(obj)
    elif how == "bytes":
        body = draw(st.binary(max_size=200))
    elif how == "deep":
        body = Mutation("deep", draw(st.integers(0, 20)), (draw(st.sampled_from([65, 900, 5000])), "[")).apply(obj)
    elif how == "big":
        body = Mutation("oversize", draw(st.integers(0, 20)), draw(st.sampled_from([MAX_BYTES, 200_000]))).apply(obj)
    elif how == "none":
        return None, ctype
    return body, draw(st.sampled_from([ctype] * 6 + CONTENT_TYPES) | header_text)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes | None

    def target(self) -> str:
        return self.path + ("?" + urllib.parse.urlencode(self.query) if self.query else "")


extra_headers = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": st.sampled_from(["Bearer x", "Basic eA==", "Bearer "]) | header_text,
        "Accept": st.sampled_from(["application/openmetrics-text", "*/*", "text/html"]),
        "Last-Event-ID": header_text,
        "X-Big": st.sampled_from([1000, 7000]).map(lambda n: "h" * n),
    },
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """An operation of the API (sometimes with another method) on drawn names, query, headers and body."""
    method, template, kind = draw(st.sampled_from(OPERATIONS if draw(st.integers(0, 5)) else OTHERS))
    name, ns = draw(names), draw(names)
    path = template.replace("{ns}", _quote(ns)).replace("{name}", _quote(name))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(METHODS))
    query = draw(
        st.dictionaries(st.sampled_from(QUERY_KEYS), st.sampled_from(QUERY_VALUES) | st.text(max_size=20), max_size=3)
    )
    if query.get("watch") in ("1", "true"):
        query["timeoutSeconds"] = "1"  # a watch streams for up to 30 minutes otherwise
    headers = dict(draw(extra_headers)) if draw(st.integers(0, 4)) == 0 else {}
    body = None
    if method in ("POST", "PUT", "PATCH"):
        body, ctype = draw(bodies(kind, method, name, ns))
        if ctype:
            headers["Content-Type"] = ctype
    return Request(method, path, query, headers, body)


def send(live: LiveTmcd, req: Request) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own."""
    host, port = live.http_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(req.method, req.target(), body=req.body, headers=req.headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def check(live: LiveTmcd, req: Request) -> tuple[int, dict[str, Any] | None]:
    """Send ``req``: no 5xx, a Status for every /api error; returns the status and the Status body."""
    code, headers, body = send(live, req)
    assert code < 500, f"{req.method} {req.target()[:200]} -> {code}: {body[:300]!r}"
    status = None
    if code >= 400 and req.path.startswith("/api") and req.method != "HEAD":
        assert headers.get("content-type", "").startswith("application/json"), (code, headers, body[:200])
        status = json.loads(body)
        assert status.get("kind") == "Status" and status.get("code") == code, status
        assert status.get("message") and status.get("reason"), status
    return code, status


@pytest.fixture(scope="module")
def live(nats_server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveTmcd]:
    tmp = tmp_path_factory.mktemp("fuzz-http")
    with live_tmcd(nats_server_bin, tmp, **{"api.max_object_bytes": str(MAX_BYTES)}) as t:
        for k in KINDS:  # the examples exist: requests on their names reach replace, patch and delete
            coll = f"/api/v1/namespaces/shop/{k.plural}" if k.namespaced else f"/api/v1/{k.plural}"
            body = msgspec.json.encode(new_object(k.kind))
            assert send(t, Request("POST", coll, {}, {"Content-Type": "application/json"}, body))[0] == 201
        yield t


@pytest.fixture
def no_tracebacks(live: LiveTmcd) -> Iterator[None]:
    """tmcd logs no error and no traceback (a RecursionError above all) while the test runs."""
    start = live.log_size()
    yield
    bad = [line for line in live.log_since(start).splitlines() if re.search(r"Traceback|RecursionError| ERROR ", line)]
    assert not bad, bad[:5]


@pytest.mark.timeout(300)
def test_random_requests_never_get_a_5xx_and_api_errors_are_statuses(live: LiveTmcd, no_tracebacks: None) -> None:
    @given(requests())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    def run(req: Request) -> None:
        check(live, req)
        assert send(live, Request("GET", "/livez", {}, {}, None))[0] == 200

    run()
    assert live.restarts(live.metrics_now()) == 0


def _post(live: LiveTmcd, path: str, body: bytes, ctype: str = "application/json") -> tuple[int, dict[str, Any] | None]:
    return check(live, Request("POST", path, {}, {"Content-Type": ctype}, body))


def test_a_body_over_api_max_object_bytes_is_413(live: LiveTmcd, no_tracebacks: None) -> None:
    for path in ("/api/v1/placements", "/api/v1/namespaces/shop/canaryrollouts", "/api/v1/placement-simulations"):
        code, status = _post(live, path, b'{"x": "' + b"a" * MAX_BYTES + b'"}')
        assert code == 413 and status is not None and "too large" in status["message"], status
    code, status = check(
        live,
        Request(
            "PATCH",
            "/api/v1/placements/web",
            {},
            {"Content-Type": "application/merge-patch+json"},
            b" " * (MAX_BYTES + 1),
        ),
    )
    assert code == 413, status
    code, _ = _post(live, "/api/v1/placements", msgspec.json.encode(new_object("Placement", name="fits")))
    assert code == 201


@pytest.mark.parametrize("depth", [65, 900, 30_000])
def test_deep_json_is_a_400_that_says_so(live: LiveTmcd, no_tracebacks: None, depth: int) -> None:
    deep = b"[" * depth + b"]" * depth
    obj = msgspec.json.encode(new_object("Placement", name=f"deep-{depth}")).replace(
        b'"metadata":', b'"x": ' + deep + b', "metadata":', 1
    )
    code, status = _post(live, "/api/v1/placements", obj)  # an unknown field: skipped, or refused
    assert code == 201 or (code == 400 and status is not None and "nested too deeply" in status["message"]), status
    _post(live, "/api/v1/placements", msgspec.json.encode(new_object("Placement", name="target")))
    for ctype, patch in (
        ("application/merge-patch+json", b'{"spec": {"x": ' + deep + b"}}"),
        ("application/json-patch+json", b'[{"op": "add", "path": "/spec/x", "value": ' + deep + b"}]"),
    ):
        code, status = check(live, Request("PATCH", "/api/v1/placements/target", {}, {"Content-Type": ctype}, patch))
        assert code in (400, 413) and status is not None, (code, status)
        assert code == 413 or "nested too deeply" in status["message"], status


def test_huge_label_values_are_422(live: LiveTmcd, no_tracebacks: None) -> None:
    obj = new_object("SyncTarget", name="huge-label", labels={"region": "x" * 20_000})
    code, status = _post(live, "/api/v1/synctargets", msgspec.json.encode(obj))
    assert code == 422 and status is not None, status
    assert status["details"]["causes"][0]["field"] == "metadata.labels[region]", status
    assert "at most 63 characters" in status["message"]
    obj = new_object("SyncTarget", name="huge-key", labels={"k" * 5_000: "v"})
    assert _post(live, "/api/v1/synctargets", msgspec.json.encode(obj))[0] == 422


@pytest.mark.parametrize("name", ["a*b", "*", ">", "a.b", "caf\u00e9", "\u0430pi", "a b", "A"])
def test_unicode_and_nats_wildcards_in_names_are_422_naming_the_field(
    live: LiveTmcd, no_tracebacks: None, name: str
) -> None:
    code, status = _post(live, "/api/v1/placements", msgspec.json.encode(new_object("Placement", name=name)))
    assert code == 422 and status is not None, status
    assert [c["field"] for c in status["details"]["causes"]] == ["metadata.name"], status
    assert repr(name) in status["message"] or "DNS-1123" in status["message"], status
    quoted = urllib.parse.quote(name, safe="*>")
    rollout = new_object("CanaryRollout", name="ok")
    del rollout["metadata"]["namespace"]  # it gets the URL's
    code, status = _post(live, f"/api/v1/namespaces/{quoted}/canaryrollouts", msgspec.json.encode(rollout))
    assert code == 422 and status is not None, status
    assert [c["field"] for c in status["details"]["causes"]] == ["metadata.namespace"], status
    assert check(live, Request("GET", f"/api/v1/placements/{quoted}", {}, {}, None))[0] in (400, 404)
