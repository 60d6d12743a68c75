"""tmcd.telemetry: trace continuity from a publisher's traceparent to tmcd's batch spans (in
process and over a real nats-server), sampling, the no-op path, config validation, the
Prometheus -> OTel metrics bridge and push, and the console exporter."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import json
import math
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import nats
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    Gauge,
    Histogram,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, SpanKind
from prometheus_client import CollectorRegistry, Counter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram
from prometheus_client import Info as PromInfo

from tmcd.bus import tracing
from tmcd.config import OtelConfig, validate_otel
from tmcd.metrics.catalog import EVENT_LAG_BUCKETS
from tmcd.telemetry import PrometheusBridge, Telemetry, TelemetryError, batch_span, placement_span
from tmcd.telemetry.tracing import MAX_LINKS

SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(spans: InMemorySpanExporter) -> Iterator[Telemetry]:
    tel = Telemetry.for_tests(spans)
    yield tel
    tel.shutdown()


@pytest.fixture
def publisher() -> Iterator[trace.Tracer]:
    """A separate TracerProvider standing in for the syncer that publishes events."""
    provider = TracerProvider()
    yield provider.get_tracer("syncer")
    provider.shutdown()


def publish_headers(tracer: trace.Tracer, name: str = "syncer.publish") -> tuple[dict[str, str], trace.SpanContext]:
    """Headers a publisher would send: its traceparent, injected from the (global) current span."""
    with tracer.start_as_current_span(name, kind=SpanKind.PRODUCER) as span:
        headers = tracing.inject({"Nats-Msg-Id": "m-1"})
    assert headers is not None and "traceparent" in headers
    return headers, span.get_span_context()


def only_span(spans: InMemorySpanExporter) -> ReadableSpan:
    finished = spans.get_finished_spans()
    assert len(finished) == 1, [s.name for s in finished]
    return finished[0]


def assert_child_of(span: ReadableSpan, parent: trace.SpanContext) -> None:
    assert span.parent is not None and span.parent.is_remote
    assert span.parent.span_id == parent.span_id
    assert span.context is not None and span.context.trace_id == parent.trace_id
    assert span.context.span_id != parent.span_id


# --------------------------------------------------------------------------- (a) continuity in process


def test_batch_span_continues_the_publishers_trace(
    telemetry: Telemetry, spans: InMemorySpanExporter, publisher: trace.Tracer
) -> None:
    headers, parent = publish_headers(publisher)
    with batch_span(telemetry.tracer(), "TMC_SYNCER", 17, headers) as span:
        assert span.is_recording()
        assert trace.get_current_span() is span  # current inside the block ...
        onward = tracing.inject(None)  # ... so what tmcd publishes meanwhile stays in the same trace
    assert onward is not None and onward["traceparent"].split("-")[1] == format(parent.trace_id, "032x")
    got = only_span(spans)
    assert_child_of(got, parent)
    assert got.name == "tmcd.consume TMC_SYNCER"
    assert got.kind is SpanKind.CONSUMER
    assert dict(got.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.destination.name": "TMC_SYNCER",
        "messaging.operation.type": "process",
        "messaging.batch.message_count": 17,
    }
    resource = dict(got.resource.attributes)
    assert resource["service.name"] == "tmcd" and resource["service.version"]
    assert resource["service.instance.id"]
    assert not trace.get_current_span().get_span_context().is_valid  # restored after the block


def test_batch_span_without_headers_is_a_root(telemetry: Telemetry, spans: InMemorySpanExporter) -> None:
    with batch_span(telemetry.tracer(), "TMC_SYNCER", 1, None):
        pass
    with batch_span(telemetry.tracer(), "TMC_SYNCER", 1, {"Nats-Msg-Id": "no-trace"}):
        pass
    assert [s.parent for s in spans.get_finished_spans()] == [None, None]


def test_batch_span_links_the_other_messages(
    telemetry: Telemetry, spans: InMemorySpanExporter, publisher: trace.Tracer
) -> None:
    first, parent = publish_headers(publisher, "first")
    others = [publish_headers(publisher, f"m{i}") for i in range(MAX_LINKS + 5)]
    with batch_span(
        telemetry.tracer(), "TMC_SYNCER", 1 + len(others), first, link_headers=[None, *(h for h, _ in others)]
    ):
        pass
    got = only_span(spans)
    assert_child_of(got, parent)
    assert [link.context.span_id for link in got.links] == [sc.span_id for _, sc in others[:MAX_LINKS]]


def test_batch_span_records_an_exception(telemetry: Telemetry, spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), batch_span(telemetry.tracer(), "TMC_SYNCER", 1, None):
        raise ValueError("bad batch")
    got = only_span(spans)
    assert got.status.status_code is trace.StatusCode.ERROR
    assert [e.name for e in got.events] == ["exception"]


def test_placement_span(telemetry: Telemetry, spans: InMemorySpanExporter, publisher: trace.Tracer) -> None:
    headers, parent = publish_headers(publisher, "placement.publish")
    with placement_span(telemetry.tracer(), "web-prod", headers, attributes={"tmcd.cluster": "east-1"}):
        pass
    got = only_span(spans)
    assert_child_of(got, parent)
    assert got.name == "tmcd.placement.decision"
    assert dict(got.attributes or {}) == {"tmcd.placement": "web-prod", "tmcd.cluster": "east-1"}


# --------------------------------------------------------------------------- (b) over a real nats-server


async def test_traceparent_survives_nats_core_and_jetstream(
    nats_url: str, telemetry: Telemetry, spans: InMemorySpanExporter, publisher: trace.Tracer
) -> None:
    tracer = telemetry.tracer()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    suffix = uuid.uuid4().hex[:8]
    subject, stream = f"tmc.test.telemetry.{suffix}", f"TELEMETRY_{suffix}"
    got: asyncio.Future[dict[str, str] | None] = asyncio.get_running_loop().create_future()

    async def cb(msg: Any) -> None:  # what a consumer does with a fetched message's headers
        with batch_span(tracer, "TMC_SYNCER", 1, msg.headers):
            pass
        if not got.done():
            got.set_result(msg.headers)

    try:
        # core NATS: subscribe, publish the raw message with the publisher's traceparent
        sub = await nc.subscribe(subject, cb=cb)
        await nc.flush()
        core_headers, core_parent = publish_headers(publisher, "syncer.publish.core")
        await nc.publish(subject, b'{"kind":"sync"}', headers=core_headers)
        received = await asyncio.wait_for(got, 5)
        await sub.unsubscribe()
        assert received is not None and received["traceparent"] == core_headers["traceparent"]
        assert_child_of(only_span(spans), core_parent)
        spans.clear()

        # JetStream: store, then pull-fetch like the agents' durable consumers do
        await js.add_stream(name=stream, subjects=[subject])
        js_headers, js_parent = publish_headers(publisher, "syncer.publish.js")
        await js.publish(subject, b'{"kind":"sync"}', headers=js_headers)
        psub = await js.pull_subscribe(subject, durable=f"telemetry-{suffix}", stream=stream)
        msgs = await psub.fetch(1, timeout=5)
        with batch_span(tracer, stream, len(msgs), msgs[0].headers):
            pass
        for m in msgs:
            await m.ack()
        assert_child_of(only_span(spans), js_parent)
        await psub.unsubscribe()
    finally:
        with contextlib.suppress(Exception):  # not created when the core part failed
            await js.delete_stream(stream)
        await nc.close()


# --------------------------------------------------------------------------- (c) sampling


def test_ratio_zero_drops_roots_but_follows_a_sampled_parent(spans: InMemorySpanExporter) -> None:
    tel = Telemetry.for_tests(spans, sample_ratio=0.0)
    try:
        tracer = tel.tracer()
        with batch_span(tracer, "TMC_SYNCER", 1, None) as span:
            assert not span.is_recording()
        assert spans.get_finished_spans() == ()
        with batch_span(tracer, "TMC_SYNCER", 1, {"traceparent": SAMPLED_PARENT}) as span:
            assert span.is_recording()
        got = only_span(spans)
        assert got.context is not None and got.context.trace_flags.sampled
        assert format(got.context.trace_id, "032x") == SAMPLED_PARENT.split("-")[1]
    finally:
        tel.shutdown()


def test_parent_based_follows_an_unsampled_parent(telemetry: Telemetry, spans: InMemorySpanExporter) -> None:
    with batch_span(telemetry.tracer(), "TMC_SYNCER", 1, {"traceparent": UNSAMPLED_PARENT}) as span:
        assert not span.is_recording()
    assert spans.get_finished_spans() == ()


# --------------------------------------------------------------------------- (d) exporter none


def test_exporter_none_is_a_cheap_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    tel = Telemetry(OtelConfig()).start()
    assert not tel.tracing_enabled and tel.provider is None
    tracer = tel.tracer()
    assert isinstance(tracer, NoOpTracer)

    def boom(headers: object) -> None:
        raise AssertionError("headers must not be parsed when tracing is off")

    monkeypatch.setattr(tracing, "extract", boom)
    first = batch_span(tracer, "TMC_SYNCER", 5, {"traceparent": SAMPLED_PARENT})
    second = placement_span(tracer, "p", {"traceparent": SAMPLED_PARENT})
    assert first is second  # one shared null context: nothing allocated per call
    with first as span:
        assert not span.is_recording()
        assert not trace.get_current_span().get_span_context().is_valid
    tel.shutdown()
    assert isinstance(Telemetry().tracer(), NoOpTracer)  # not started: no-op as well


def test_not_installed_globally_unless_asked(telemetry: Telemetry) -> None:
    assert trace.get_tracer_provider() is not telemetry.provider


# --------------------------------------------------------------------------- (e) config


def test_defaults_are_valid_and_off() -> None:
    cfg = OtelConfig()
    assert validate_otel(cfg) == []
    assert (cfg.exporter, cfg.sample_ratio, cfg.metrics_export) == ("none", 0.01, False)


@pytest.mark.parametrize(
    ("settings", "key", "expected"),
    [
        ({"exporter": "jaeger"}, "otel.exporter", "one of none, console, otlp"),
        ({"exporter": "otlp"}, "otel.endpoint", "an OTLP endpoint URL when otel.exporter is otlp"),
        ({"exporter": "otlp", "endpoint": "collector:4318"}, "otel.endpoint", "an http:// or https:// URL"),
        ({"exporter": "otlp", "endpoint": "ftp://c:1", "protocol": "grpc"}, "otel.endpoint", "HOST:PORT"),
        ({"protocol": "http/json"}, "otel.protocol", "one of http/protobuf, grpc"),
        ({"sample_ratio": 1.5}, "otel.sample_ratio", "a number between 0 and 1"),
        ({"sample_ratio": math.nan}, "otel.sample_ratio", "a number between 0 and 1"),
        ({"metrics_interval": 0.0}, "otel.metrics_interval", "a number > 0"),
        ({"metrics_export": True}, "otel.metrics_export", "false when otel.exporter is none"),
    ],
)
def test_validation_problems(settings: dict[str, Any], key: str, expected: str) -> None:
    cfg = OtelConfig(**settings)
    problems = validate_otel(cfg)
    assert [p[0] for p in problems] == [key]
    assert problems[0][1] is getattr(cfg, key.removeprefix("otel."))
    assert expected in problems[0][2]
    with pytest.raises(TelemetryError, match=key.replace(".", r"\.")):
        Telemetry(cfg).start()


def test_valid_otlp_settings_and_prefix() -> None:
    assert validate_otel(OtelConfig(exporter="otlp", endpoint="https://c.example:4318/")) == []
    assert validate_otel(OtelConfig(exporter="otlp", endpoint="c:4317", protocol="grpc")) == []
    assert validate_otel(OtelConfig(exporter="otlp", endpoint="http://c:4317", protocol="grpc")) == []
    assert validate_otel(OtelConfig(exporter="bad"), prefix="")[0][0] == "exporter"


def test_msgspec_decoding_enforces_types_and_ranges() -> None:
    cfg = msgspec.convert({"exporter": "console", "sample_ratio": 0.5}, OtelConfig)
    assert cfg.sample_ratio == 0.5
    with pytest.raises(msgspec.ValidationError, match="sample_ratio"):
        msgspec.convert({"sample_ratio": 2}, OtelConfig)
    with pytest.raises(msgspec.ValidationError, match="metrics_interval"):
        msgspec.convert({"metrics_interval": 0}, OtelConfig)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"sampler": "always"}, OtelConfig)


def test_missing_otlp_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    ):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail even when installed
    with pytest.raises(TelemetryError, match="pip install opentelemetry-exporter-otlp-proto-http"):
        Telemetry(OtelConfig(exporter="otlp", endpoint="http://localhost:4318")).start()
    with pytest.raises(TelemetryError, match="pip install opentelemetry-exporter-otlp-proto-grpc"):
        Telemetry(OtelConfig(exporter="otlp", endpoint="localhost:4317", protocol="grpc")).start()


def test_otlp_http_exporter_when_installed() -> None:
    importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    tel = Telemetry(OtelConfig(exporter="otlp", endpoint="http://127.0.0.1:9/", sample_ratio=0.0)).start()
    try:
        assert tel.tracing_enabled and tel.provider is not None
        exporter = tel.span_exporter
        assert type(exporter).__name__ == "OTLPSpanExporter"
        assert getattr(exporter, "_endpoint", None) == "http://127.0.0.1:9/v1/traces"  # base URL + /v1/traces
    finally:
        tel.shutdown()  # nothing sampled: nothing sent


def test_service_instance_setting() -> None:
    tel = Telemetry(OtelConfig(exporter="console", service_instance="tmcd-0"), "9.9.9", console_out=io.StringIO())
    attrs = dict(tel.resource.attributes)
    assert (attrs["service.instance.id"], attrs["service.version"]) == ("tmcd-0", "9.9.9")
    assert "-" in str(Telemetry().resource.attributes["service.instance.id"])  # hostname-pid


# --------------------------------------------------------------------------- (f) Prometheus -> OTel metrics


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
    for _ in range(250):
        if len(cap.batches) >= 2:
            break
        await asyncio.sleep(0.01)
    assert len(cap.batches) >= 2
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


# --------------------------------------------------------------------------- (g) console exporter


def test_console_exporter_writes_spans(publisher: trace.Tracer) -> None:
    out = io.StringIO()
    tel = Telemetry(OtelConfig(exporter="console", sample_ratio=1.0), console_out=out).start()
    assert tel.tracing_enabled
    headers, parent = publish_headers(publisher)
    with batch_span(tel.tracer(), "TMC_PLACEMENT", 2, headers):
        pass
    tel.shutdown()  # BatchSpanProcessor: flushed on shutdown
    doc = json.loads(out.getvalue())
    assert doc["name"] == "tmcd.consume TMC_PLACEMENT"
    assert doc["parent_id"] == f"0x{parent.span_id:016x}"
    assert doc["context"]["trace_id"] == f"0x{parent.trace_id:032x}"
    assert doc["resource"]["attributes"]["service.name"] == "tmcd"
