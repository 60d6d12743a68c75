"""kubectl-tmc's small NATS client: URL parsing and connection errors (real sockets)."""

from __future__ import annotations

import _socket
import asyncio
import threading
import urllib.parse
from typing import Any

import pytest

from tests.helpers import nats_connect
from tmcd.kubectl.client import NatsConnection, _unquote, split_nats_url
from tmcd.kubectl.errors import CliError, Unreachable, UsageError
from tmcd.runtime.embedded import EmbeddedNats


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://127.0.0.1:4222", ("nats", "", "", "127.0.0.1", 4222)),
        ("127.0.0.1:5000", ("nats", "", "", "127.0.0.1", 5000)),
        ("nats://example.org", ("nats", "", "", "example.org", 4222)),
        ("NATS://h:1/", ("nats", "", "", "h", 1)),
        ("nats://alice:s%40cret%3A@h:4222", ("nats", "alice", "s@cret:", "h", 4222)),
        ("nats://user@h", ("nats", "user", "", "h", 4222)),
        ("nats://[::1]:4333", ("nats", "", "", "::1", 4333)),
        ("nats://[::1]", ("nats", "", "", "::1", 4222)),
        ("tls://h:4222", ("tls", "", "", "h", 4222)),
        ("nats://", ("nats", "", "", "127.0.0.1", 4222)),
    ],
)
def test_split_nats_url(url: str, expected: tuple[str, str, str, str, int]) -> None:
    assert split_nats_url(url) == expected


@pytest.mark.parametrize("url", ["nats://h:x", "nats://h:0", "nats://h:70000", "nats://[::1]:port"])
def test_split_nats_url_bad_port(url: str) -> None:
    with pytest.raises(UsageError, match="port"):
        split_nats_url(url)


@pytest.mark.parametrize("text", ["plain", "a%20b", "%E2%9C%93ok", "100%", "%zz", "x%4", "%%41", ""])
def test_unquote_matches_urllib(text: str) -> None:
    assert _unquote(text) == urllib.parse.unquote(text)


def test_connection_refused_and_unknown_host() -> None:
    with pytest.raises(Unreachable, match="connection refused"):
        NatsConnection("nats://127.0.0.1:1", timeout=2).connect()
    with pytest.raises(Unreachable, match="connection refused"):
        NatsConnection("nats://[::1]:1", timeout=2).connect()
    with pytest.raises(Unreachable):
        NatsConnection("nats://no-such-host.invalid:4222", timeout=2).connect()
    with pytest.raises(CliError, match="only nats://"):
        NatsConnection("tls://127.0.0.1:4222", timeout=2).connect()


def _serve_once(reply: bytes) -> tuple[int, threading.Thread]:
    srv = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def run() -> None:
        conn, _ = srv._accept()  # type: ignore[attr-defined]
        peer = _socket.socket(fileno=conn)
        peer.sendall(reply)
        if reply.endswith(b"\r\n"):
            peer.recv(1024)  # the client answers a complete line, or gives up
        peer.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return port, t


@pytest.mark.parametrize(
    ("greeting", "error"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a NATS server"),
        (b'INFO {"tls_required": true}\r\n', "requires TLS"),
        (b"INFO {}\r\n-ERR 'Authorization Violation'\r\n", "refused the connection: Authorization Violation"),
        (b"INFO {}", "connection closed"),
    ],
)
def test_handshake_failures(greeting: bytes, error: str) -> None:
    port, t = _serve_once(greeting)
    conn = NatsConnection(f"nats://127.0.0.1:{port}", timeout=5)
    with pytest.raises(CliError, match=error):
        conn.connect()
    conn.close()
    t.join(5)


def test_a_token_cannot_break_a_header_line() -> None:
    from tmcd.kubectl.client import Settings, resolve

    with pytest.raises(UsageError, match="--token/TMC_TOKEN"):
        resolve(Settings(token="abc\r\nX-Evil: 1", env={}))
    assert resolve(Settings(token="ok", env={})).token == "ok"


async def test_replies_are_kept_for_requests_sent_ahead(nats_server: EmbeddedNats) -> None:
    """`get clusters` sends the health request before the list: each reply reaches its request."""
    nc = await nats_connect(nats_server.url)

    async def echo(msg: Any) -> None:
        await msg.respond(msg.data + b"!")

    await nc.subscribe("echo.>", cb=echo)
    await nc.flush()

    def run() -> tuple[bytes, bytes, bytes]:
        conn = NatsConnection(nats_server.url, timeout=10)
        try:
            first, second = conn.send("echo.a", b"a"), conn.send("echo.b", b"b")
            b = conn.reply(second)[1]  # read past the first reply, which is kept
            a = conn.reply(first)[1]
            return a, b, conn.request("echo.c", b"c")[1]
        finally:
            conn.close()

    try:
        assert await asyncio.to_thread(run) == (b"a!", b"b!", b"c!")
    finally:
        await nc.close()
