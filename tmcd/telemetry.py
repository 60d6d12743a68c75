"""OpenTelemetry for tmcd: traces (console or OTLP) and an optional OTLP push of the Prometheus metrics.

Off by default (``otel.exporter = "none"``): :meth:`Telemetry.tracer` is then a no-op tracer and
:func:`batch_span` / :func:`placement_span` return a shared null context, so callers can use them
unconditionally.  Spans are opened per batch or per decision, never per event.

This module is imported by :mod:`tmcd.config` (for :class:`OtelConfig`), so the OTel SDK,
prometheus-client and :mod:`tmcd.bus` are imported lazily: importing it costs only msgspec and the
OTel API.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Link, NoOpTracer, Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from tmcd import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, Metric, MetricExporter, MetricsData
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric as PromFamily

log = logging.getLogger("tmcd.telemetry")

EXPORTERS: tuple[str, ...] = ("none", "console", "otlp")
PROTOCOLS: tuple[str, ...] = ("http/protobuf", "grpc")
SERVICE_NAME = "tmcd"
MAX_LINKS = 32
"""At most this many extra messages of a batch are linked to its span."""

_OTLP_MODULES: dict[tuple[str, str], tuple[str, str, str]] = {
    # (protocol, signal) -> (module, class, pip package)
    ("http/protobuf", "traces"): (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "OTLPSpanExporter",
        "opentelemetry-exporter-otlp-proto-http",
    ),
    ("http/protobuf", "metrics"): (
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "OTLPMetricExporter",
        "opentelemetry-exporter-otlp-proto-http",
    ),
    ("grpc", "traces"): (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "OTLPSpanExporter",
        "opentelemetry-exporter-otlp-proto-grpc",
    ),
    ("grpc", "metrics"): (
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        "OTLPMetricExporter",
        "opentelemetry-exporter-otlp-proto-grpc",
    ),
}


class OtelConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """OpenTelemetry export (traces, optionally metrics); off unless ``exporter`` is set."""

    exporter: str = "none"
    """Where spans go: none | console | otlp."""
    endpoint: str = ""
    """OTLP collector: base URL for http/protobuf (``http://collector:4318``; /v1/traces and /v1/metrics
    are appended), ``http://host:4317`` or ``host:4317`` for grpc.  Required when exporter is otlp."""
    protocol: str = "http/protobuf"
    """OTLP transport when exporter is otlp: http/protobuf | grpc."""
    sample_ratio: Annotated[float, Meta(ge=0, le=1)] = 0.01
    """Fraction of root traces sampled; a sampled incoming traceparent is always followed."""
    metrics_export: bool = False
    """Also push the Prometheus metrics to the exporter every ``metrics_interval`` seconds."""
    metrics_interval: Annotated[float, Meta(gt=0)] = 60.0
    service_instance: str = ""
    """``service.instance.id``; empty means ``<hostname>-<pid>``."""


def validate_otel(cfg: OtelConfig, prefix: str = "otel.") -> list[tuple[str, object, str]]:
    """Problems in ``cfg`` as ``(dotted key, value, expected)``; empty when the settings are usable."""
    problems: list[tuple[str, object, str]] = []
    if cfg.exporter not in EXPORTERS:
        problems.append((prefix + "exporter", cfg.exporter, "one of " + ", ".join(EXPORTERS)))
    if cfg.protocol not in PROTOCOLS:
        problems.append((prefix + "protocol", cfg.protocol, "one of " + ", ".join(PROTOCOLS)))
    if cfg.exporter == "otlp" and not cfg.endpoint:
        problems.append(
            (
                prefix + "endpoint",
                cfg.endpoint,
                f"an OTLP endpoint URL when {prefix}exporter is otlp (e.g. http://otel-collector:4318)",
            )
        )
    elif cfg.endpoint and not _endpoint_ok(cfg.endpoint, cfg.protocol):
        expected = "an http:// or https:// URL" if cfg.protocol != "grpc" else "an http(s)://HOST:PORT URL or HOST:PORT"
        problems.append((prefix + "endpoint", cfg.endpoint, expected))
    if not 0.0 <= cfg.sample_ratio <= 1.0:  # also rejects NaN
        problems.append((prefix + "sample_ratio", cfg.sample_ratio, "a number between 0 and 1"))
    if not cfg.metrics_interval > 0:
        problems.append((prefix + "metrics_interval", cfg.metrics_interval, "a number > 0"))
    if cfg.metrics_export and cfg.exporter == "none":
        problems.append(
            (prefix + "metrics_export", cfg.metrics_export, f"false when {prefix}exporter is none (or set an exporter)")
        )
    return problems


def _endpoint_ok(endpoint: str, protocol: str) -> bool:
    if any(c.isspace() for c in endpoint):
        return False
    scheme, sep, rest = endpoint.partition("://")
    if sep:
        return scheme in ("http", "https") and bool(rest)
    return protocol == "grpc" and ":" in endpoint


def _signal_url(endpoint: str, signal: str) -> str:
    """The OTLP/HTTP URL of one signal from the configured base URL (a full signal URL is tolerated)."""
    base = endpoint.rstrip("/")
    for suffix in ("/v1/traces", "/v1/metrics"):
        base = base.removesuffix(suffix)
    return f"{base}/v1/{signal}"


class TelemetryError(RuntimeError):
    """Telemetry cannot start (bad settings, or the OTLP exporter package is not installed)."""


def _load_otlp(protocol: str, signal: str) -> Any:
    module, cls, package = _OTLP_MODULES[(protocol, signal)]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise TelemetryError(
            f"otel.exporter = 'otlp' with protocol {protocol!r} needs the Python package {package} "
            f"(pip install {package})"
        ) from exc


def default_instance_id() -> str:
    """``<hostname>-<pid>``: the default ``service.instance.id``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Telemetry:
    """Owns tmcd's TracerProvider (and the optional metrics push) for one daemon.

    ``span_exporter`` / ``metric_exporter`` replace the exporters ``cfg`` would build (tests);
    ``console_out`` is where the console exporters write (default stdout).
    """

    def __init__(
        self,
        cfg: OtelConfig | None = None,
        version: str = __version__,
        *,
        span_exporter: SpanExporter | None = None,
        metric_exporter: MetricExporter | None = None,
        console_out: IO[str] | None = None,
        batch: bool = True,
    ) -> None:
        self.cfg = cfg if cfg is not None else OtelConfig()
        self.version = version
        self._span_exporter = span_exporter
        self._metric_exporter = metric_exporter
        self._console_out = console_out
        self._batch = batch
        self._provider: TracerProvider | None = None
        self._exporter_in_use: SpanExporter | None = None
        self._resource: Resource | None = None
        self._pusher: MetricsPusher | None = None
        self._started = False

    @classmethod
    def for_tests(cls, exporter: SpanExporter, *, sample_ratio: float = 1.0) -> Telemetry:
        """A started Telemetry exporting synchronously (SimpleSpanProcessor) to ``exporter``."""
        return cls(OtelConfig(sample_ratio=sample_ratio), span_exporter=exporter, batch=False).start()

    @property
    def tracing_enabled(self) -> bool:
        """True when spans are exported somewhere."""
        return self._span_exporter is not None or self.cfg.exporter != "none"

    @property
    def provider(self) -> TracerProvider | None:
        """The TracerProvider once started (None when tracing is off)."""
        return self._provider

    @property
    def span_exporter(self) -> SpanExporter | None:
        """The span exporter in use once started (None when tracing is off)."""
        return self._exporter_in_use

    @property
    def resource(self) -> Resource:
        """``service.name=tmcd``, ``service.version``, ``service.instance.id`` (+ OTEL_RESOURCE_ATTRIBUTES)."""
        if self._resource is None:
            from opentelemetry.sdk.resources import Resource

            self._resource = Resource.create(
                {
                    "service.name": SERVICE_NAME,
                    "service.version": self.version,
                    "service.instance.id": self.cfg.service_instance or default_instance_id(),
                }
            )
        return self._resource

    def start(self, *, install_global: bool = False) -> Telemetry:
        """Build the TracerProvider (``install_global`` also makes it OTel's global one); returns self.

        Raises :class:`TelemetryError` for bad settings or a missing OTLP exporter package.
        """
        if self._started:
            return self
        problems = validate_otel(self.cfg)
        if problems:
            raise TelemetryError("; ".join(f"{k} = {v!r}: expected {e}" for k, v, e in problems))
        exporter = self._span_exporter if self._span_exporter is not None else self._build_span_exporter()
        if exporter is not None:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

            provider = TracerProvider(
                sampler=ParentBased(TraceIdRatioBased(self.cfg.sample_ratio)), resource=self.resource
            )
            processor = BatchSpanProcessor(exporter) if self._batch else SimpleSpanProcessor(exporter)
            provider.add_span_processor(processor)
            self._provider, self._exporter_in_use = provider, exporter
            if install_global:
                trace.set_tracer_provider(provider)
        self._started = True
        log.debug("telemetry started (exporter=%s, sample_ratio=%s)", self.cfg.exporter, self.cfg.sample_ratio)
        return self

    def _build_span_exporter(self) -> SpanExporter | None:
        if self.cfg.exporter == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter(out=self._console_out or sys.stdout)
        if self.cfg.exporter == "otlp":
            cls = _load_otlp(self.cfg.protocol, "traces")
            endpoint = self.cfg.endpoint if self.cfg.protocol == "grpc" else _signal_url(self.cfg.endpoint, "traces")
            exporter: SpanExporter = cls(endpoint=endpoint)
            return exporter
        return None

    def _build_metric_exporter(self) -> MetricExporter:
        if self._metric_exporter is not None:
            return self._metric_exporter
        if self.cfg.exporter == "otlp":
            cls = _load_otlp(self.cfg.protocol, "metrics")
            endpoint = self.cfg.endpoint if self.cfg.protocol == "grpc" else _signal_url(self.cfg.endpoint, "metrics")
            exporter: MetricExporter = cls(endpoint=endpoint)
            return exporter
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter(out=self._console_out or sys.stdout)

    def tracer(self, name: str = "tmcd") -> Tracer:
        """A tracer from tmcd's provider; a NoOpTracer when tracing is off or not started."""
        if self._provider is None:
            return _NOOP_TRACER
        return self._provider.get_tracer(name, self.version)

    def start_metrics_push(self, registry: CollectorRegistry) -> MetricsPusher | None:
        """Push ``registry`` every ``metrics_interval`` s when ``metrics_export`` is on (needs a running loop).

        Returns the running pusher, or None when metrics export is off.
        """
        if not self.cfg.metrics_export:
            return None
        if not self._started:
            self.start()
        if self._pusher is None:
            bridge = PrometheusBridge(registry, self.resource, version=self.version)
            self._pusher = MetricsPusher(bridge, self._build_metric_exporter(), self.cfg.metrics_interval)
            self._pusher.start()
        return self._pusher

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export finished spans now (blocking)."""
        return self._provider.force_flush(timeout_millis) if self._provider is not None else True

    def shutdown(self) -> None:
        """Flush and shut down the span pipeline (blocking; the metrics pusher needs :meth:`aclose`)."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop the metrics push (one final export), then flush and shut down spans, off the loop."""
        if self._pusher is not None:
            pusher, self._pusher = self._pusher, None
            await pusher.stop(timeout)
        if self._provider is not None:
            await asyncio.to_thread(self.shutdown)


_NOOP_TRACER = NoOpTracer()
_NOOP_CM: AbstractContextManager[Span] = contextlib.nullcontext(INVALID_SPAN)
"""Returned by the span helpers when tracing is off; nullcontext is reusable, so nothing is allocated."""


def _remote_context(headers: dict[str, str] | None) -> Any:
    if not headers:
        return None
    from tmcd.bus import tracing  # lazily: tmcd.bus imports tmcd.config, which imports this module

    return tracing.extract(headers)


def _links(link_headers: Iterable[dict[str, str] | None]) -> list[Link]:
    links: list[Link] = []
    for headers in link_headers:
        ctx = _remote_context(headers)
        if ctx is None:
            continue
        sc = trace.get_current_span(ctx).get_span_context()
        if sc.is_valid:
            links.append(Link(sc))
            if len(links) >= MAX_LINKS:
                break
    return links


def batch_span(
    tracer: Tracer,
    stream: str,
    count: int,
    parent_headers: dict[str, str] | None,
    *,
    link_headers: Iterable[dict[str, str] | None] = (),
) -> AbstractContextManager[Span]:
    """``with batch_span(...) as span:`` around processing one fetched batch of ``stream``.

    A CONSUMER span ``tmcd.consume <stream>``, current inside the block, whose parent is the trace
    context in ``parent_headers`` (e.g. the batch's first message); ``link_headers`` (other
    messages' headers) become span links, at most :data:`MAX_LINKS`.  A shared null context
    (nothing extracted, nothing allocated) when ``tracer`` is a NoOpTracer.
    """
    if isinstance(tracer, NoOpTracer):
        return _NOOP_CM
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "nats",
        "messaging.destination.name": stream,
        "messaging.operation.type": "process",
        "messaging.batch.message_count": count,
    }
    return tracer.start_as_current_span(
        f"tmcd.consume {stream}",
        context=_remote_context(parent_headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=_links(link_headers) if link_headers else None,
    )


def placement_span(
    tracer: Tracer,
    placement: str,
    headers: dict[str, str] | None,
    *,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> AbstractContextManager[Span]:
    """``with placement_span(...) as span:`` around one placement decision (``tmcd.placement.decision``).

    Parented on the trace context in ``headers``; ``attributes`` are added to ``tmcd.placement``.
    A shared null context when ``tracer`` is a NoOpTracer.
    """
    if isinstance(tracer, NoOpTracer):
        return _NOOP_CM
    attrs: dict[str, AttributeValue] = {"tmcd.placement": placement}
    if attributes:
        attrs.update(attributes)
    return tracer.start_as_current_span(
        "tmcd.placement.decision", context=_remote_context(headers), kind=SpanKind.INTERNAL, attributes=attrs
    )


# --------------------------------------------------------------------------- Prometheus -> OTLP metrics


class PrometheusBridge:
    """Converts a Prometheus registry into OTel ``MetricsData`` when asked (at export time only).

    Counters become monotonic cumulative Sums (named as scraped, with ``_total``), gauges, info
    and stateset families Gauges, histograms cumulative explicit-bucket Histograms (no min/max:
    Prometheus does not keep them).  Summaries and gauge-histograms are skipped (tmcd has none).
    Values are read from the registry, so nothing is counted twice and the hot path is untouched.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        resource: Resource | None = None,
        *,
        version: str = __version__,
        start_time_unix_nano: int | None = None,
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.registry = registry
        self.resource = resource if resource is not None else Resource.create({"service.name": SERVICE_NAME})
        self.scope = InstrumentationScope("tmcd.prometheus", version)
        self.start_time_unix_nano = start_time_unix_nano if start_time_unix_nano is not None else time.time_ns()

    def produce(self) -> MetricsData:
        """Read the registry now and return its families as one ``MetricsData``."""
        from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics

        now = time.time_ns()
        metrics = [m for family in self.registry.collect() if (m := self._convert(family, now)) is not None]
        scope = ScopeMetrics(scope=self.scope, metrics=metrics, schema_url="")
        return MetricsData(
            resource_metrics=[ResourceMetrics(resource=self.resource, scope_metrics=[scope], schema_url="")]
        )

    def _convert(self, family: PromFamily, now: int) -> Metric | None:
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Gauge,
            Histogram,
            Metric,
            NumberDataPoint,
            Sum,
        )

        start = self.start_time_unix_nano
        kind = family.type
        data: Sum | Gauge | Histogram
        if kind == "counter":
            name = family.name + "_total"
            points = [
                NumberDataPoint(dict(s.labels), start, now, float(s.value))
                for s in family.samples
                if not s.name.endswith("_created")
            ]
            data = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
        elif kind in ("gauge", "unknown", "info", "stateset"):
            name = family.name + "_info" if kind == "info" else family.name
            points = [NumberDataPoint(dict(s.labels), start, now, float(s.value)) for s in family.samples]
            data = Gauge(points)
        elif kind == "histogram":
            name = family.name
            data = Histogram(_histogram_points(family, start, now), AggregationTemporality.CUMULATIVE)
        else:
            return None
        if not data.data_points:
            return None
        return Metric(name=name, description=family.documentation, unit=family.unit or "", data=data)


@dataclass
class _HistSeries:
    labels: dict[str, str]
    buckets: list[tuple[float, float]] = field(default_factory=list)
    count: float | None = None
    sum: float = 0.0


def _histogram_points(family: PromFamily, start: int, now: int) -> list[HistogramDataPoint]:
    """Prometheus cumulative ``le`` buckets -> OTel per-bucket counts, one point per label set."""
    from opentelemetry.sdk.metrics.export import HistogramDataPoint

    series: dict[tuple[tuple[str, str], ...], _HistSeries] = {}
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        entry = series.setdefault(tuple(sorted(labels.items())), _HistSeries(labels))
        if s.name.endswith("_bucket"):
            entry.buckets.append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            entry.count = s.value
        elif s.name.endswith("_sum"):
            entry.sum = s.value
    points = []
    for entry in series.values():
        if not entry.buckets:
            continue
        buckets = sorted(entry.buckets)
        bounds = [le for le, _ in buckets if not math.isinf(le)]
        cumulative = [round(v) for _, v in buckets]
        if not math.isinf(buckets[-1][0]):  # no +Inf bucket (custom collector): the rest is above the last bound
            cumulative.append(round(entry.count) if entry.count is not None else cumulative[-1])
        counts = [c - p for c, p in zip(cumulative, [0, *cumulative[:-1]], strict=True)]
        points.append(
            HistogramDataPoint(
                attributes=entry.labels,
                start_time_unix_nano=start,
                time_unix_nano=now,
                count=cumulative[-1],  # == the +Inf bucket, so sum(bucket_counts) == count as OTLP requires
                sum=entry.sum,
                bucket_counts=counts,
                explicit_bounds=bounds,
                min=None,  # type: ignore[arg-type]  # unknown to Prometheus; the OTLP encoder leaves it unset
                max=None,  # type: ignore[arg-type]
            )
        )
    return points


class MetricsPusher:
    """Every ``interval`` s: read the registry on the event loop, export in a worker thread."""

    def __init__(self, bridge: PrometheusBridge, exporter: MetricExporter, interval: float) -> None:
        self.bridge = bridge
        self.exporter = exporter
        self.interval = interval
        self.exports = 0
        self.failures = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the periodic push task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tmcd-otel-metrics")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
                return
            except TimeoutError:
                await self.push()

    async def push(self) -> bool:
        """Export the registry once now; True on success (failures are logged, not raised)."""
        try:
            data = self.bridge.produce()
        except Exception:
            log.exception("reading the Prometheus registry for OTLP export failed")
            self.failures += 1
            return False
        return await asyncio.to_thread(self._export, data)

    def _export(self, data: MetricsData) -> bool:
        from opentelemetry.sdk.metrics.export import MetricExportResult

        try:
            ok = self.exporter.export(data, timeout_millis=10_000) == MetricExportResult.SUCCESS
        except Exception:
            log.exception("OTLP metrics export failed")
            ok = False
        if ok:
            self.exports += 1
        else:
            self.failures += 1
            if self.failures == 1 or self.failures % 10 == 0:
                log.warning("OTLP metrics export failed (%d failures so far)", self.failures)
        return ok

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the task, export one last time and shut the exporter down (within ``timeout`` s)."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return

        async def finish() -> None:
            await task
            await self.push()
            await asyncio.to_thread(self.exporter.shutdown)

        try:
            await asyncio.wait_for(finish(), timeout)
        except TimeoutError:
            log.warning("OTLP metrics export did not finish within %ss", timeout)
