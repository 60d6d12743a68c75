"""OpenTelemetry tracing for tmcd: the TracerProvider (console or OTLP) and the span helpers.

Off by default (``otel.exporter = "none"``): :meth:`Telemetry.tracer` is then a no-op tracer and
:func:`batch_span` / :func:`placement_span` return a shared null context, so callers can use them
unconditionally.  Spans are opened per batch or per decision, never per event.  The optional
OTLP push of the Prometheus metrics is :mod:`tmcd.telemetry.bridge`.  The OTel SDK is imported
lazily: importing this module costs only the OTel API.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import IO, TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Link, NoOpTracer, Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from tmcd import __version__
from tmcd.bus import tracing
from tmcd.config.otel import OtelConfig, missing_exporter_fix, validate_otel
from tmcd.telemetry.bridge import SERVICE_NAME, MetricsPusher, PrometheusBridge

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from prometheus_client import CollectorRegistry

log = logging.getLogger("tmcd.telemetry")

MAX_LINKS = 32
"""At most this many extra messages of a batch are linked to its span."""

_OTLP_MODULES: dict[tuple[str, str], tuple[str, str]] = {
    # (protocol, signal) -> (module, class)
    ("http/protobuf", "traces"): ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"),
    ("http/protobuf", "metrics"): ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter"),
    ("grpc", "traces"): ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter"),
    ("grpc", "metrics"): ("opentelemetry.exporter.otlp.proto.grpc.metric_exporter", "OTLPMetricExporter"),
}


def _signal_url(endpoint: str, signal: str) -> str:
    """The OTLP/HTTP URL of one signal from the configured base URL (a full signal URL is tolerated)."""
    base = endpoint.rstrip("/")
    for suffix in ("/v1/traces", "/v1/metrics"):
        base = base.removesuffix(suffix)
    return f"{base}/v1/{signal}"


class TelemetryError(RuntimeError):
    """Telemetry cannot start (bad settings, or the OTLP exporter package is not installed)."""


def _load_otlp(protocol: str, signal: str) -> Any:
    module, cls = _OTLP_MODULES[(protocol, signal)]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:  # config validation found the package: a broken or partial install
        key, value, fix = missing_exporter_fix(protocol)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise TelemetryError(f"{key} = {value!r}: the OTLP exporter cannot be loaded ({reason}); {fix}") from exc


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
