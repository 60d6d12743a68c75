"""The HTTP server: /metrics, /livez, /readyz, /healthz (aiohttp AppRunner + TCPSite)."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry

from tmcd.api import errors
from tmcd.api.auth import authorize
from tmcd.api.camel import camel_keys
from tmcd.api.docs_page import add_docs
from tmcd.api.http import ApiContext, Route, add_api, cors
from tmcd.api.http_errors import api_errors, error_response, use_status_errors
from tmcd.api.replicas import replica_report
from tmcd.bus import Bus, BusError
from tmcd.config import ApiConfig, parse_listen
from tmcd.contracts import subjects
from tmcd.contracts.messages import HealthQuery, HealthReport
from tmcd.metrics.exposition import FastExposition
from tmcd.runtime.probes import CheckRegistry

log = logging.getLogger("tmcd.http")

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
EXPOSITION_KEY = web.AppKey("exposition", FastExposition)
BusGetter = Callable[[], "Bus | None"]
BUS_KEY: web.AppKey[BusGetter] = web.AppKey("bus")
API_KEY = web.AppKey("api", ApiContext)
ROUTES_KEY: web.AppKey[list[Route]] = web.AppKey("routes")
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
CHECKS_KEY = web.AppKey("checks", CheckRegistry)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition (OpenMetrics when the scraper asks for it; gzip when accepted)."""
    accept = request.headers.get("Accept", "")
    openmetrics = "application/openmetrics-text" in accept
    # Rendered in slices on the event loop: consumers keep ingesting while a large
    # scrape is produced instead of stalling behind it.
    body = await request.app[EXPOSITION_KEY].render_async(openmetrics)
    content_type = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
    # zlib_executor_size: compress big bodies in a thread (zlib releases the GIL), not on the loop
    resp = web.Response(body=body, headers={"Content-Type": content_type}, zlib_executor_size=64 * 1024)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        resp.enable_compression(web.ContentCoding.gzip)
    return resp


def _probe(probe: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        only = request.match_info.get("check")
        exclude = request.query.getall("exclude", [])
        report = request.app[CHECKS_KEY].run(probe, exclude=exclude, only=only)
        if report is None:
            return web.Response(status=404, text=f"no check named {only!r} in {probe}\n")
        verbose = "verbose" in request.query
        return web.Response(status=200 if report.ok else 503, text=report.render(probe, verbose))

    return handler


async def health_tree(request: web.Request) -> web.Response:
    """GET /api/v1/health: the health tree (cluster -> location -> fleet) from the health agent."""
    bus = request.app[BUS_KEY]()
    clusters = request.query.get("clusters", "true").lower()
    if clusters not in ("1", "true", "yes", "0", "false", "no"):
        return _status(400, "BadRequest", "clusters must be true or false")
    query = HealthQuery(location=request.query.get("location", ""), include_clusters=clusters in ("1", "true", "yes"))
    if bus is None or not bus.connected:
        return _status(503, "ServiceUnavailable", "not connected to NATS")
    try:
        rep = await bus.request(subjects.api_health(), query, HealthReport, timeout=5.0)
    except BusError as exc:
        return _status(503, "ServiceUnavailable", f"no health agent answered: {exc}")
    return web.Response(body=msgspec.json.encode(camel_keys(msgspec.to_builtins(rep))), content_type="application/json")


async def replicas(request: web.Request) -> web.Response:
    """GET /api/v1/replicas: the deployment's replicas and the leader of each agent."""
    ctx = request.app[API_KEY]
    authorize(ctx.cfg, request.headers.get("Authorization"), write=False, remote=request.remote)
    report = await replica_report(ctx.bus(), ctx.lease_prefix, time.time(), election=ctx.election)
    return web.Response(body=msgspec.json.encode(report), content_type="application/json")


def _status(code: int, reason: str, message: str) -> web.Response:
    """A Kubernetes-style Status object."""
    return error_response(errors.ApiError(code, reason, message))


async def _docs_slash(_request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/docs")


def build_app(
    registry: CollectorRegistry,
    checks: CheckRegistry,
    bus: BusGetter = lambda: None,
    api: ApiConfig | None = None,
) -> web.Application:
    """The aiohttp application: metrics, probes, the health tree and the resource API."""
    cfg = api or ApiConfig()
    # the largest body is the largest object (413 beyond it, as a Status)
    app = web.Application(middlewares=[cors(cfg.cors_origins), api_errors], client_max_size=cfg.max_object_bytes)
    app[REGISTRY_KEY] = registry
    app[BUS_KEY] = bus
    app[EXPOSITION_KEY] = FastExposition(registry)
    app[CHECKS_KEY] = checks
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/health", health_tree)
    app[API_KEY] = ApiContext(cfg, bus)
    app.router.add_get("/api/v1/replicas", replicas)
    app[ROUTES_KEY] = add_api(app, app[API_KEY])
    add_docs(app, app[ROUTES_KEY])
    app.router.add_get("/docs/", _docs_slash)
    for probe in ("livez", "readyz", "healthz"):
        app.router.add_get(f"/{probe}", _probe(probe))
        app.router.add_get(f"/{probe}/{{check}}", _probe(probe))
    return app


class HttpServer:
    """Runs the app on ``HOST:PORT`` (port 0 picks a free port; see :attr:`port`), over HTTPS
    when given an SSL context (``http.tls_cert``/``tls_key``)."""

    def __init__(self, app: web.Application, listen: str, tls: ssl.SSLContext | None = None) -> None:
        self.app = app
        self._app = app
        self._host, self._port = parse_listen(listen)
        self._tls = tls
        self._runner: web.AppRunner | None = None
        self.port = self._port

    async def start(self) -> None:
        """Bind and serve."""
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        use_status_errors(self._runner)  # a URI too long (414) or a bad header: a Status, no traceback logged
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._tls)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("HTTP listening on %s", self.base_url)

    @property
    def base_url(self) -> str:
        """http://host:port (https:// with TLS) of the running server."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._tls is not None else 'http'}://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
