"""The bus connects with every credential kind: user/password, token, NKey seed, creds
file (JWT, operator mode) and TLS with a client certificate — each against a real
nats-server configured to require it.  A wrong credential is refused with one clear line
(from the bus, and from `tmcd run` as a real process), and the server lets no connection in."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nkeys
import pytest

from tests.helpers import NatsWithConfig, free_port, get, kill, read_until, start_tmcd, wait_for
from tests.pki import make_certs
from tmcd.bus import Bus, BusError
from tmcd.config import NatsConfig
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics

HINT = "the server rejected tmcd's credentials: check nats.user/password, token, creds_file, ..."
"""What the bus says after ``authorization violation`` (tmcd/bus/natserrors.py)."""


@dataclass
class AuthServer:
    """A nats-server that requires a credential, with its monitoring endpoint (to see who got in)."""

    nats: EmbeddedNats
    monitor: str

    @property
    def url(self) -> str:
        return self.nats.url

    async def connections(self) -> tuple[int, dict[int, str]]:
        """(client connections open now, connection id -> why it was closed for the closed ones)."""
        async with aiohttp.ClientSession() as s:
            status, text = await get(s, f"{self.monitor}/connz")
            assert status == 200, text
            now_open = int(json.loads(text)["num_connections"])
            status, text = await get(s, f"{self.monitor}/connz?state=closed")
            assert status == 200, text
        return now_open, {c["cid"]: c["reason"] for c in json.loads(text)["connections"]}


Serve = Callable[[str], AuthServer]


@pytest.fixture
def auth_server(serve: NatsWithConfig) -> Serve:
    """Start a nats-server with the given configuration, and monitoring on loopback."""

    def start(conf: str) -> AuthServer:
        monitor = f"127.0.0.1:{free_port()}"
        return AuthServer(serve(f'{conf}\nhttp: "{monitor}"\n'), f"http://{monitor}")

    return start


async def _roundtrip(cfg: NatsConfig, url: str) -> None:
    bus = Bus(cfg, SelfMetrics(), url=url)
    await bus.connect(retry=False)
    try:
        assert bus.connected
        await bus.flush()
    finally:
        await bus.close()


async def assert_refused(cfg: NatsConfig, server: AuthServer) -> None:
    """The bus cannot connect with ``cfg``: one clear line, and the server let no connection in."""
    _, closed_before = await server.connections()
    with pytest.raises(BusError) as info:
        await _roundtrip(cfg, server.url)
    assert str(info.value) == f"cannot connect to NATS at {server.url}: authorization violation ({HINT})"
    await assert_nobody_got_in(server, closed_before)


async def assert_nobody_got_in(server: AuthServer, closed_before: dict[int, str]) -> None:
    """No client connection is open, and each one closed since ``closed_before`` failed to authenticate."""

    async def refused() -> dict[int, str] | None:
        now_open, closed = await server.connections()
        new = {cid: why for cid, why in closed.items() if cid not in closed_before}
        return new if now_open == 0 and new else None

    new = await wait_for(refused, what="the refused connections closed by the server")
    assert set(new.values()) == {"Authentication Failure"}, new


async def test_user_password(auth_server: Serve) -> None:
    server = auth_server('authorization { users = [ { user: "alice", password: "s3cret" } ] }\n')
    await _roundtrip(NatsConfig(user="alice", password="s3cret"), server.url)
    await assert_refused(NatsConfig(user="alice", password="wrong"), server)


async def test_token(auth_server: Serve) -> None:
    server = auth_server('authorization { token: "t0ken" }\n')
    await _roundtrip(NatsConfig(token="t0ken"), server.url)
    await assert_refused(NatsConfig(token="nope"), server)


def _nkey_server(auth_server: Serve, tmp_path: Path) -> tuple[AuthServer, Path, Path]:
    """A server that lets in one NKey user: (server, that user's seed file, another user's seed file)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    right, wrong = tmp_path / "user.nk", tmp_path / "other.nk"
    right.write_bytes(seed)
    wrong.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    return auth_server(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n'), right, wrong


async def test_nkey_seed_file(auth_server: Serve, tmp_path: Path) -> None:
    server, right, wrong = _nkey_server(auth_server, tmp_path)
    await _roundtrip(NatsConfig(nkey_seed_file=str(right)), server.url)
    await assert_refused(NatsConfig(nkey_seed_file=str(wrong)), server)


async def test_tmcd_run_with_a_wrong_nkey_seed_says_why_in_one_line(auth_server: Serve, tmp_path: Path) -> None:
    server, _, wrong = _nkey_server(auth_server, tmp_path)
    await tmcd_run_is_refused(server, tmp_path, {"TMCD_NATS_NKEY_SEED_FILE": str(wrong)})


async def tmcd_run_is_refused(server: AuthServer, tmp_path: Path, env: dict[str, str]) -> None:
    """`tmcd run` with a credential the server rejects: a one-line warning naming the URL and the
    reason, no traceback, no connection let in, and SIGTERM still ends it cleanly."""
    _, closed_before = await server.connections()
    proc = await start_tmcd(
        *("run", "--nats-url", server.url, "--data-dir", str(tmp_path / "data")),
        *("--http-listen", "127.0.0.1:0", "--agents", "metrics"),
        env=env,
    )
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        line = await read_until(proc.stderr, "cannot connect to NATS", seen)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        seen.append((await proc.stderr.read()).decode())
    finally:
        await kill(proc)
    assert code == 0, "".join(seen)
    message = line.rstrip("\n").split(" WARNING tmcd.bus: ", 1)[1]
    assert re.fullmatch(
        rf"cannot connect to NATS at {re.escape(server.url)} "
        rf"\(authorization violation \({re.escape(HINT)}\)\); retrying in \d+\.\ds",
        message,
    ), message
    assert "Traceback" not in "".join(seen)
    await assert_nobody_got_in(server, closed_before)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(claims: dict[str, object], signer: nkeys.KeyPair) -> str:
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {**claims, "iat": int(time.time()), "iss": signer.public_key.decode()}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode()
    body = _b64(json.dumps(claims).encode())
    sig = _b64(signer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{sig}"


def _keypair(prefix: int) -> tuple[bytes, nkeys.KeyPair]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed, nkeys.from_seed(seed)


def _account_jwt(account: nkeys.KeyPair, name: str, operator: nkeys.KeyPair) -> str:
    limits = {"conn": -1, "subs": -1, "payload": -1, "mem_storage": -1, "disk_storage": -1}
    claims = {"sub": account.public_key.decode(), "name": name, "nats": {"type": "account", "version": 2}}
    claims["nats"]["limits"] = limits  # type: ignore[index]
    return _jwt(claims, operator)


def _creds(path: Path, user: nkeys.KeyPair, seed: bytes, account: nkeys.KeyPair) -> Path:
    """A creds file: a JWT for ``user`` issued by ``account``, and ``seed`` (the user's own, normally)."""
    user_jwt = _jwt(
        {
            "sub": user.public_key.decode(),
            "name": "tmcd",
            "nats": {"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1},
        },
        account,
    )
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    return path


def _operator_mode(auth_server: Serve, tmp_path: Path) -> tuple[AuthServer, Path, dict[str, Path]]:
    """A server in operator mode that knows one account: (server, creds of a user of that account,
    creds it must refuse by what is wrong with them)."""
    _, operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, system = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, unknown = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)  # signed by nobody the server trusts
    sys_pub, op_pub, acc_pub = system.public_key.decode(), operator.public_key.decode(), account.public_key.decode()
    sys_jwt = _jwt({"sub": sys_pub, "name": "SYS", "nats": {"type": "account", "version": 2}}, operator)
    op_jwt = _jwt({"sub": op_pub, "name": "op", "nats": {"type": "operator", "version": 2}}, operator)
    (tmp_path / "op.jwt").write_text(op_jwt)
    server = auth_server(
        f'operator: "{tmp_path / "op.jwt"}"\nsystem_account: {sys_pub}\nresolver: MEMORY\n'
        f'resolver_preload: {{ {acc_pub}: "{_account_jwt(account, "acc", operator)}", {sys_pub}: "{sys_jwt}" }}\n'
    )
    user_seed, user = _keypair(nkeys.PREFIX_BYTE_USER)
    other_seed, _ = _keypair(nkeys.PREFIX_BYTE_USER)
    right = _creds(tmp_path / "tmcd.creds", user, user_seed, account)
    wrong = {
        "another account": _creds(tmp_path / "other-account.creds", user, user_seed, unknown),
        "another user's seed": _creds(tmp_path / "other-user.creds", user, other_seed, account),
    }
    return server, right, wrong


async def test_creds_file_operator_mode(auth_server: Serve, tmp_path: Path) -> None:
    server, right, wrong = _operator_mode(auth_server, tmp_path)
    await _roundtrip(NatsConfig(creds_file=str(right)), server.url)
    for what, creds in wrong.items():
        try:
            await assert_refused(NatsConfig(creds_file=str(creds)), server)
        except AssertionError as exc:
            raise AssertionError(f"creds with {what}: {exc}") from exc


async def test_tmcd_run_with_creds_of_another_account_says_why_in_one_line(auth_server: Serve, tmp_path: Path) -> None:
    server, _, wrong = _operator_mode(auth_server, tmp_path)
    await tmcd_run_is_refused(server, tmp_path, {"TMCD_NATS_CREDS_FILE": str(wrong["another account"])})


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return make_certs(tmp_path / "pki")


async def test_tls_with_client_certificate(auth_server: Serve, certs: Path) -> None:
    server = auth_server(
        f'tls {{ cert_file: "{certs / "server.pem"}", key_file: "{certs / "server.key"}", '
        f'ca_file: "{certs / "ca.pem"}", verify: true }}\n'
    )
    assert server.url.startswith("tls://")
    cfg = NatsConfig(
        url=server.url,
        tls_ca=str(certs / "ca.pem"),
        tls_cert=str(certs / "client.pem"),
        tls_key=str(certs / "client.key"),
    )
    await _roundtrip(cfg, server.url)
    with pytest.raises(BusError):  # no client certificate: the server refuses
        await _roundtrip(NatsConfig(url=server.url, tls_ca=str(certs / "ca.pem")), server.url)


async def test_missing_credential_files_are_named() -> None:
    with pytest.raises(BusError, match=r"nats.creds_file .* does not exist"):
        await _roundtrip(NatsConfig(creds_file="/nonexistent/x.creds"), "nats://127.0.0.1:1")
    with pytest.raises(BusError, match=r"nats.nkey_seed_file .* does not exist"):
        await _roundtrip(NatsConfig(nkey_seed_file="/nonexistent/x.nk"), "nats://127.0.0.1:1")
