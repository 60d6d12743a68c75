"""The bus connects with every credential kind: user/password, token, NKey seed, creds
file (JWT, operator mode) and TLS with a client certificate — each against a real
nats-server configured to require it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nkeys
import pytest

from tmcd.bus import Bus, BusError
from tmcd.config import NatsConfig
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics


def _server(bin_: str, tmp: Path, conf: str) -> EmbeddedNats:
    path = tmp / "server.conf"
    path.write_text(conf)
    server = EmbeddedNats(bin_, tmp / "store", config_file=path)
    server.start()
    return server


@pytest.fixture
def serve(nats_server_bin: str, tmp_path: Path) -> Iterator[object]:
    started: list[EmbeddedNats] = []

    def start(conf: str) -> EmbeddedNats:
        s = _server(nats_server_bin, tmp_path, conf)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


async def _roundtrip(cfg: NatsConfig, url: str) -> None:
    bus = Bus(cfg, SelfMetrics(), url=url)
    await bus.connect(retry=False)
    try:
        assert bus.connected
        await bus.flush()
    finally:
        await bus.close()


async def test_user_password(serve: object) -> None:
    server = serve('authorization { users = [ { user: "alice", password: "s3cret" } ] }\n')  # type: ignore[operator]
    await _roundtrip(NatsConfig(user="alice", password="s3cret"), server.url)
    with pytest.raises(BusError, match="cannot connect"):
        await _roundtrip(NatsConfig(user="alice", password="wrong"), server.url)


async def test_token(serve: object) -> None:
    server = serve('authorization { token: "t0ken" }\n')  # type: ignore[operator]
    await _roundtrip(NatsConfig(token="t0ken"), server.url)
    with pytest.raises(BusError):
        await _roundtrip(NatsConfig(token="nope"), server.url)


async def test_nkey_seed_file(serve: object, tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    server = serve(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')  # type: ignore[operator]
    await _roundtrip(NatsConfig(nkey_seed_file=str(seed_file)), server.url)


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


async def test_creds_file_operator_mode(serve: object, tmp_path: Path) -> None:
    _, operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, system = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    sys_pub = system.public_key.decode()
    sys_jwt = _jwt({"sub": sys_pub, "name": "SYS", "nats": {"type": "account", "version": 2}}, operator)
    user_seed, user = _keypair(nkeys.PREFIX_BYTE_USER)
    op_pub, acc_pub = operator.public_key.decode(), account.public_key.decode()
    op_jwt = _jwt({"sub": op_pub, "name": "op", "nats": {"type": "operator", "version": 2}}, operator)
    acc_jwt = _jwt(
        {
            "sub": acc_pub,
            "name": "acc",
            "nats": {
                "type": "account",
                "version": 2,
                "limits": {"conn": -1, "subs": -1, "payload": -1, "mem_storage": -1, "disk_storage": -1},
            },
        },
        operator,
    )
    user_jwt = _jwt(
        {
            "sub": user.public_key.decode(),
            "name": "tmcd",
            "nats": {"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1},
        },
        account,
    )
    (tmp_path / "op.jwt").write_text(op_jwt)
    creds = tmp_path / "tmcd.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    server = serve(  # type: ignore[operator]
        f'operator: "{tmp_path / "op.jwt"}"\nsystem_account: {sys_pub}\nresolver: MEMORY\n'
        f'resolver_preload: {{ {acc_pub}: "{acc_jwt}", {sys_pub}: "{sys_jwt}" }}\n'
    )
    await _roundtrip(NatsConfig(creds_file=str(creds)), server.url)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=tmcd-test-ca", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext", cwd=d)  # fmt: skip
    return d


async def test_tls_with_client_certificate(serve: object, certs: Path) -> None:
    server = serve(  # type: ignore[operator]
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
