"""OpenTelemetry for tmcd: tracing (:mod:`.tracing`) and the Prometheus -> OTLP bridge (:mod:`.bridge`)."""

from tmcd.telemetry.bridge import MetricsPusher, PrometheusBridge
from tmcd.telemetry.tracing import Telemetry, TelemetryError, batch_span, placement_span

__all__ = ["MetricsPusher", "PrometheusBridge", "Telemetry", "TelemetryError", "batch_span", "placement_span"]
