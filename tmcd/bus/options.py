"""Pure helpers that turn NatsConfig into nats-py connect options."""

from __future__ import annotations

import random
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from tmcd.config import NatsConfig


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random | None = None) -> float:
    """Exponential backoff: ``low * 2**attempt`` capped at ``high``, with +-25 % jitter."""
    base = min(high, low * 2.0 ** min(attempt, 32))
    r = (rng or random).random()
    return float(max(low / 2, base * (0.5 + r / 2)))


class PoolServer(Protocol):
    """What :func:`next_try` reads of a server in nats-py's reconnect pool."""

    reconnects: int


S = TypeVar("S", bound=PoolServer)


def next_try(pool: Sequence[S], low: float, high: float, rng: random.Random | None = None) -> tuple[S | None, float]:
    """The server to reconnect to and the delay before trying it: the one tried least since the
    last connection (the pool's first among equals: nats-py shuffles it), after a backoff by its
    own failed attempts.  Moving on matters on a cluster: nats-py, given no server, takes the
    pool's first every time, and that may be the node that died."""
    if not pool:
        return None, low
    server = min(pool, key=lambda s: s.reconnects)
    return server, backoff_delay(server.reconnects, low, high, rng)


def tls_context(cfg: NatsConfig) -> ssl.SSLContext | None:
    """An SSL context when a CA or client certificate is configured (or the URL is tls://)."""
    wants_tls = bool(cfg.tls_ca or cfg.tls_cert) or cfg.url.startswith("tls://")
    if not wants_tls:
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls_ca or None)
    if cfg.tls_cert:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key or None)
    return ctx


def credential_options(cfg: NatsConfig) -> dict[str, Any]:
    """user/password, token, nkey seed file and creds file, as nats-py keyword arguments."""
    opts: dict[str, Any] = {}
    if cfg.user:
        opts["user"] = cfg.user
        opts["password"] = cfg.password
    if cfg.token:
        opts["token"] = cfg.token
    if cfg.nkey_seed_file:
        if not Path(cfg.nkey_seed_file).is_file():
            raise FileNotFoundError(f"nats.nkey_seed_file {cfg.nkey_seed_file!r} does not exist")
        opts["nkeys_seed"] = cfg.nkey_seed_file
    if cfg.creds_file:
        if not Path(cfg.creds_file).is_file():
            raise FileNotFoundError(f"nats.creds_file {cfg.creds_file!r} does not exist")
        opts["user_credentials"] = cfg.creds_file
    return opts


def servers(url: str) -> list[str]:
    """The comma-separated server list of a NATS URL setting."""
    return [u.strip() for u in url.split(",") if u.strip()]


class _Url(Protocol):
    @property
    def scheme(self) -> str: ...

    @property
    def hostname(self) -> str | None: ...

    @property
    def port(self) -> int | None: ...


def server_text(url: _Url) -> str:
    """``nats://host:port`` of a parsed server URL, without user, password or token."""
    host = url.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = url.port
    except ValueError:
        port = None
    return f"{url.scheme}://{host}" + (f":{port}" if port else "")


def display_url(url: str) -> str:
    """A NATS URL setting as it may be logged: each server without credentials."""
    return ",".join(server_text(urlsplit(u if "://" in u else f"nats://{u}")) for u in servers(url)) or url
