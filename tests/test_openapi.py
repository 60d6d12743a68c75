"""The OpenAPI document, /openapi.json, the offline /docs page and the generated docs/api reference."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry

from tests.helpers import daemon_config, nats_connect, running_daemon
from tmcd import __version__
from tmcd.api.http import Route
from tmcd.api.openapi import OPERATIONS, Operation, build_openapi
from tmcd.api.reference import default_routes, render_reference
from tmcd.api.server import ROUTES_KEY, build_app
from tmcd.cli.main import cli
from tmcd.contracts.codec import decode_as, encode
from tmcd.contracts.messages import CanaryControl, ControlReply, HealthReport
from tmcd.resources.kinds import KINDS
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.probes import CheckRegistry

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("get", "put", "post", "patch", "delete")
TOKEN = "x" * 24


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_openapi(default_routes(), __version__)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_every_route_has_an_operation(doc: dict[str, Any]) -> None:
    routes = default_routes()
    for r in routes:
        assert r.method.lower() in doc["paths"].get(r.path, {}), f"{r.method} {r.path} is not documented"
    ids = {op["operationId"] for _, _, op in operations(doc)}
    for want in ("listPlacements", "createPlacement", "readPlacement", "replacePlacement", "patchPlacement"):
        assert want in ids
    assert {"deletePlacement", "listCanaryRolloutsAllNamespaces", "simulatePlacement", "readHealth"} <= ids
    for kind in KINDS:
        assert kind.kind in {t["name"] for t in doc["tags"]}


def test_every_route_the_server_serves_is_documented(doc: dict[str, Any]) -> None:
    app = build_app(CollectorRegistry(), CheckRegistry())
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method == "HEAD" or path.startswith("/docs/static") or path == "/docs/init.js":
            continue
        assert route.method.lower() in doc["paths"].get(path, {}), f"{route.method} {path} is not documented"


def test_an_unknown_verb_needs_an_operation_entry() -> None:
    async def handler(_: Any) -> Any:
        raise NotImplementedError

    route = Route("POST", "/api/v1/frobnications", "frob", None, "Frob", handler)
    with pytest.raises(ValueError, match="frobnications"):
        build_openapi([route], "1")
    health = next(op for op in OPERATIONS if op.path == "/api/v1/health")
    extra = Operation("POST", "/api/v1/frobnications", "frob", "Frob", "health", HealthReport, health.response_example)
    assert "post" in build_openapi([route], "1", [*OPERATIONS, extra])["paths"]["/api/v1/frobnications"]


def test_every_operation_has_examples(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        for code, resp in op["responses"].items():
            resp = doc["components"]["responses"][code] if "$ref" in resp else resp
            for media, mt in resp.get("content", {}).items():
                assert mt.get("examples"), f"{where} {code} {media}: no example"
        for media, mt in op.get("requestBody", {}).get("content", {}).items():
            assert mt.get("examples"), f"{where} request {media}: no example"
        for p in op.get("parameters", []):
            assert "example" in p, f"{where} parameter {p['name']}: no example"


def _check_example(doc: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> None:
    validator = jsonschema.Draft202012Validator({**schema, "components": doc["components"]})
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)]
    assert not problems, f"{where}: the example does not match its schema: {problems[:3]}"


def sse_events(text: str) -> list[dict[str, str]]:
    """The events of a text/event-stream body as {event, data, id?} (comments are not events)."""
    events = []
    for block in text.split("\n\n"):
        fields = [line.partition(": ") for line in block.splitlines() if line and not line.startswith(":")]
        if fields:
            events.append({key: value for key, _, value in fields})
    return events


def _schema_at(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    found: dict[str, Any] = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return found


def test_examples_match_their_schemas(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        bodies = [("request", op.get("requestBody", {}))]
        bodies += [(code, r) for code, r in op["responses"].items() if "$ref" not in r]
        for code, part in bodies:
            for media, mt in part.get("content", {}).items():
                for name, ex in mt["examples"].items():
                    where = f"{method.upper()} {path} {code} {media} {name}"
                    if media != "text/event-stream":
                        _check_example(doc, mt["schema"], ex["value"], where)
                        continue
                    # the schema describes one event; its data is JSON of the schema its contentSchema names
                    events = sse_events(ex["value"])
                    assert events, where
                    data_schema = _schema_at(doc, mt["schema"]["$ref"])["properties"]["data"]
                    assert data_schema["contentMediaType"] == "application/json"
                    for event in events:
                        _check_example(doc, mt["schema"], event, where)
                        _check_example(doc, data_schema["contentSchema"], json.loads(event["data"]), where)
    for code, resp in doc["components"]["responses"].items():
        for name, ex in resp["content"]["application/json"]["examples"].items():
            _check_example(doc, resp["content"]["application/json"]["schema"], ex["value"], f"error {code} {name}")


def test_schemas_come_from_the_types_with_field_descriptions(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for kind in KINDS:
        assert kind.kind in schemas and f"{kind.kind}List" in schemas
        assert schemas[f"{kind.kind}List"]["properties"]["items"]["items"] == {
            "$ref": f"#/components/schemas/{kind.kind}"
        }
    assert {"Status", "HealthReport", "Decision", "ListMeta"} <= set(schemas)
    # field docstrings become descriptions
    assert "compare-and-set" in schemas["ObjectMeta"]["properties"]["resourceVersion"]["description"]


# --- served by tmcd ------------------------------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


async def test_docs_page_and_its_assets_are_served_by_tmcd_without_external_urls() -> None:
    async with TestClient(TestServer(build_app(CollectorRegistry(), CheckRegistry()))) as client:
        resp = await client.get("/docs")
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
        parser = _Refs()
        parser.feed(page)
        assert len(parser.refs) >= 3, parser.refs
        assert not re.search(r"https?://", page), "the docs page must not reference external URLs"
        for ref in parser.refs:
            assert ref.startswith("/"), ref
            asset = await client.get(ref)
            assert asset.status == 200, ref
            body = await asset.read()
            assert body, ref
            if ref.endswith("init.js"):
                text = body.decode()
                assert not re.search(r"https?://", text)
                for url in re.findall(r'url: "([^"]+)"', text):
                    assert (await client.get(url)).status == 200, url
        spec = await client.get("/openapi.json")
        assert spec.status == 200 and (await spec.json())["openapi"] == "3.1.0"


async def test_openapi_json_served_by_the_daemon_is_the_built_document(
    nats_url: str, tmp_path: Path, durable_prefix: str
) -> None:
    cfg = daemon_config(nats_url, tmp_path, agents="metrics", **{"consumer.durable_prefix": durable_prefix})
    async with (
        running_daemon(cfg) as d,
        aiohttp.ClientSession() as s,
        s.get(f"{d.http.base_url}/openapi.json") as r,
    ):
        assert r.status == 200 and r.content_type == "application/json"
        served = await r.json()
        want = json.loads(json.dumps(build_openapi(d.http.app[ROUTES_KEY], __version__)))
        assert served == want


async def test_the_examples_work_against_the_daemon(
    nats_server: EmbeddedNats, tmp_path: Path, doc: dict[str, Any]
) -> None:
    """Every create example is accepted (201) and every answer matches the documented schema (canary
    control answered by a stand-in controller on NATS)."""
    tokens = [{"name": "t", "token": TOKEN, "access": "read-write"}]
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics", **{"api.tokens": tokens})
    headers = {"Authorization": f"Bearer {TOKEN}"}
    nc = await nats_connect(nats_server.url)

    async def controller(msg: Any) -> None:
        req = decode_as(CanaryControl, msg.data)
        await msg.respond(encode(ControlReply(ok=True, target=f"{req.namespace}/{req.name}", state=req.action)))

    await nc.subscribe("tmc.ctl.canary.>", cb=controller)
    await nc.flush()
    async with running_daemon(cfg) as d, aiohttp.ClientSession(base_url=d.http.base_url, headers=headers) as s:
        for path, method, op in operations(doc):
            if method not in ("post", "patch") or "requestBody" not in op:
                continue
            url = path
            for p in op["parameters"]:
                url = url.replace("{" + p["name"] + "}", str(p["example"])) if p["in"] == "path" else url
            media = next(iter(op["requestBody"]["content"]))
            example = next(iter(op["requestBody"]["content"][media]["examples"].values()))["value"]
            async with s.request(method.upper(), url, json=example) as r:
                answer = await r.json()
                assert str(r.status) in op["responses"] and r.status < 300, (method, url, r.status, answer)
                schema = op["responses"][str(r.status)]["content"]["application/json"]["schema"]
                _check_example(doc, schema, answer, f"{method.upper()} {url}")
        for path, _method, op in operations(doc):
            if op["operationId"] == "listPlacements" or op["operationId"].endswith("AllNamespaces"):
                async with s.get(path) as r:
                    answer = await r.json()
                    assert r.status == 200 and answer["items"], (path, answer)
                    _check_example(doc, op["responses"]["200"]["content"]["application/json"]["schema"], answer, path)
    await nc.close()


# --- docs/api --------------------------------------------------------------------------------------


def test_docs_api_is_up_to_date() -> None:
    files = render_reference(default_routes(), __version__)
    assert set(files) == {"README.md", "http.md", "nats.md", "resources.md"}
    for name, text in files.items():
        path = ROOT / "docs" / "api" / name
        assert path.is_file() and path.read_text() == text, f"docs/api/{name} is out of date: run `tmcd docs generate`"


def test_reference_covers_every_operation_channel_and_kind(doc: dict[str, Any]) -> None:
    files = render_reference(default_routes(), __version__)
    for path, method, op in operations(doc):
        assert f"### {op['operationId']}" in files["http.md"] and f"`{method.upper()} {path}`" in files["http.md"]
    for kind in KINDS:
        assert f"## {kind.kind}" in files["resources.md"]
    assert "`tmc.syncer.{cluster}.heartbeat`" in files["nats.md"] and "### SyncerHeartbeat" in files["nats.md"]
    assert render_reference(default_routes(), __version__) == files, "the output must be deterministic"


def test_docs_generate_writes_the_api_reference(tmp_path: Path) -> None:
    args = ["docs", "generate", "--dir", str(tmp_path), "--crds-dir", str(tmp_path / "crds")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (tmp_path / "metrics.md").is_file()
    for name, text in render_reference(default_routes(), __version__).items():
        assert (tmp_path / "api" / name).read_text() == text
    again = CliRunner().invoke(cli, args)
    assert "wrote" not in again.output and again.output.count("unchanged") == 8, again.output
