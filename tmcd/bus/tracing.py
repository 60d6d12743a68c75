"""W3C trace context carried in NATS headers (``traceparent``, ``tracestate``)."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()


def inject(headers: dict[str, str] | None = None) -> dict[str, str] | None:
    """Add the current span's traceparent to ``headers`` (returned; None when there is no span)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    if not carrier:
        return headers
    if headers:
        carrier.update(headers)
    return carrier


def extract(headers: dict[str, str] | None) -> otel_context.Context | None:
    """The remote context from received headers, or None when they carry no traceparent."""
    if not headers or "traceparent" not in headers:
        return None
    return _propagator.extract(headers)
