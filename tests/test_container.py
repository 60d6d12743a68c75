"""The container image, checked without a docker daemon: it runs as a non-root user, the data
dir is its volume and the only place tmcd writes (so a read-only root filesystem works: a real
`tmcd run` with the image's environment, its embedded nats-server included, leaves its working
directory, HOME and TMPDIR empty), and its HEALTHCHECK, run as written, probes /livez on the
configured port over HTTP and HTTPS."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.dockerfile import image
from tests.helpers import daemon_config, free_port, kill, running_daemon, wait_ready
from tests.pki import make_certs
from tmcd.config import parse_listen


def test_runs_as_a_non_root_user() -> None:
    img = image()
    assert img.uid == 10001 and img.user == "10001:10001"
    assert any(f"useradd --system --uid {img.uid} " in run for run in img.runs)
    assert img.entrypoint == ["tmcd"] and img.cmd == ["run"]


def test_the_data_dir_is_the_volume_and_python_writes_no_bytecode() -> None:
    img = image()
    data = img.env["TMCD_DATA_DIR"]
    assert img.volumes == [data] == ["/var/lib/tmcd/data"]
    # created in the image, owned by the user: a fresh volume gets that owner
    assert any(f"install -d -o {img.uid} -g {img.uid} -m 0750 {data}" in run for run in img.runs)
    assert img.env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_the_exposed_port_is_the_listen_port() -> None:
    img = image()
    host, port = parse_listen(img.env["TMCD_HTTP_LISTEN"])
    assert host == "0.0.0.0" and img.expose == [port] == [img.http_port]


async def _healthcheck(env: dict[str, str]) -> int:
    """The image's HEALTHCHECK command, run as written (its ``python`` is this interpreter)."""
    cmd = image().healthcheck
    assert cmd[0] == "python" and "/livez" in cmd[-1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *cmd[1:], env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await asyncio.wait_for(proc.wait(), 30)


async def test_read_only_root_and_the_healthcheck(tmp_path: Path) -> None:
    """tmcd as the image runs it (its ENV, embedded NATS, no config): every write lands in the data
    dir; the working directory, HOME and TMPDIR (read-only in the container) stay empty."""
    img = image()
    root, home, tmp, data = (tmp_path / d for d in ("root", "home", "tmp", "data"))
    for d in (root, home, tmp):
        d.mkdir()
    port = free_port()
    env = {
        **img.env,
        "TMCD_HTTP_LISTEN": f"127.0.0.1:{port}",  # loopback here; the image listens on all interfaces
        "TMCD_DATA_DIR": str(data),
        "HOME": str(home),
        "TMPDIR": str(tmp),
    }
    assert "TMCD_NATS_URL" not in env
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("TMCD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tmcd.cli.main", *img.cmd, cwd=root, env={**base_env, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_ready(f"http://127.0.0.1:{port}", proc)
        assert await _healthcheck({"TMCD_HTTP_LISTEN": env["TMCD_HTTP_LISTEN"]}) == 0
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            await kill(proc)
    assert proc.returncode == 0, err.decode()
    assert [p.name for d in (root, home, tmp) for p in d.iterdir()] == []
    assert (data / "jetstream").is_dir() and (data / "nats.port").is_file()
    # not listening any more: the check fails
    assert await _healthcheck({"TMCD_HTTP_LISTEN": env["TMCD_HTTP_LISTEN"]}) != 0


async def test_healthcheck_over_https(nats_url: str, durable_prefix: str, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "pki")
    tls = {"TMCD_HTTP_TLS_CERT": str(certs / "server.pem"), "TMCD_HTTP_TLS_KEY": str(certs / "server.key")}
    cfg = daemon_config(
        nats_url,
        tmp_path / "data",
        **{"http.tls_cert": tls["TMCD_HTTP_TLS_CERT"], "http.tls_key": tls["TMCD_HTTP_TLS_KEY"]},
        **{"consumer.durable_prefix": durable_prefix},
    )
    async with running_daemon(cfg) as daemon:
        listen = {"TMCD_HTTP_LISTEN": f"0.0.0.0:{daemon.http.port}"}
        assert await _healthcheck({**listen, **tls}) == 0
        assert await _healthcheck(listen) != 0  # plain HTTP to the TLS port
