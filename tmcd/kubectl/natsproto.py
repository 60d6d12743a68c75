"""A minimal synchronous NATS client for ``kubectl tmc``: CONNECT, SUB, PUB/HPUB, MSG/HMSG.

It uses the ``_socket`` C module directly: ``socket.py`` (enums, selectors), ``urllib.parse``
and the idna codec that a str host to ``getaddrinfo`` loads would add ~10 ms to every command.
It does not speak TLS.
"""

from __future__ import annotations

import _socket
import json
import os

from tmcd.kubectl.errors import CliError, Unreachable, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NATS_HINT = "set --nats-url"
API_PREFIX = "tmc.api."
"""Requests on these subjects carry ``Authorization: Bearer <token>`` when a token is set."""


class NatsConnection:
    """A minimal synchronous NATS request/reply client (plain TCP, headers, no-responders)."""

    def __init__(self, url: str, token: str = "", timeout: float = 10.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self._sock: _socket.socket | None = None
        self._buf = bytearray()
        self._sid = 0

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
        if self._sock is None:
            self.connect()
        assert self._sock is not None
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
        if timeout is not None:
            self._sock.settimeout(timeout)
        try:
            return self._reply(sid)
        finally:
            if timeout is not None and self._sock is not None:
                self._sock.settimeout(self.timeout)

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
                data = self._read(int(parts[-1]))
                if parts[2].decode() == sid:
                    return {}, data
            elif parts[0] == b"HMSG":
                hlen, total = int(parts[-2]), int(parts[-1])
                raw = self._read(total)
                if parts[2].decode() == sid:
                    return _headers(raw[:hlen]), raw[hlen:]

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
