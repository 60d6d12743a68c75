"""How ``kubectl tmc`` reaches tmcd: the ``tmc`` NATS micro service, or the HTTP API.

Endpoint resolution, first match wins:

* NATS: ``--nats-url`` / ``TMC_NATS_URL``, the kubeconfig context's ``tmc`` extension
  ``natsURL``, else ``<TMCD_DATA_DIR or .tmcd>/nats.url`` (written by ``tmcd run``), else
  ``nats://127.0.0.1:4222``.
* HTTP: ``--server`` / ``TMC_SERVER`` or the extension's ``server`` (default
  ``http://127.0.0.1:8080``); used only when a server is given and no NATS URL is.

The NATS client (:mod:`tmcd.kubectl.natsproto`) is a small synchronous implementation of
the client protocol so that a ``get`` starts fast; every ``tmc.api.*`` request carries the
token as an ``Authorization: Bearer`` header, over NATS as over HTTP.
"""

from __future__ import annotations

import json
import os

from tmcd.kubectl.errors import CliError, ServerError, Unreachable, UsageError
from tmcd.kubectl.kinds import CliKind
from tmcd.kubectl.natsproto import NATS_HINT, NatsConnection, _headers, _unquote, split_nats_url

__all__ = ["Client", "Endpoint", "NatsConnection", "Settings", "_headers", "_unquote", "resolve", "split_nats_url"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_NATS = "nats://127.0.0.1:4222"
DEFAULT_SERVER = "http://127.0.0.1:8080"
HEALTH_SUBJECT = "tmc.api.get.health"
HEALTH_TIMEOUT = 2.0
"""Seconds ``get clusters`` waits for the health agent's heartbeats before showing the stored ones."""
HTTP_HINT = "set --server"


class Settings:
    """The global flags, as given (empty = not given)."""

    def __init__(
        self,
        nats_url: str = "",
        server: str = "",
        token: str = "",
        kubeconfig: str = "",
        context: str = "",
        namespace: str = "",
        all_namespaces: bool = False,
        verbosity: int = 0,
        timeout: float = 10.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.nats_url = nats_url
        self.server = server
        self.token = token
        self.kubeconfig = kubeconfig
        self.context = context
        self.namespace = namespace
        self.all_namespaces = all_namespaces
        self.verbosity = verbosity
        self.timeout = timeout
        self.env = dict(os.environ) if env is None else env


class Endpoint:
    """Where to send requests: ``transport`` is ``nats`` or ``http``; ``namespace`` is the
    kubeconfig context's (the default for namespaced kinds)."""

    def __init__(self, transport: str, url: str, token: str = "", namespace: str = "", timeout: float = 10.0) -> None:
        self.transport = transport
        self.url = url
        self.token = token
        self.namespace = namespace
        self.timeout = timeout


def kubeconfig_context(settings: Settings) -> dict[str, Any]:
    """The selected kubeconfig context (``{}`` when there is no kubeconfig to read)."""
    paths = settings.kubeconfig or settings.env.get("KUBECONFIG", "")
    if not paths and not settings.context:
        return {}
    if not paths:
        paths = os.path.join(os.path.expanduser("~"), ".kube", "config")
    from pathlib import Path

    import yaml

    contexts: dict[str, dict[str, Any]] = {}
    current = ""
    for p in paths.split(os.pathsep):
        if not p:
            continue
        try:
            doc = yaml.safe_load(Path(p).read_text()) or {}
        except FileNotFoundError:
            if settings.kubeconfig:
                raise CliError(f"kubeconfig {p} not found") from None
            continue
        except (OSError, yaml.YAMLError) as exc:
            raise CliError(f"cannot read kubeconfig {p}: {exc}") from None
        if not isinstance(doc, dict):
            continue
        current = current or str(doc.get("current-context") or "")
        for entry in doc.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name") and entry["name"] not in contexts:
                ctx = entry.get("context")
                contexts[str(entry["name"])] = ctx if isinstance(ctx, dict) else {}
    name = settings.context or current
    if not name:
        return {}
    if name not in contexts:
        raise CliError(f'context "{name}" does not exist in kubeconfig')
    return contexts[name]


def tmc_extension(context: dict[str, Any]) -> dict[str, Any]:
    """The context's ``extensions`` entry named ``tmc`` (``{natsURL, server}``)."""
    for ext in context.get("extensions") or []:
        if isinstance(ext, dict) and ext.get("name") == "tmc" and isinstance(ext.get("extension"), dict):
            return dict(ext["extension"])
    return {}


def resolve(settings: Settings) -> Endpoint:
    """Pick NATS or HTTP and the URL from flags, environment, kubeconfig and the data dir."""
    env = settings.env
    ctx = kubeconfig_context(settings)
    ext = tmc_extension(ctx)
    token = settings.token or env.get("TMC_TOKEN", "") or str(ext.get("token") or "")
    if any(c in token for c in "\r\n\0"):
        raise UsageError("--token/TMC_TOKEN: a token cannot contain line breaks or NUL")
    ns = str(ctx.get("namespace") or "")
    nats_url = settings.nats_url or env.get("TMC_NATS_URL", "") or str(ext.get("natsURL") or "")
    server = settings.server or env.get("TMC_SERVER", "") or str(ext.get("server") or "")
    if not nats_url and server:
        if not server.startswith(("http://", "https://")):
            raise UsageError(f"--server {server!r}: want an http:// or https:// URL")
        return Endpoint("http", server.rstrip("/"), token, ns, settings.timeout)
    if not nats_url:
        url_file = os.path.join(env.get("TMCD_DATA_DIR") or ".tmcd", "nats.url")
        try:
            with open(url_file) as fh:
                nats_url = fh.read().strip().split(",")[0]
        except OSError:
            nats_url = ""
        nats_url = nats_url or DEFAULT_NATS
    return Endpoint("nats", nats_url, token, ns, settings.timeout)


# --- the API --------------------------------------------------------------------------------


class Client:
    """The resource API over NATS or HTTP, returning decoded JSON."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._nats: NatsConnection | None = None

    @property
    def where(self) -> str:
        return self.endpoint.url

    def close(self) -> None:
        """Close the NATS connection (a later request opens a new one)."""
        if self._nats is not None:
            self._nats.close()

    def nats(self) -> NatsConnection:
        if self._nats is None:
            self._nats = NatsConnection(self.endpoint.url, self.endpoint.token, self.endpoint.timeout)
        return self._nats

    def _nats_call(self, subject: str, body: dict[str, Any]) -> Any:
        headers, data = self.nats().request(subject, json.dumps(body).encode())
        if headers.get("Status") == "503" and not data:
            raise Unreachable(self.endpoint.url, f"no tmcd answers {subject}", NATS_HINT)
        code = headers.get("Nats-Service-Error-Code", "")
        decoded = json.loads(data) if data else None
        if code:
            raise ServerError(
                int(code) if code.isdigit() else 500,
                decoded if isinstance(decoded, dict) else None,
                headers.get("Nats-Service-Error", ""),
            )
        return decoded

    def service_info(self) -> dict[str, Any]:
        """``$SRV.INFO.tmc`` (NATS), or ``/version``-like data over HTTP is not available."""
        if self.endpoint.transport != "nats":
            raise CliError("the server version is only available over NATS (set --nats-url)")
        info = self._nats_call("$SRV.INFO.tmc", {})
        return info if isinstance(info, dict) else {}

    def call(self, verb: str, kind: CliKind, **body: Any) -> Any:
        """One API operation: ``verb`` in list/get/create/replace/patch/delete."""
        body = {k: v for k, v in body.items() if v not in (None, "", 0)}
        if self.endpoint.transport == "nats":
            return self._nats_call(f"tmc.api.{verb}.{kind.plural}", body)
        return self._http_call(verb, kind, body)

    def _http_call(self, verb: str, kind: CliKind, body: dict[str, Any]) -> Any:
        import urllib.parse

        ns, name = body.get("namespace", ""), body.get("name", "")
        path = f"/api/v1/namespaces/{ns}/{kind.plural}" if kind.namespaced and ns else f"/api/v1/{kind.plural}"
        if verb == "simulate":  # POST /api/v1/placement-simulations with the Placement as the body
            path, verb, body = "/api/v1/placement-simulations", "create", {"object": body.get("object")}
        if name:
            path += "/" + urllib.parse.quote(name)
        method = {"list": "GET", "get": "GET", "create": "POST", "replace": "PUT", "patch": "PATCH"}.get(verb, "DELETE")
        query = {
            k: str(body[src])
            for k, src in (("labelSelector", "labelSelector"), ("fieldSelector", "fieldSelector"), ("limit", "limit"))
            if src in body
        }
        if query:
            path += "?" + urllib.parse.urlencode(query)
        payload = body.get("object") if verb in ("create", "replace") else body.get("patch")
        data = json.dumps(payload).encode() if payload is not None else None
        ctype = "application/merge-patch+json" if verb == "patch" else "application/json"
        return self._http(method, path, data, ctype)

    def _http(self, method: str, path: str, data: bytes | None = None, ctype: str = "", timeout: float = 0.0) -> Any:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.endpoint.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", ctype)
        if self.endpoint.token:
            req.add_header("Authorization", f"Bearer {self.endpoint.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.endpoint.timeout) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                status = json.loads(raw)
            except ValueError:
                status = None
            raise ServerError(err.code, status if isinstance(status, dict) else None, err.reason) from None
        except urllib.error.URLError as err:
            reason = err.reason
            text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
            raise Unreachable(self.endpoint.url, text.lower(), HTTP_HINT) from None
        except TimeoutError:
            raise Unreachable(self.endpoint.url, "timed out", HTTP_HINT) from None

    def heartbeats(self) -> dict[str, float]:
        """Each cluster's latest received heartbeat (Unix time), from the health agent
        (``tmc.api.get.health`` / ``GET /api/v1/health``); ``{}`` when it does not answer in
        :data:`HEALTH_TIMEOUT` seconds, so callers fall back to the stored status."""
        timeout = min(HEALTH_TIMEOUT, self.endpoint.timeout)
        try:
            if self.endpoint.transport == "nats":
                body = json.dumps({"include_clusters": True}).encode()
                headers, data = self.nats().request(HEALTH_SUBJECT, body, timeout=timeout)
                report = None if headers.get("Status") or headers.get("Nats-Service-Error-Code") else json.loads(data)
            else:
                report = self._http("GET", "/api/v1/health", timeout=timeout)
        except (CliError, ValueError):
            self.close()  # a reply may still arrive on this socket: the next request starts afresh
            return {}
        out: dict[str, float] = {}
        for loc in (report.get("locations") or []) if isinstance(report, dict) else []:
            for c in (loc.get("clusters") or []) if isinstance(loc, dict) else []:
                beat = c.get("last_heartbeat") if isinstance(c, dict) else None
                if isinstance(beat, int | float) and beat > 0 and c.get("name"):
                    out[str(c["name"])] = float(beat)
        return out
