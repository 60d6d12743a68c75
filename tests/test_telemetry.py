"""tmcd.telemetry: trace continuity from a publisher's traceparent to tmcd's batch spans (in
process and over a real nats-server), sampling, the no-op path, config validation (a missing
OTLP exporter package included) and the console exporter.  The Prometheus -> OTel metrics
bridge and its push: tests/test_telemetry_bridge.py."""

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
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, SpanKind

from tests.helpers import nats_connect
from tmcd.bus import tracing
from tmcd.config import OtelConfig, validate_otel
from tmcd.config.otel import exporter_installed
from tmcd.telemetry import Telemetry, TelemetryError, batch_span, placement_span
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
    nc = await nats_connect(nats_url)
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
    # the packages are found (config validation passes) but their exporters cannot be imported
    for module in (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    ):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail even when installed
    with pytest.raises(TelemetryError) as info:
        Telemetry(OtelConfig(exporter="otlp", endpoint="http://localhost:4318")).start()
    assert str(info.value).startswith("otel.exporter = 'otlp': the OTLP exporter cannot be loaded (")
    assert str(info.value).endswith(
        "pip install opentelemetry-exporter-otlp-proto-http, or set otel.exporter = 'console'"
    )
    with pytest.raises(TelemetryError) as info:
        Telemetry(OtelConfig(exporter="otlp", endpoint="localhost:4317", protocol="grpc")).start()
    assert str(info.value).startswith("otel.protocol = 'grpc': the OTLP exporter cannot be loaded (")
    assert str(info.value).endswith("pip install 'tmcd[grpc]', or set otel.protocol = 'http/protobuf'")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("protocol", "key", "expected"),
    [
        (
            "grpc",
            "otel.protocol",
            "http/protobuf, since the gRPC exporter is not installed (pip install 'tmcd[grpc]' to use grpc)",
        ),
        (
            "http/protobuf",
            "otel.exporter",
            "console or none, since the OTLP exporter is not installed "
            "(pip install opentelemetry-exporter-otlp-proto-http to use otlp)",
        ),
    ],
)
def test_uninstalled_otlp_exporter_is_a_setting_problem(protocol: str, key: str, expected: str) -> None:
    asked: list[str] = []

    def installed(p: str) -> bool:
        asked.append(p)
        return False

    cfg = OtelConfig(exporter="otlp", endpoint="http://c:4318", protocol=protocol)
    assert validate_otel(cfg, installed=installed) == [(key, getattr(cfg, key.removeprefix("otel.")), expected)]
    assert asked == [protocol]
    # only the otlp exporter needs a package
    assert validate_otel(OtelConfig(exporter="console", protocol=protocol), installed=installed) == []


def test_exporter_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert exporter_installed("http/protobuf") and exporter_installed("grpc")  # both in the dev venv
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc", None)
    assert not exporter_installed("grpc")
    problems = validate_otel(OtelConfig(exporter="otlp", endpoint="c:4317", protocol="grpc"))
    assert [p[0] for p in problems] == ["otel.protocol"]
    with pytest.raises(TelemetryError, match=r"otel\.protocol = 'grpc': expected http/protobuf, since"):
        Telemetry(OtelConfig(exporter="otlp", endpoint="c:4317", protocol="grpc")).start()


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


# --------------------------------------------------------------------------- (f) console exporter


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
