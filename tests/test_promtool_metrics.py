"""`promtool check metrics` on a real daemon's /metrics, fed by the simulator.

The daemon runs in-process on its own nats-server (a fresh JetStream, so its durable
consumers see only this test's messages); the simulator publishes heartbeats, sync batches
(with failures) and connection state for three clusters, and the test adds a placement
decision, one mock-mesh window of WorkloadStats and one malformed message, so that every
metric family has samples.

promtool (Debian package ``prometheus``; ``.ci/run`` installs it) only parses the Prometheus
text format (prometheus/prometheus#8932), so the OpenMetrics exposition is checked with
prometheus-client's strict OpenMetrics parser instead, and against the text exposition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import aiohttp
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests import tools
from tests.helpers import daemon_config, running_daemon, sample, wait_for
from tmcd.bus import Bus
from tmcd.config import NatsConfig
from tmcd.contracts import subjects
from tmcd.contracts.messages import PlacementDecision, TrafficWeights, WorkloadStats
from tmcd.metrics import catalog
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.sim.mesh import MeshModel, MeshOptions
from tmcd.sim.model import SimOptions
from tmcd.sim.runner import SimStats, run_sim

OPENMETRICS = "application/openmetrics-text; version=1.0.0"

ONLY_AFTER: dict[str, str] = {
    "tmc_agent_restarts_total": "an agent crashed",
    **{s.name: "a canary rollout ran" for s in catalog.SPECS if s.group == "canary"},
}
"""Catalog metrics with no samples until something this test does not provoke happens."""
NOT_RUNNING = {s.name for s in catalog.SPECS if s.group == "kube"}
"""Catalog metrics of an agent this daemon does not run (the kube agent: watch mode is off)."""


def promtool() -> str:
    return tools.require("promtool")


def total(text: str, name: str) -> float:
    """Sum of every sample called ``name`` in a text exposition."""
    out = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            out += float(line.rpartition(" ")[2])
    return out


async def feed(url: str) -> tuple[SimStats, list[WorkloadStats]]:
    """One second of a simulated fleet, a placement decision, a window of the mock mesh (with a
    canary on one cluster) and a malformed heartbeat; the sim's figures and the mesh's reports."""
    bus = Bus(NatsConfig(), SelfMetrics(), url=url)
    await bus.connect(retry=False)
    try:
        opts = SimOptions(
            clusters=3,
            rate=200,
            seed=1,
            heartbeat_interval=0.2,
            error_ratio={"sim-001": 0.5},  # failures from the first heartbeat on: tmc_syncer_errors_total
            fault_after=0.0,
        )
        stats = await run_sim(bus, opts, asyncio.Event(), duration=1.0)
        decision = PlacementDecision(placement="web", timestamp=time.time(), selected=["sim-001"])
        await bus.js_publish(subjects.placement_decision("web"), decision)
        mesh = MeshModel(MeshOptions(clusters=3, rps=50, seed=1), start=0.0)
        weights = {"stable": 80, "canary": 20}
        mesh.apply(
            TrafficWeights(namespace="shop", route="web", timestamp=0.0, weights=weights, clusters=["sim-001"]), 0.0
        )
        windows = mesh.window(10.0)
        for w in windows:  # tmc_workload_*
            await bus.js_publish(subjects.workload_stats(w.cluster, w.namespace, w.workload, w.track), w)
        await bus.publish_raw(subjects.syncer_heartbeat("sim-002"), b"{not json")  # tmc_events_invalid_total
        await bus.flush()
        return stats, windows
    finally:
        await bus.close()


async def get_metrics(session: aiohttp.ClientSession, base_url: str, accept: str | None = None) -> tuple[str, str]:
    """(content type, body) of GET /metrics."""
    headers = {"Accept": accept} if accept else {}
    async with session.get(f"{base_url}/metrics", headers=headers) as r:
        assert r.status == 200, await r.text()
        return r.headers["Content-Type"], await r.text()


async def promtool_check(tool: str, body: str) -> tuple[int, str]:
    """Exit code and combined output of `promtool check metrics` reading ``body`` on stdin."""
    proc = await asyncio.create_subprocess_exec(
        tool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(body.encode()), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def samples(families: Iterable[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """tmc_* samples of parsed families as {(name, sorted labels): value}."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in families:
        for s in fam.samples:
            if s.name.startswith("tmc_"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_pass_promtool_and_cover_the_catalog(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    tool = promtool()
    async with (
        running_daemon(
            daemon_config(nats_server.url, tmp_path, **{"health.interval": 0.2, "health.startup_grace": 0.0})
        ) as d,
        aiohttp.ClientSession() as session,
    ):
        stats, windows = await feed(nats_server.url)
        assert len(windows) == 4, windows
        assert stats.sync > 0 and stats.sync_failed > 0 and stats.heartbeats >= 6, stats
        base = d.http.base_url
        syncer_messages = stats.sync + stats.heartbeats + stats.conn

        async def settled() -> str | None:
            _, text = await get_metrics(session, base)
            done = (
                sample(text, "tmc_events_processed_total", stream="TMC_SYNCER") == syncer_messages
                and sample(text, "tmc_events_processed_total", stream="TMC_PLACEMENT") == 1
                and sample(text, "tmc_events_processed_total", stream="TMC_WORKLOAD") == len(windows)
                and total(text, "tmc_events_invalid_total") == 1
            )
            return text if done else None

        text = await wait_for(settled, timeout=30, what="the daemon to ingest everything published", step=0.1)
        om_type, om = await get_metrics(session, base, OPENMETRICS)
        text_type, text = await get_metrics(session, base)

    assert text_type.startswith("text/plain; version=0.0.4")
    assert om_type.startswith("application/openmetrics-text; version=1.0.0")

    # promtool: parses and lints the text format; any output line is a lint problem
    code, out = await promtool_check(tool, text)
    assert (code, out.strip()) == (0, ""), f"promtool check metrics (text format) exited {code}:\n{out}"

    # OpenMetrics: strict grammar (# EOF, family/sample naming), and the same tmc_* series and values
    assert om.endswith("# EOF\n")
    om_samples = samples(parse_openmetrics(om))  # type: ignore[no-untyped-call]
    text_samples = samples(parse_text(text))
    assert om_samples == text_samples

    # every catalog metric has samples (or at least its family, for the few that need a failure)
    names = {name for name, _ in text_samples}
    missing = [
        s.name
        for s in catalog.SPECS
        if s.name not in ONLY_AFTER and s.name not in NOT_RUNNING and not set(s.series_names) & names
    ]
    assert missing == [], f"catalog metrics without samples after the simulator ran: {missing}"
    for name in ONLY_AFTER:
        assert f"\n# TYPE {name} {catalog.spec(name).kind}\n" in text, f"{name} is not even declared"
    assert sum(v for (n, _), v in text_samples.items() if n == "tmc_syncer_resources_synced_total") == stats.sync
    assert sum(v for (n, _), v in text_samples.items() if n == "tmc_syncer_errors_total") == stats.sync_failed
    requests = sum(w.requests for w in windows)
    assert sum(v for (n, _), v in text_samples.items() if n == "tmc_workload_requests_total") == requests
    assert (
        sum(v for (n, _), v in text_samples.items() if n == "tmc_workload_request_duration_seconds_count") == requests
    )
