"""End to end: a real Prometheus server scrapes a real daemon fed by the simulator.

Prometheus (Debian package ``prometheus``; ``.ci/run`` installs it) scrapes the in-process
daemon every second and evaluates the repository's alert rules; the test then asks its
HTTP API for the series a dashboard or alert would use, and compares them with what the
simulator published and what the daemon itself reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

import tmcd
from tests import tools
from tests.helpers import daemon_config, free_port, running_daemon, sample, scrape
from tmcd.bus import Bus
from tmcd.config import NatsConfig
from tmcd.contracts import subjects
from tmcd.contracts.messages import TrafficWeights, WorkloadStats
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.sim.mesh import MeshModel, MeshOptions
from tmcd.sim.model import SimOptions, cluster_names
from tmcd.sim.runner import SimStats, run_sim

RULES = Path(__file__).resolve().parents[1] / "config" / "prometheus" / "tmc-alerts.yaml"
ALERT_NAMES = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
DEADLINE = 30.0
"""Seconds to wait for Prometheus to start, and for its answers to converge."""
CLUSTERS = 3


def prometheus_binary() -> str:
    return tools.require("prometheus")


def log_tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:  # runs in the child: it gets SIGTERM if pytest dies without reaping it
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def write_config(workdir: Path, target: str) -> Path:
    """prometheus.yml: scrape ``target`` as job tmcd every second, evaluate the repo's alert rules."""
    workdir.mkdir()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "tmcd", "static_configs": [{"targets": [target]}]}],
    }
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@contextlib.asynccontextmanager
async def running_prometheus(binary: str, workdir: Path, target: str) -> AsyncIterator[str]:
    """A Prometheus server on loopback scraping ``target`` (host:port) every second; yields its URL."""
    config_file = write_config(workdir, target)
    listen = f"127.0.0.1:{free_port()}"
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={listen}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    base = f"http://{listen}"
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        async with aiohttp.ClientSession() as session:
            while True:
                if proc.returncode is not None:
                    pytest.fail(f"prometheus exited with {proc.returncode}:\n{log_tail(log_path)}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/-/ready") as r:
                        if r.status == 200:
                            break
                if loop.time() > deadline:
                    pytest.fail(f"prometheus not ready after {DEADLINE}s:\n{log_tail(log_path)}")
                await asyncio.sleep(0.1)
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def simulate(url: str) -> tuple[SimStats, list[WorkloadStats]]:
    """Four seconds of a three-cluster fleet at 100 sync events/s, heartbeats every 0.5 s, and
    three windows of the mock mesh's route shop/web (20 % canary on sim-001)."""
    bus = Bus(NatsConfig(), SelfMetrics(), url=url)
    await bus.connect(retry=False)
    try:
        mesh = MeshModel(MeshOptions(clusters=CLUSTERS, rps=50, seed=1), start=0.0)
        weights = {"stable": 80, "canary": 20}
        mesh.apply(
            TrafficWeights(namespace="shop", route="web", timestamp=0.0, weights=weights, clusters=["sim-001"]), 0.0
        )
        windows = [w for end in (10.0, 20.0, 30.0) for w in mesh.window(end)]
        for w in windows:
            await bus.js_publish(subjects.workload_stats(w.cluster, w.namespace, w.workload, w.track), w)
        opts = SimOptions(clusters=CLUSTERS, rate=100, seed=1, heartbeat_interval=0.5)
        return await run_sim(bus, opts, asyncio.Event(), duration=4.0), windows
    finally:
        await bus.close()


class Api:
    """The bits of Prometheus' HTTP API the test reads."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.base}{path}", params=params) as r:
            body = await r.json()
            assert r.status == 200 and body["status"] == "success", f"{path} {params}: {r.status} {body}"
            return body["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant vector result: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = await self.get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    async def scalar(self, promql: str) -> float | None:
        """The value of a query with one result (None when it has none)."""
        result = await self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


async def converge(checks: dict[str, Callable[[], Awaitable[object]]], timeout: float = DEADLINE) -> None:
    """Poll every check until each returns None (a check returns what it saw while unmet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = dict(checks)
    seen: dict[str, object] = {}
    while pending:
        for name, check in list(pending.items()):
            got = await check()
            if got is None:
                del pending[name]
            else:
                seen[name] = got
        if not pending:
            return
        if loop.time() > deadline:
            unmet = "\n".join(f"  {name}: got {seen[name]!r}" for name in pending)
            raise AssertionError(f"after {timeout}s, still unmet:\n{unmet}")
        await asyncio.sleep(0.25)


@pytest.mark.slow
async def test_prometheus_scrapes_daemon_and_loads_alert_rules(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    binary = prometheus_binary()
    cfg = daemon_config(nats_server.url, tmp_path / "tmcd")
    async with (
        running_daemon(cfg) as d,
        running_prometheus(binary, tmp_path / "prometheus", f"127.0.0.1:{d.http.port}") as prom,
        aiohttp.ClientSession() as session,
    ):
        stats, windows = await simulate(nats_server.url)
        assert stats.sync > 0 and stats.heartbeats >= CLUSTERS, stats
        api = Api(session, prom)
        daemon_url = d.http.base_url
        syncer_messages = stats.sync + stats.heartbeats + stats.conn
        clusters = cluster_names(CLUSTERS)

        async def target_up() -> object:
            up = await api.query('up{job="tmcd"}')
            return None if [r["value"][1] for r in up] == ["1"] else up

        async def target_healthy() -> object:
            targets = (await api.get("/api/v1/targets", state="active"))["activeTargets"]
            seen = [(t["labels"]["job"], t["health"], t["lastError"]) for t in targets]
            return None if seen == [("tmcd", "up", "")] else seen

        async def synced_matches_daemon() -> object:
            # the daemon first: everything the simulator published is ingested ...
            text = await scrape(daemon_url)
            processed = sample(text, "tmc_events_processed_total", stream="TMC_SYNCER")
            daemon_synced = sum(
                float(line.rpartition(" ")[2])
                for line in text.splitlines()
                if line.startswith("tmc_syncer_resources_synced_total{")
            )
            if processed != syncer_messages or daemon_synced != stats.sync:
                return f"daemon processed={processed}/{syncer_messages} synced={daemon_synced}/{stats.sync}"
            # ... then Prometheus' latest scrape has the daemon's final value
            prom_synced = await api.scalar("sum(tmc_syncer_resources_synced_total)")
            return None if prom_synced == daemon_synced else f"prometheus {prom_synced}, daemon {daemon_synced}"

        async def cluster_info() -> object:
            n = await api.scalar("count(tmc_cluster_info)")
            return None if n == CLUSTERS else n

        async def connection_up() -> object:
            up = {r["metric"]["cluster"]: r["value"][1] for r in await api.query("tmc_connection_up")}
            return None if up == dict.fromkeys(clusters, "1") else up

        async def build_info() -> object:
            info = [(r["metric"].get("version"), r["value"][1]) for r in await api.query("tmc_build_info")]
            return None if info == [(tmcd.__version__, "1")] else info

        async def openmetrics_scraped() -> object:
            # Prometheus asks for OpenMetrics first: families are then named as in their TYPE lines
            # (tmc_build of type info); from the text format it would record tmc_build_info, a gauge
            meta = await api.get("/api/v1/metadata", metric="tmc_build")
            return None if [m["type"] for m in meta.get("tmc_build", [])] == ["info"] else meta

        requests = {t: sum(w.requests for w in windows if w.track == t) for t in ("stable", "canary")}

        async def workload_requests() -> object:
            # the canary dashboard's selectors, without rate(): the windows were published at once
            got = await api.query('sum by (track) (tmc_workload_requests_total{namespace="shop", workload="web"})')
            seen = {r["metric"]["track"]: float(r["value"][1]) for r in got}
            return None if seen == requests else seen

        async def workload_median() -> object:
            # the mesh's median latency is 50 ms: in the exported bucket (0.0316228, 0.0562341]
            q = await api.scalar(
                "histogram_quantile(0.5, sum by (le) "
                '(tmc_workload_request_duration_seconds_bucket{workload="web", track="stable"}))'
            )
            return None if q is not None and 0.0316228 < q <= 0.0562341 else q

        async def rules_loaded() -> object:
            groups = (await api.get("/api/v1/rules"))["groups"]
            seen = [(g["name"], g["file"], [(r["name"], r["health"]) for r in g["rules"]]) for g in groups]
            ok = (
                len(groups) == 1
                and groups[0]["name"] == "tmc"
                and groups[0]["file"] == str(RULES)
                and len(groups[0]["rules"]) == len(ALERT_NAMES)
                and all(r["type"] == "alerting" and r["health"] == "ok" for r in groups[0]["rules"])
            )
            return None if ok else seen

        await converge(
            {
                'up{job="tmcd"} == 1': target_up,
                "target healthy": target_healthy,
                "sum(tmc_syncer_resources_synced_total) == daemon's": synced_matches_daemon,
                f"count(tmc_cluster_info) == {CLUSTERS}": cluster_info,
                "tmc_connection_up == 1 for every cluster": connection_up,
                "tmc_build_info{version=tmcd.__version__}": build_info,
                "scraped as OpenMetrics": openmetrics_scraped,
                f"sum by (track) (tmc_workload_requests_total) == {requests}": workload_requests,
                "histogram_quantile(0.5, tmc_workload_request_duration_seconds_bucket) ~ 50 ms": workload_median,
                f"rule group tmc: {len(ALERT_NAMES)} alerting rules evaluated without error": rules_loaded,
            }
        )
