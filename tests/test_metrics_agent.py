"""The metrics agent inside a running daemon: events published to JetStream come out of
/metrics, a publisher's traceparent becomes the parent of tmcd's batch span, and a C
failure switches to the Python path without losing or double-counting a batch."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests import tools
from tests.helpers import daemon_config, nats_connect, running_daemon, sample, scrape, wait_for
from tmcd.bus import tracing
from tmcd.contracts import subjects as s
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import (
    ConnectionEvent,
    PlacementDecision,
    ResourceQuantities,
    SyncerHeartbeat,
    SyncEvent,
    SyncEventBatch,
)
from tmcd.metrics import model as fleet
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.telemetry import Telemetry


async def test_events_become_metrics(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    # stream-wide exact counts (processed, lag, pending): a server of its own, empty at start
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics")
    nc = await nats_connect(nats_server.url)
    js = nc.jetstream()
    try:
        async with running_daemon(cfg) as d:
            now = time.time()
            hb = SyncerHeartbeat(
                cluster="ma-1",
                timestamp=now,
                labels={"region": "eu-west-1", "zone": "eu-west-1b", "provider": "gcp"},
                capacity=ResourceQuantities(cpu=32, memory=128 << 30, pods=250),
                allocatable=ResourceQuantities(cpu=30, memory=120 << 30, pods=250),
                used=ResourceQuantities(cpu=15, memory=30 << 30, pods=100),
                queue_depth=17,
            )
            await js.publish(s.syncer_heartbeat("ma-1"), encode(hb))
            events = [
                SyncEvent(cluster="ma-1", timestamp=now, resource="v1/configmaps", latency_seconds=0.01)
                for _ in range(300)
            ] + [
                SyncEvent(
                    cluster="ma-1",
                    timestamp=now,
                    resource="v1/pods",
                    op="status",
                    direction="up",
                    ok=False,
                    error_reason="Conflict",
                )
            ]
            await js.publish(
                s.syncer_batch("ma-1"), encode(SyncEventBatch(cluster="ma-1", timestamp=now, events=events))
            )
            single = SyncEvent(cluster="ma-1", timestamp=now, resource="v1/configmaps")
            await js.publish(s.syncer_sync("ma-1"), encode(single))
            await js.publish(
                s.syncer_conn("ma-1"), encode(ConnectionEvent(cluster="ma-1", timestamp=now, state="disconnected"))
            )
            dec = PlacementDecision(placement="web", timestamp=now, selected=["ma-1"], latency_seconds=0.004)
            await js.publish(s.placement_decision("web"), encode(dec))

            async def all_in() -> str | None:
                t = await scrape(d.http.base_url)
                return (
                    t
                    if sample(t, "tmc_placement_decisions_total", placement="web", result="bound") == 1
                    and (sample(t, "tmc_events_processed_total", stream="TMC_SYNCER") == 304)
                    else None
                )

            t = await wait_for(all_in, what="metrics")
            synced = "tmc_syncer_resources_synced_total"
            assert (
                sample(t, synced, cluster="ma-1", resource="v1/configmaps", operation="update", direction="down") == 301
            )
            assert sample(t, "tmc_syncer_errors_total", cluster="ma-1", resource="v1/pods", reason="Conflict") == 1
            assert sample(t, "tmc_syncer_queue_depth", cluster="ma-1") == 17
            assert sample(t, "tmc_cluster_utilization_ratio", cluster="ma-1", resource="cpu") == 0.5
            assert sample(t, "tmc_cluster_info", cluster="ma-1", region="eu-west-1", provider="gcp") == 1
            assert sample(t, "tmc_connection_up", cluster="ma-1") == 0
            assert sample(t, "tmc_placement_selected_clusters", placement="web") == 1
            assert sample(t, "tmc_event_lag_seconds_count") == 302
            assert sample(t, "tmc_consumer_pending_messages", stream="TMC_SYNCER") == 0
            # the default durable names: tmcd-<agent>-<stream>
            for stream in ("TMC_SYNCER", "TMC_PLACEMENT", "TMC_WORKLOAD"):
                names = [c.name for c in await js.consumers_info(stream)]
                assert names == [f"tmcd-metrics-{stream.removeprefix('TMC_').lower()}"]
    finally:
        await nc.close()


async def test_publisher_traceparent_is_the_parent_of_tmcds_batch_span(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry.for_tests(exporter)
    publisher = TracerProvider().get_tracer("syncer")
    # the batch span must hold exactly the one event published here: a server of its own
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics")
    nc = await nats_connect(nats_server.url)
    js = nc.jetstream()
    try:
        async with running_daemon(cfg, telemetry=telemetry):
            now = time.time()
            batch = SyncEventBatch(
                cluster="tr-9", timestamp=now, events=[SyncEvent(cluster="tr-9", timestamp=now, resource="v1/pods")]
            )
            with publisher.start_as_current_span("syncer.flush") as span:
                headers = tracing.inject(None)
                parent = span.get_span_context()
            assert headers is not None and "traceparent" in headers
            await js.publish(s.syncer_batch("tr-9"), encode(batch), headers=headers)

            async def exported() -> list[object]:
                return [sp for sp in exporter.get_finished_spans() if sp.name == "tmcd.consume TMC_SYNCER"]

            spans = await wait_for(exported, what="tmcd's batch span")
            mine = spans[0]
            assert mine.parent is not None and mine.parent.span_id == parent.span_id  # type: ignore[attr-defined]
            assert mine.context.trace_id == parent.trace_id  # type: ignore[attr-defined]
            assert mine.kind == trace.SpanKind.CONSUMER  # type: ignore[attr-defined]
            assert mine.attributes["messaging.batch.message_count"] == 1  # type: ignore[attr-defined]
    finally:
        await nc.close()


class Failing:
    """The C aggregate failing as a broken extension would."""

    def aggregate(self, *args: Any) -> Any:
        raise TypeError("simulated failure in the C pass")


async def test_a_c_failure_switches_to_python_and_build_info_says_so(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools.require_c_extension()
    monkeypatch.setattr(fleet, "_SPEEDUPS", fleet._Speedups())  # a process that has not given up on C
    monkeypatch.delenv("TMCD_NO_SPEEDUPS", raising=False)
    # tmc_event_lag_seconds_count counts every event the daemon consumed: a server of its own
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics")
    nc = await nats_connect(nats_server.url)
    js = nc.jetstream()
    synced = "tmc_syncer_resources_synced_total"

    async def publish(n: int) -> None:
        now = time.time()
        events = [SyncEvent(cluster="fb-1", timestamp=now, resource="v1/secrets") for _ in range(n)]
        await js.publish(s.syncer_batch("fb-1"), encode(SyncEventBatch(cluster="fb-1", timestamp=now, events=events)))

    def counted(n: int) -> Any:
        async def check() -> str | None:
            t = await scrape(d.http.base_url)
            return t if sample(t, synced, cluster="fb-1", resource="v1/secrets") == n else None

        return check

    try:
        async with running_daemon(cfg) as d:
            await publish(5)
            t = await wait_for(counted(5), what="the first batch, counted in C")
            assert sample(t, "tmc_build_info", speedups="c") == 1
            monkeypatch.setattr(fleet, "_fastagg", Failing())
            await publish(7)
            t = await wait_for(counted(12), what="the batch during which C failed, counted once in Python")
            assert sample(t, "tmc_build_info", version="0.1.0", speedups="python") == 1
            assert sample(t, "tmc_build_info", speedups="c") == 0
            await publish(3)
            t = await wait_for(counted(15), what="the next batch")
            assert sample(t, "tmc_event_lag_seconds_count") == 15
            assert sample(t, "tmc_agent_restarts_total", agent="metrics") == 0
    finally:
        await nc.close()


async def test_deployments_with_different_durable_prefixes_each_see_every_event(
    nats_url: str, tmp_path: Path, durable_prefix: str
) -> None:
    """Two tmcd deployments on one NATS account (here the shared test server, with whatever
    other tests left in its streams): each counts every event, through consumers of its own."""
    cluster = f"dp-{durable_prefix}"
    nc = await nats_connect(nats_url)
    js = nc.jetstream()
    synced = "tmc_syncer_resources_synced_total"
    prefixes = (f"{durable_prefix}a", f"{durable_prefix}b")
    try:
        async with contextlib.AsyncExitStack() as stack:
            daemons = [
                await stack.enter_async_context(
                    running_daemon(
                        daemon_config(nats_url, tmp_path / p, agents="metrics", **{"consumer.durable_prefix": p})
                    )
                )
                for p in prefixes
            ]
            now = time.time()
            events = [SyncEvent(cluster=cluster, timestamp=now, resource="v1/secrets") for _ in range(40)]
            for i in range(0, 40, 10):
                batch = SyncEventBatch(cluster=cluster, timestamp=now, events=events[i : i + 10])
                await js.publish(s.syncer_batch(cluster), encode(batch))

            for d in daemons:

                async def counted(d: Any = d) -> bool:
                    return sample(await scrape(d.http.base_url), synced, cluster=cluster) == 40

                await wait_for(counted, what="all 40 events counted by each deployment")
            for p in prefixes:
                info = await js.consumer_info("TMC_SYNCER", f"{p}-metrics-syncer")
                assert info.config.durable_name == f"{p}-metrics-syncer"
    finally:
        await nc.close()
