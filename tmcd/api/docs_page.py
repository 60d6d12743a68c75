"""``GET /openapi.json`` and ``GET /docs``: the OpenAPI document and a browser for it.

The browser is Swagger UI from the ``swagger-ui-py`` wheel, served by tmcd itself under
``/docs/static/``: the page works without internet access and names no external URL.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import msgspec
from aiohttp import web

from tmcd import __version__
from tmcd.api.http import Route
from tmcd.api.openapi import build_openapi

STATIC_PREFIX = "/docs/static"

INDEX_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tmcd HTTP API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

INIT_JS = """\
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


def swagger_ui_dir() -> Path:
    """The static files of Swagger UI (from the swagger-ui-py wheel, without importing it)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def add_docs(app: web.Application, routes: list[Route]) -> None:
    """Register /openapi.json (built once, on first request), /docs and /docs/static/ on ``app``."""
    cache: list[bytes] = []

    async def openapi(_request: web.Request) -> web.Response:
        if not cache:
            cache.append(msgspec.json.encode(build_openapi(routes, __version__)))
        return web.Response(body=cache[0], content_type="application/json")

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=INDEX_HTML, content_type="text/html")

    async def init_js(_request: web.Request) -> web.Response:
        return web.Response(text=INIT_JS, content_type="text/javascript")

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", index)
    app.router.add_get("/docs/init.js", init_js)
    app.router.add_static(STATIC_PREFIX, swagger_ui_dir())
