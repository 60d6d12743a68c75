"""Throw-away certificates for TLS tests, made with the openssl command: a CA, and a server and a
client certificate it signed for 127.0.0.1 and localhost (valid one day)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests import tools


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([tools.require("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> Path:
    """Write ``ca.pem``/``ca.key``, ``server.pem``/``server.key`` and ``client.pem``/``client.key``
    into ``d`` (created); returns ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=tmcd-test-ca", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext", cwd=d)  # fmt: skip
    return d
