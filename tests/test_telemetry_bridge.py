"""The Prometheus -> OTLP metrics bridge and its periodic push: conversion, parity with
prometheus-client's collect(), OTLP encoding, and a sliced read that lets the event loop run."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Counter, Summary
from prometheus_client import Enum as PromEnum
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram
from prometheus_client import Info as PromInfo
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tests.helpers import wait_for
from tmcd.config import OtelConfig
from tmcd.metrics.catalog import EVENT_LAG_BUCKETS
from tmcd.telemetry import MetricsPusher, PrometheusBridge, Telemetry
from tmcd.telemetry.bridge import CHUNK


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    events = Counter("tmc_events_processed", "Events processed.", ["stream"], registry=reg)
    events.labels("syncer").inc(3)
    events.labels("placement").inc(0.5)
    PromGauge("tmc_nats_connected", "1 when connected.", registry=reg).set(1)
    lag = PromHistogram("tmc_event_lag_seconds", "Event lag.", ["stream"], buckets=EVENT_LAG_BUCKETS, registry=reg)
    for v in (0.001, 0.02, 0.02, 0.7, 100.0):
        lag.labels("syncer").observe(v)
    PromHistogram("tmc_unobserved_seconds", "Never observed.", ["x"], registry=reg)  # no children: skipped
    PromInfo("tmc_build", "Build.", registry=reg).info({"version": "1.2.3"})
    return reg


def by_name(data: MetricsData) -> dict[str, Metric]:
    (rm,) = data.resource_metrics
    (sm,) = rm.scope_metrics
    assert sm.scope.name == "tmcd.prometheus"
    return {m.name: m for m in sm.metrics}


def test_bridge_converts_counters_gauges_histograms(registry: CollectorRegistry) -> None:
    bridge = PrometheusBridge(registry, start_time_unix_nano=123)
    metrics = by_name(bridge.produce())
    assert set(metrics) == {
        "tmc_events_processed_total",
        "tmc_nats_connected",
        "tmc_event_lag_seconds",
        "tmc_build_info",
    }

    counter = metrics["tmc_events_processed_total"]
    assert isinstance(counter.data, Sum)
    assert counter.data.is_monotonic and counter.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert {p.attributes["stream"]: p.value for p in counter.data.data_points if p.attributes} == {
        "syncer": 3.0,
        "placement": 0.5,
    }
    assert counter.description == "Events processed."
    assert all(p.start_time_unix_nano == 123 < p.time_unix_nano for p in counter.data.data_points)

    gauge = metrics["tmc_nats_connected"]
    assert isinstance(gauge.data, Gauge) and [p.value for p in gauge.data.data_points] == [1.0]

    info = metrics["tmc_build_info"]
    assert isinstance(info.data, Gauge)
    assert [(dict(p.attributes or {}), p.value) for p in info.data.data_points] == [({"version": "1.2.3"}, 1.0)]

    hist = metrics["tmc_event_lag_seconds"]
    assert isinstance(hist.data, Histogram)
    assert hist.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    (point,) = hist.data.data_points
    assert dict(point.attributes or {}) == {"stream": "syncer"}
    assert list(point.explicit_bounds) == list(EVENT_LAG_BUCKETS)
    assert point.count == 5 and point.sum == pytest.approx(100.741)
    # Prometheus keeps cumulative `le` counts; OTel wants per-bucket counts (+ an overflow bucket)
    cumulative = {
        s.labels["le"]: s.value
        for fam in registry.collect()
        if fam.name == "tmc_event_lag_seconds"
        for s in fam.samples
        if s.name.endswith("_bucket")
    }
    assert len(point.bucket_counts) == len(EVENT_LAG_BUCKETS) + 1 == len(cumulative)
    running = 0
    for le, n in zip([*(str(b) for b in EVENT_LAG_BUCKETS), "+Inf"], point.bucket_counts, strict=True):
        running += n
        assert running == cumulative[le], le
    assert sum(point.bucket_counts) == point.count
    assert point.bucket_counts[0] == 1 and point.bucket_counts[2] == 2 and point.bucket_counts[-1] == 1


def test_bridge_reads_current_values_without_double_counting(registry: CollectorRegistry) -> None:
    bridge = PrometheusBridge(registry)
    counter = Counter("tmc_later", "Added later.", registry=registry)

    def value() -> float:
        data = by_name(bridge.produce())["tmc_later_total"].data
        assert isinstance(data, Sum)
        return float(data.data_points[0].value)

    assert value() == 0.0
    counter.inc(2)
    assert value() == 2.0
    assert value() == 2.0  # producing again is a read, not an increment
    counter.inc()
    assert value() == 3.0


def test_bridge_output_serializes_with_the_sdk_console_exporter(registry: CollectorRegistry) -> None:
    out = io.StringIO()
    result = ConsoleMetricExporter(out=out).export(PrometheusBridge(registry).produce())
    assert result is MetricExportResult.SUCCESS
    doc = json.loads(out.getvalue())
    names = {m["name"] for m in doc["resource_metrics"][0]["scope_metrics"][0]["metrics"]}
    assert "tmc_event_lag_seconds" in names


def test_bridge_output_encodes_as_otlp_protobuf(registry: CollectorRegistry) -> None:
    encoder = importlib.import_module("opentelemetry.exporter.otlp.proto.common.metrics_encoder")
    request = encoder.encode_metrics(PrometheusBridge(registry).produce())
    metrics = {m.name: m for m in request.resource_metrics[0].scope_metrics[0].metrics}
    point = metrics["tmc_event_lag_seconds"].histogram.data_points[0]
    assert point.count == 5 and not point.HasField("min") and not point.HasField("max")
    assert metrics["tmc_events_processed_total"].sum.is_monotonic


def normalized(metrics: list[Metric]) -> dict[str, Any]:
    """Metrics by name with points as comparable values (timestamps and label order left out)."""
    out: dict[str, Any] = {}
    for m in metrics:
        points = []
        for p in m.data.data_points:
            attrs = tuple(sorted((p.attributes or {}).items()))
            if isinstance(p, HistogramDataPoint):
                points.append((attrs, p.count, p.sum, list(p.bucket_counts), list(p.explicit_bounds), p.min, p.max))
            else:
                points.append((attrs, p.value))
        monotonic = getattr(m.data, "is_monotonic", None)
        out[m.name] = (type(m.data).__name__, m.description, m.unit, monotonic, sorted(points))
    return out


class FleetCollector:
    """A custom collector (not read directly by the bridge)."""

    def collect(self) -> Iterator[Any]:
        g = GaugeMetricFamily("tmc_custom_depth", "Custom gauge.", labels=["queue"])
        g.add_metric(["a"], 3)
        yield g
        c = CounterMetricFamily("tmc_custom_ops", "Custom counter.", labels=["op"])
        c.add_metric(["get"], 5)
        yield c


def test_bridge_reads_children_as_collect_would() -> None:
    """Counters, gauges and histograms are read from their children: the same data as collect() gives."""
    reg = CollectorRegistry()
    c = Counter("tmc_sync", "Syncs.", ["cluster", "op"], registry=reg)
    c.labels("sim-1", "create").inc(4)
    c.labels("sim-2", "update").inc(0.25)
    Counter("tmc_plain", "Unlabelled.", registry=reg).inc(2)
    Counter("tmc_sent", "Sent.", unit="bytes", registry=reg).inc(1024)
    Counter("tmc_unused", "No children yet.", ["x"], registry=reg)
    g = PromGauge("tmc_depth", "Depth.", ["zone", "cluster"], registry=reg)
    g.labels("z1", "sim-1").set(7)
    g.labels("z2", "sim-2").dec(1.5)
    PromGauge("tmc_fn", "From a function.", registry=reg).set_function(lambda: 42.0)
    PromGauge("tmc_fn_children", "Children from functions.", ["k"], registry=reg).labels("a").set_function(lambda: 3)
    h = PromHistogram("tmc_lat_seconds", "Latency.", ["cluster"], buckets=(0.1, 1, 10), registry=reg)
    for v in (0.05, 0.5, 0.5, 5, 50):
        h.labels("sim-1").observe(v)
    h.labels("sim-2")
    PromHistogram("tmc_temp_celsius", "Below zero.", buckets=(-10, 0, 10), registry=reg).observe(-3)  # no _sum
    PromHistogram("tmc_never_seconds", "Unlabelled, never observed.", registry=reg)
    PromInfo("tmc_build", "Build.", registry=reg).info({"version": "1.2.3"})
    PromEnum("tmc_phase", "Phase.", states=["a", "b"], registry=reg).state("b")
    Summary("tmc_summary_seconds", "Skipped.", registry=reg).observe(1)
    reg.register(FleetCollector())  # type: ignore[arg-type]

    bridge = PrometheusBridge(reg, start_time_unix_nano=1)
    (rm,) = bridge.produce().resource_metrics
    direct = normalized(list(rm.scope_metrics[0].metrics))
    from_collect = [m for f in reg.collect() if (m := bridge._convert(f, 2)) is not None]
    assert direct == normalized(from_collect)
    assert direct["tmc_fn"][4] == [((), 42.0)] and direct["tmc_fn_children"][4] == [((("k", "a"),), 3.0)]
    assert direct["tmc_sent_bytes_total"][2] == "bytes"
    assert direct["tmc_temp_celsius"][4] == [((), 1, 0.0, [0, 1, 0, 0], [-10.0, 0.0, 10.0], None, None)]
    assert "tmc_unused_total" not in direct and "tmc_summary_seconds" not in direct
    assert {"tmc_custom_depth", "tmc_custom_ops_total", "tmc_phase", "tmc_build_info"} <= set(direct)


async def test_produce_async_gives_what_produce_gives(registry: CollectorRegistry) -> None:
    bridge = PrometheusBridge(registry)
    (sync,) = bridge.produce().resource_metrics
    (sliced,) = (await bridge.produce_async()).resource_metrics
    assert normalized(list(sliced.scope_metrics[0].metrics)) == normalized(list(sync.scope_metrics[0].metrics))
    assert sliced.resource is sync.resource


class CapturingMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[MetricsData] = []
        self.shut_down = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shut_down = True


async def test_metrics_push_periodic_and_final(registry: CollectorRegistry, spans: InMemorySpanExporter) -> None:
    cap = CapturingMetricExporter()
    cfg = OtelConfig(exporter="console", metrics_export=True, metrics_interval=0.02)
    tel = Telemetry(cfg, span_exporter=spans, metric_exporter=cap).start()
    pusher = tel.start_metrics_push(registry)
    assert pusher is not None and tel.start_metrics_push(registry) is pusher
    await wait_for(lambda: len(cap.batches) >= 2, what="two periodic exports", step=0.01)
    Counter("tmc_at_shutdown", "Set just before stopping.", registry=registry).inc(7)
    await tel.aclose()
    assert cap.shut_down and pusher.failures == 0 and pusher.exports == len(cap.batches)
    final = by_name(cap.batches[-1])["tmc_at_shutdown_total"].data  # the final export saw the last value
    assert isinstance(final, Sum) and final.data_points[0].value == 7.0
    assert tel.provider is None


async def test_metrics_push_off_by_default(registry: CollectorRegistry) -> None:
    tel = Telemetry(OtelConfig(exporter="console"), console_out=io.StringIO()).start()
    assert tel.start_metrics_push(registry) is None
    await tel.aclose()


async def test_metrics_push_survives_export_errors(registry: CollectorRegistry) -> None:
    class Failing(CapturingMetricExporter):
        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            raise ConnectionError("collector down")

    tel = Telemetry(OtelConfig(exporter="console", metrics_export=True), metric_exporter=Failing())
    pusher = tel.start_metrics_push(registry)
    assert pusher is not None
    assert await pusher.push() is False
    await tel.aclose()
    assert pusher.failures == 2 and pusher.exports == 0  # the explicit push and the final one


async def test_metrics_push_lets_ingestion_run_while_reading_a_large_registry() -> None:
    """A push of tens of thousands of series hands the loop back after every slice.

    An "ingestion" task bumps a counter on every turn it gets; that counter is registered last,
    so the bridge reads it at the very end: the exported value counts the turns ingestion had
    while the rest of the registry was read (0 if the read held the loop throughout).
    """
    reg = CollectorRegistry()
    synced = Counter("tmc_big", "Many series.", ["cluster", "resource"], registry=reg)
    for i in range(30_000):
        synced.labels(f"sim-{i // 20}", f"kind{i % 20}").inc()
    lat = PromHistogram("tmc_big_seconds", "Many histograms.", ["cluster"], registry=reg)
    for i in range(2_000):
        lat.labels(f"sim-{i}").observe(0.1)
    handled = Counter("tmc_handled", "Events handled by the ingestion task.", registry=reg)
    exporter = CapturingMetricExporter()
    pusher = MetricsPusher(PrometheusBridge(reg), exporter, interval=3600)
    stop = False

    async def ingest() -> None:
        while not stop:
            handled.inc()
            await asyncio.sleep(0)

    def handled_in(data: MetricsData) -> float:
        series = by_name(data)["tmc_handled_total"].data
        assert isinstance(series, Sum)
        return float(series.data_points[0].value)

    task = asyncio.create_task(ingest())
    await asyncio.sleep(0)
    try:
        before = handled._value.get()
        assert await pusher.push()
        before_held = handled._value.get()
        held = pusher.bridge.produce()  # the one-go read, for contrast
    finally:
        stop = True
        await task

    (exported,) = exporter.batches
    assert len(by_name(exported)["tmc_big_total"].data.data_points) == 30_000
    assert len(by_name(exported)["tmc_big_seconds"].data.data_points) == 2_000
    assert handled_in(exported) - before >= 30_000 // CHUNK + 2_000 // (CHUNK // 4)  # a turn per slice
    assert handled_in(held) == before_held  # reading in one go: not a single turn
