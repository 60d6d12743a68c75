"""How ``kubectl tmc`` reaches tmcd: the ``tmc`` NATS micro service, or the HTTP API.

Endpoint resolution (:mod:`tmcd.kubectl.endpoint`), first match wins:

* NATS: ``--nats-url`` / ``TMC_NATS_URL``, the kubeconfig context's ``tmc`` extension
  ``natsURL``, else ``<TMCD_DATA_DIR or .tmcd>/nats.url`` (written by ``tmcd run``), else
  ``nats://127.0.0.1:4222``.
* HTTP: ``--server`` / ``TMC_SERVER`` or the extension's ``server`` (default
  ``http://127.0.0.1:8080``); used only when a server is given and no NATS URL is.

The NATS client is a small synchronous implementation of the client protocol (CONNECT,
SUB, PUB/HPUB, MSG/HMSG) so that a ``get`` starts fast; it does not speak TLS.  Every
``tmc.api.*`` request carries the token as an ``Authorization: Bearer`` header, as HTTP
requests do.  It uses the ``_socket`` C module directly: ``socket.py`` (enums, selectors),
``urllib.parse`` and the idna codec that a str host to ``getaddrinfo`` loads would add
~10 ms to every command.
"""

from __future__ import annotations

import _socket
import json
import os

from tmcd.kubectl.endpoint import Endpoint, Settings, kubeconfig_context, resolve, tmc_extension
from tmcd.kubectl.errors import CliError, ServerError, Unreachable, UsageError
from tmcd.kubectl.kinds import CliKind

__all__ = ["Client", "Endpoint", "NatsConnection", "Settings", "kubeconfig_context", "resolve", "tmc_extension"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NATS_HINT = "set --nats-url"
HTTP_HINT = "set --server"
API_PREFIX = "tmc.api."
"""Requests on these subjects carry ``Authorization: Bearer <token>`` when a token is set."""
HEALTH_SUBJECT = "tmc.api.get.health"
HEALTH_TIMEOUT = 2.0
"""Seconds ``get clusters`` waits for the health agent's heartbeats before showing the stored ones."""


# --- NATS -----------------------------------------------------------------------------------


class NatsConnection:
    """A minimal synchronous NATS request/reply client (plain TCP, headers, no-responders)."""

    def __init__(self, url: str, token: str = "", timeout: float = 10.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self._sock: _socket.socket | None = None
        self._buf = bytearray()
        self._sid = 0
        self._waiting: set[str] = set()
        self._replies: dict[str, tuple[dict[str, str], bytes]] = {}

    def _fail(self, reason: str) -> Unreachable:
        return Unreachable(self.url, reason, NATS_HINT)

    def connect(self) -> None:
        scheme, user, password, host, port = split_nats_url(self.url)
        if scheme != "nats":
            raise CliError(f"{self.url}: only nats:// URLs are supported by kubectl-tmc (use --server for HTTP)")
        self._sock = self._dial(host, port)
        line = self._readline()
        if not line.startswith(b"INFO "):
            raise self._fail("not a NATS server")
        info = json.loads(line[5:])
        if info.get("tls_required"):
            raise CliError(f"{self.url}: the server requires TLS, which kubectl-tmc does not speak; use --server")
        opts: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "lang": "python-kubectl-tmc",
            "version": "1",
            "protocol": 1,
        }
        if user:
            opts["user"] = user
            opts["pass"] = password
        token = self.token
        if token:
            opts["auth_token"] = token
        self._send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        while True:
            line = self._readline()
            if line == b"PONG":
                return
            if line.startswith(b"-ERR"):
                raise CliError(f"NATS at {self.url} refused the connection: {line[5:].decode().strip(chr(39))}")

    def _dial(self, host: str, port: int) -> _socket.socket:
        """Connect to the first address of ``host`` that accepts, as ``socket.create_connection`` does."""
        try:
            # bytes: a str host makes getaddrinfo load the idna codec
            name = host.encode("ascii") if host.isascii() else host.encode("idna")
            addrs = _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise self._fail(getattr(exc, "strerror", None) or str(exc)) from None
        last = "no address"
        for family, kind, proto, _, addr in addrs:
            sock = _socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.timeout)
                sock.connect(addr)
                return sock
            except TimeoutError:
                last = "timed out"
            except ConnectionRefusedError:
                last = "connection refused"
            except OSError as exc:
                last = exc.strerror or str(exc)
            sock.close()
        raise self._fail(last)

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise self._fail(exc.strerror or str(exc)) from None

    def _fill(self) -> None:
        assert self._sock is not None
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            raise self._fail("timed out waiting for a reply") from None
        except OSError as exc:
            raise self._fail(exc.strerror or str(exc)) from None
        if not chunk:
            raise self._fail("connection closed")
        self._buf += chunk

    def _readline(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                return line
            self._fill()

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n + 2:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[: n + 2]
        return data

    def request(
        self, subject: str, payload: bytes, *, timeout: float | None = None, headers: dict[str, str] | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Send a request and wait for the reply: (headers, data); headers hold ``Status`` for 503 etc.

        Every ``tmc.api.*`` request carries the token as ``Authorization: Bearer <token>``, as
        HTTP requests do; ``timeout`` overrides the connection's for this request.
        """
        return self.reply(self.send(subject, payload, headers=headers), timeout=timeout)

    def send(self, subject: str, payload: bytes, *, headers: dict[str, str] | None = None) -> str:
        """Send a request without waiting; :meth:`reply` with the returned id waits for its reply
        (other requests may be sent and answered in between)."""
        if self._sock is None:
            self.connect()
        self._sid += 1
        sid = str(self._sid)
        inbox = "_INBOX." + os.urandom(11).hex()
        hdrs = dict(headers or {})
        if self.token and subject.startswith(API_PREFIX):
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        if hdrs:
            head = ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n").encode()
            pub = f"HPUB {subject} {inbox} {len(head)} {len(head) + len(payload)}\r\n".encode() + head
        else:
            pub = f"PUB {subject} {inbox} {len(payload)}\r\n".encode()
        self._send(f"SUB {inbox} {sid}\r\nUNSUB {sid} 1\r\n".encode() + pub + payload + b"\r\n")
        self._waiting.add(sid)
        return sid

    def reply(self, sid: str, *, timeout: float | None = None) -> tuple[dict[str, str], bytes]:
        """The reply to the request :meth:`send` returned ``sid`` for (at most one per request)."""
        try:
            if sid in self._replies:
                return self._replies.pop(sid)
            if timeout is not None and self._sock is not None:
                self._sock.settimeout(timeout)
            try:
                return self._reply(sid)
            finally:
                if timeout is not None and self._sock is not None:
                    self._sock.settimeout(self.timeout)
        finally:
            self._waiting.discard(sid)

    def _reply(self, sid: str) -> tuple[dict[str, str], bytes]:
        while True:
            line = self._readline()
            if line == b"PING":
                self._send(b"PONG\r\n")
                continue
            if line.startswith(b"-ERR"):
                raise CliError(f"NATS error: {line[5:].decode().strip(chr(39))}")
            parts = line.split(b" ")
            if parts[0] == b"MSG":
                got: tuple[dict[str, str], bytes] = ({}, self._read(int(parts[-1])))
            elif parts[0] == b"HMSG":
                hlen, total = int(parts[-2]), int(parts[-1])
                raw = self._read(total)
                got = (_headers(raw[:hlen]), raw[hlen:])
            else:
                continue
            other = parts[2].decode()
            if other == sid:
                return got
            if other in self._waiting:  # another request sent before this one: kept for its reply()
                self._replies[other] = got

    def subscribe(self, subject: str) -> str:
        """Subscribe (for watching); returns the subscription id.  Reads then block without a timeout."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._sid += 1
        sid = str(self._sid)
        self._send(f"SUB {subject} {sid}\r\n".encode())
        self._sock.settimeout(None)
        return sid

    def next_message(self, sid: str) -> tuple[str, dict[str, str], bytes]:
        """The next message of a subscription: (subject, headers, data); blocks."""
        while True:
            line = self._readline()
            if line == b"PING":
                self._send(b"PONG\r\n")
                continue
            parts = line.split(b" ")
            if parts[0] == b"MSG":
                data = self._read(int(parts[-1]))
                if parts[2].decode() == sid:
                    return parts[1].decode(), {}, data
            elif parts[0] == b"HMSG":
                hlen, total = int(parts[-2]), int(parts[-1])
                raw = self._read(total)
                if parts[2].decode() == sid:
                    return parts[1].decode(), _headers(raw[:hlen]), raw[hlen:]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()
        self._waiting.clear()
        self._replies.clear()


def split_nats_url(url: str) -> tuple[str, str, str, str, int]:
    """``nats://user:pass@host:port`` -> (scheme, user, password, host, port); no scheme = nats.

    Percent-escapes in the user and password are decoded; IPv6 hosts are written ``[::1]``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "nats", url
    rest = rest.split("/", 1)[0]
    userinfo, at, hostport = rest.rpartition("@")
    user, _, password = userinfo.partition(":") if at else ("", "", "")
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = hostport.partition(":")
    try:
        port = int(port_text) if port_text else 4222
    except ValueError:
        raise UsageError(f"{url}: the port must be a number") from None
    if not 0 < port < 65536:
        raise UsageError(f"{url}: the port must be between 1 and 65535")
    return scheme.lower(), _unquote(user), _unquote(password), host or "127.0.0.1", port


def _unquote(text: str) -> str:
    """Percent-decoding (as urllib.parse.unquote, without importing it)."""
    if "%" not in text:
        return text
    parts = text.split("%")
    out = bytearray(parts[0].encode())
    for part in parts[1:]:
        code = part[:2]
        if len(code) == 2 and all(c in "0123456789abcdefABCDEF" for c in code):
            out.append(int(code, 16))
            out += part[2:].encode()
        else:
            out += b"%" + part.encode()
    return out.decode(errors="replace")


def _headers(raw: bytes) -> dict[str, str]:
    lines = raw.decode(errors="replace").split("\r\n")
    out: dict[str, str] = {}
    first = lines[0].split(" ", 2)
    if len(first) > 1:
        out["Status"] = first[1]
        if len(first) > 2:
            out["Description"] = first[2]
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


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

    def replicas(self) -> dict[str, Any]:
        """The server's replicas and leaders (``tmc.api.get.replicas`` / ``GET /api/v1/replicas``)."""
        if self.endpoint.transport == "nats":
            report = self._nats_call("tmc.api.get.replicas", {})
        else:
            report = self._http("GET", "/api/v1/replicas")
        return report if isinstance(report, dict) else {}

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
        tls = self._tls() if self.endpoint.url.startswith("https://") else None
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.endpoint.timeout, context=tls) as resp:
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
            verify = getattr(reason, "verify_message", None)
            if verify:  # an ssl.SSLCertVerificationError: tmcd is there, its certificate is not trusted
                raise CliError(
                    f"cannot verify tmcd's certificate at {self.endpoint.url}: {verify}; pass "
                    "--certificate-authority FILE with the CA that signed it (or --insecure-skip-tls-verify)"
                ) from None
            text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
            raise Unreachable(self.endpoint.url, text.lower(), HTTP_HINT) from None
        except TimeoutError:
            raise Unreachable(self.endpoint.url, "timed out", HTTP_HINT) from None

    def _tls(self) -> Any:
        """The SSL context for an https:// server: the system's CAs, or --certificate-authority's,
        or none at all with --insecure-skip-tls-verify."""
        import ssl

        if self.endpoint.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        try:
            return ssl.create_default_context(cafile=self.endpoint.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            raise UsageError(f"--certificate-authority {self.endpoint.ca_file}: cannot load it ({reason})") from None

    def heartbeats(self, pending: str | None = None) -> dict[str, float]:
        """Each cluster's latest received heartbeat (Unix time), from the health agent
        (``tmc.api.get.health`` / ``GET /api/v1/health``); ``{}`` when it does not answer in
        :data:`HEALTH_TIMEOUT` seconds, so callers fall back to the stored status.  ``pending``
        is what :meth:`ask_heartbeats` returned, when the request was sent ahead."""
        timeout = min(HEALTH_TIMEOUT, self.endpoint.timeout)
        try:
            if self.endpoint.transport == "nats":
                sid = pending if pending is not None else self.ask_heartbeats()
                if not sid:
                    return {}
                headers, data = self.nats().reply(sid, timeout=timeout)
                report = None if headers.get("Status") or headers.get("Nats-Service-Error-Code") else json.loads(data)
            else:
                report = self._http("GET", "/api/v1/health", timeout=timeout)
        except (CliError, ValueError):
            self.close()  # a reply may still arrive on this socket: the next request starts afresh
            return {}
        out: dict[str, float] = {}
        for loc in (report.get("locations") or []) if isinstance(report, dict) else []:
            for c in (loc.get("clusters") or []) if isinstance(loc, dict) else []:
                # lastHeartbeat over HTTP (camelCase, as the whole HTTP API), last_heartbeat over NATS
                beat = (c.get("lastHeartbeat") or c.get("last_heartbeat")) if isinstance(c, dict) else None
                if isinstance(beat, int | float) and beat > 0 and c.get("name"):
                    out[str(c["name"])] = float(beat)
        return out

    def ask_heartbeats(self) -> str | None:
        """Send the health request now (over NATS; None over HTTP), so that the health agent
        answers while the list is served: pass the result to :meth:`heartbeats`."""
        if self.endpoint.transport != "nats":
            return None
        try:
            return self.nats().send(HEALTH_SUBJECT, json.dumps({"include_clusters": True}).encode())
        except CliError:
            return ""  # the list request reports the connection problem
