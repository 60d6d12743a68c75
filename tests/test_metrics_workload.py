"""The mesh's WorkloadStats as tmc_workload_* series: the re-binning onto the exported
buckets, malformed stats, the per-cluster cap and forgetting, in the model and inside a
running daemon scraped over HTTP."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

from tests.helpers import daemon_config, nats_connect, running_daemon, sample, scrape, wait_for
from tmcd.contracts import subjects as s
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import HealthChange, LatencyHistogram, TrafficWeights, WorkloadStats
from tmcd.metrics import catalog
from tmcd.metrics.exposition import FastExposition
from tmcd.metrics.workload import InvalidWorkloadStats, WorkloadMetrics, rebin
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.sim.mesh import LATENCY_BOUNDS, MeshModel, MeshOptions

BUCKETS = catalog.WORKLOAD_DURATION_BUCKETS
HIST = "tmc_workload_request_duration_seconds"
WORKLOAD_FAMILIES = (
    "tmc_workload_requests_total",
    "tmc_workload_errors_total",
    f"{HIST}_bucket",
    f"{HIST}_sum",
    f"{HIST}_count",
    "tmc_workload_stats_dropped_total",
)


def stats(
    cluster: str = "c-1",
    workload: str = "web",
    track: str = "stable",
    *,
    requests: int = 10,
    errors: int = 1,
    bounds: list[float] | None = None,
    counts: list[int] | None = None,
    sum_seconds: float = 0.5,
) -> WorkloadStats:
    """A window; by default a histogram on the mesh's bounds with every request at 50 ms."""
    if bounds is None:
        bounds = list(LATENCY_BOUNDS)
        counts = [requests if b >= 0.05 else 0 for b in bounds]
    return WorkloadStats(
        cluster=cluster,
        namespace="shop",
        workload=workload,
        track=track,  # type: ignore[arg-type]
        timestamp=1000.0,
        requests=requests,
        errors=errors,
        latency=LatencyHistogram(bounds=bounds, counts=counts or [], sum_seconds=sum_seconds),
    )


def workload_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("tmc_workload_")]


# -- the model ----------------------------------------------------------------------------------


def test_exported_buckets_are_every_8th_mesh_bound() -> None:
    assert LATENCY_BOUNDS[::8] == BUCKETS
    assert len(BUCKETS) == 17 and (BUCKETS[0], BUCKETS[-1]) == (0.001, 10.0)
    assert catalog.spec(HIST).buckets == BUCKETS


def test_rebin_is_exact_on_the_mesh_bounds() -> None:
    rng = random.Random(7)
    cumulative: list[int] = []
    total = 0
    for _ in LATENCY_BOUNDS:
        total += rng.randrange(5)
        cumulative.append(total)
    assert rebin(LATENCY_BOUNDS, cumulative, BUCKETS) == cumulative[::8]


def test_rebin_other_bounds() -> None:
    # unrounded powers of ten (10**-2.25 = 0.0056234133 > 0.00562341) still match, within 1 ppm
    exact = [10.0 ** (-3 + i / 4) for i in range(17)]
    assert rebin(exact, list(range(1, 18)), BUCKETS) == list(range(1, 18))
    # coarser bounds: the count at the largest bound <= each exported one (a lower bound), 0 below the first
    assert rebin([0.002, 0.05, 0.5], [3, 7, 9], BUCKETS[:10]) == [0, 0, 3, 3, 3, 3, 3, 7, 7, 7]
    assert rebin([], [], BUCKETS[:3]) == [0, 0, 0]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (stats(requests=3, errors=4), "errors (4) exceed requests (3)"),
        (stats(bounds=[0.1, 0.2], counts=[1]), "2 bounds but 1 counts"),
        (stats(bounds=[0.2, 0.1], counts=[1, 2]), "not finite and strictly ascending"),
        (stats(bounds=[0.1, 0.1], counts=[1, 2]), "not finite and strictly ascending"),
        (stats(bounds=[0.1, 0.2], counts=[5, 4]), "not cumulative"),
        (stats(bounds=[0.1, 0.2], counts=[-1, 4]), "not cumulative"),
        (stats(requests=10, bounds=[0.1, 0.2], counts=[5, 11]), "latency counts (11) exceed requests (10)"),
    ],
)
def test_impossible_stats_are_rejected_and_change_nothing(bad: WorkloadStats, message: str) -> None:
    reg = CollectorRegistry(auto_describe=False)
    wm = WorkloadMetrics(reg)
    wm.on_stats(stats(), 1.0)
    before = FastExposition(reg).render()
    with pytest.raises(InvalidWorkloadStats, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        wm.on_stats(bad, 2.0)
    assert (err.value.reason, err.value.kind) == ("invalid_fields", "workload_stats")
    assert FastExposition(reg).render() == before


def test_the_fast_renderer_gives_prometheus_clients_bytes() -> None:
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # as the daemon does
    reg = CollectorRegistry(auto_describe=False)
    wm = WorkloadMetrics(reg)
    for i in range(5):
        wm.on_stats(stats(workload=f"w-{i % 2}", track=("stable", "canary")[i % 2], requests=10 + i), float(i))
    wm.on_stats(stats(workload="no-histogram", bounds=[], counts=[]), 5.0)
    fast = FastExposition(reg)
    assert fast.render() == prometheus_client.generate_latest(reg)
    om = prometheus_client.openmetrics.exposition.generate_latest(reg)  # type: ignore[attr-defined]
    assert fast.render(openmetrics=True) == om


def test_cap_per_cluster_and_forgetting_stale_workloads() -> None:
    reg = CollectorRegistry(auto_describe=False)
    wm = WorkloadMetrics(reg, max_workloads_per_cluster=2)
    assert wm.on_stats(stats(workload="a"), 0.0)
    assert wm.on_stats(stats(workload="b"), 10.0)
    assert not wm.on_stats(stats(workload="c"), 10.0)  # a third workload on c-1
    assert wm.on_stats(stats(workload="a", track="canary"), 10.0)  # a known workload's new track
    assert wm.on_stats(stats("c-2", workload="c"), 10.0)  # another cluster has its own cap
    text = FastExposition(reg).render().decode()
    assert sample(text, "tmc_workload_stats_dropped_total", cluster="c-1") == 1
    assert sample(text, "tmc_workload_stats_dropped_total", cluster="c-2") == 0
    assert not [line for line in workload_lines(text) if 'cluster="c-1"' in line and 'workload="c"' in line]
    # staleness is per workload: a was last reported (its canary track) at 10, like b
    assert wm.stale(now=105.0, forget_after=100.0) == []
    assert wm.stale(now=111.0, forget_after=100.0) == ["c-1", "c-2"]
    assert wm.forget_stale("c-1", now=111.0, forget_after=100.0) == 2
    assert "c-1" not in wm.clusters  # nothing left: its dropped counter goes too
    text = FastExposition(reg).render().decode()
    assert not [line for line in workload_lines(text) if 'cluster="c-1"' in line]
    assert wm.on_stats(stats(workload="c"), 120.0)  # the cap has room again
    assert wm.forget("c-2") and not wm.forget("c-2")
    text = FastExposition(reg).render().decode()
    assert {line.split("{")[0] for line in workload_lines(text) if 'cluster="c-2"' in line} == set()


# -- inside a daemon ---------------------------------------------------------------------------------


def expected(windows: list[WorkloadStats]) -> dict[tuple[str, ...], dict[str, Any]]:
    """Per (cluster, namespace, workload, track): totals, cumulative buckets (+Inf last) and sum."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for w in windows:
        key = (w.cluster, w.namespace, w.workload, w.track)
        e = out.setdefault(key, {"requests": 0, "errors": 0, "count": 0, "sum": 0.0, "buckets": [0] * 18})
        e["requests"] += w.requests
        e["errors"] += w.errors
        if w.latency.bounds:
            e["count"] += w.requests
            e["sum"] += w.latency.sum_seconds
            assert list(w.latency.bounds) == list(LATENCY_BOUNDS)
            for i, c in enumerate([*w.latency.counts[::8], w.requests]):
                e["buckets"][i] += c
    return out


def series(text: str, name: str, key: tuple[str, ...], **more: str) -> float:
    cluster, namespace, workload, track = key
    return sample(text, name, cluster=cluster, namespace=namespace, workload=workload, track=track, **more)


async def test_mesh_windows_become_workload_series(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    # the mesh of `tmcd sim mesh`: 3 clusters, route checkout with 30 % canary on sim-001, 3 windows
    mesh = MeshModel(MeshOptions(clusters=3, rps=40, seed=3, stable_error_ratio=0.05), start=0.0)
    weights = TrafficWeights(
        namespace="shop", route="checkout", timestamp=0.0, weights={"stable": 70, "canary": 30}, clusters=["sim-001"]
    )
    assert mesh.apply(weights, 0.0) is not None
    windows = [w for end in (10.0, 20.0, 30.0) for w in mesh.window(end)]
    windows.append(stats("sim-002", "checkout", requests=4, errors=0, bounds=[], counts=[]))  # no histogram
    assert len(windows) == 3 * 4 + 1 and sum(w.errors for w in windows) > 0
    want = expected(windows)
    assert len(want) == 4

    nc = await nats_connect(nats_server.url)
    js = nc.jetstream()
    try:
        async with running_daemon(daemon_config(nats_server.url, tmp_path, agents="metrics")) as d:
            for w in windows:
                await js.publish(s.workload_stats(w.cluster, w.namespace, w.workload, w.track), encode(w))

            async def ingested() -> str | None:
                t = await scrape(d.http.base_url)
                return t if sample(t, "tmc_events_processed_total", stream="TMC_WORKLOAD") == len(windows) else None

            text = await wait_for(ingested, what="the daemon to ingest every window")
    finally:
        await nc.close()

    for key, e in want.items():
        assert series(text, "tmc_workload_requests_total", key) == e["requests"], key
        assert series(text, "tmc_workload_errors_total", key) == e["errors"], key
        got = [series(text, f"{HIST}_bucket", key, le=floatToGoString(b)) for b in (*BUCKETS, float("inf"))]
        assert got == e["buckets"], key
        assert series(text, f"{HIST}_count", key) == e["count"], key
        assert series(text, f"{HIST}_sum", key) == e["sum"], key
    # 4 series x (2 counters + 18 buckets + count + sum), and a dropped counter (0) per cluster
    assert len(workload_lines(text)) == 4 * 22 + 3
    assert sample(text, "tmc_workload_stats_dropped_total", cluster="sim-001") == 0


async def test_cap_malformed_stats_and_forgotten_clusters(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics", **{"metrics.max_workloads_per_cluster": 2})
    nc = await nats_connect(nats_server.url)
    js = nc.jetstream()
    dead: list[tuple[str, str]] = []

    async def on_dead(msg: Any) -> None:
        dead.append((msg.subject, (msg.headers or {}).get("Tmc-Reason", "")))

    await nc.subscribe("tmc.dead.>", cb=on_dead)
    try:
        async with running_daemon(cfg) as d:
            feed = [
                stats("cap-1", "a"),
                stats("cap-1", "b"),
                stats("cap-1", "c"),  # over the cap: dropped
                stats("cap-1", "c", track="canary"),  # dropped again
                stats("cap-1", "a", "canary", requests=5, errors=0),  # a known workload's other track
                stats("cap-1", "a", requests=3, errors=4),  # impossible: dead-lettered, counts nothing
                stats("cap-1", "a", requests=7, bounds=[0.1, 0.05], counts=[1, 2]),  # impossible too
                stats("cap-1", "a", requests=20, errors=2),
                stats("cap-2", "a", requests=1, errors=0),
            ]
            for w in feed:
                await js.publish(s.workload_stats(w.cluster, w.namespace, w.workload, w.track), encode(w))
            base = d.http.base_url

            async def ingested() -> str | None:
                t = await scrape(base)
                done = (
                    sample(t, "tmc_events_processed_total", stream="TMC_WORKLOAD") == len(feed) - 2 and len(dead) == 2
                )
                return t if done else None

            text = await wait_for(ingested, what="every window handled and both bad ones dead-lettered")
            a = ("cap-1", "shop", "a", "stable")
            assert series(text, "tmc_workload_requests_total", a) == 10 + 20
            assert series(text, "tmc_workload_errors_total", a) == 1 + 2
            assert series(text, f"{HIST}_count", a) == 30
            assert series(text, f"{HIST}_bucket", a, le="0.0562341") == 30  # every request at 50 ms
            assert series(text, f"{HIST}_bucket", a, le="0.0316228") == 0
            assert series(text, "tmc_workload_requests_total", ("cap-1", "shop", "a", "canary")) == 5
            assert series(text, "tmc_workload_requests_total", ("cap-1", "shop", "b", "stable")) == 10
            assert not [line for line in workload_lines(text) if 'workload="c"' in line]
            assert sample(text, "tmc_workload_stats_dropped_total", cluster="cap-1") == 2
            bad = sample(text, "tmc_events_invalid_total", kind="workload_stats", reason="invalid_fields")
            assert bad == 2
            assert sorted(dead) == [("tmc.dead.tmc.workload.cap-1.shop.a.stable", "invalid_fields")] * 2

            # the health agent forgets cap-1: every workload series of it goes, cap-2's stay
            forgotten = HealthChange(
                kind="cluster", name="cap-1", timestamp=time.time(), to_status="Unknown", reason="Forgotten"
            )
            await nc.publish(s.health_change("cluster", "cap-1"), encode(forgotten))

            async def gone() -> str | None:
                t = await scrape(base)
                return None if [line for line in workload_lines(t) if 'cluster="cap-1"' in line] else t

            text = await wait_for(gone, what="cap-1's workload series to be removed")
            assert series(text, "tmc_workload_requests_total", ("cap-2", "shop", "a", "stable")) == 1
            # and cap-1 starts afresh under its cap
            await js.publish(s.workload_stats("cap-1", "shop", "c", "stable"), encode(stats("cap-1", "c")))

            async def back() -> str | None:
                t = await scrape(base)
                return t if series(t, "tmc_workload_requests_total", ("cap-1", "shop", "c", "stable")) == 10 else None

            await wait_for(back, what="cap-1's workload c to be exported")
    finally:
        await nc.close()
