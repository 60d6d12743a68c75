"""OpenTelemetry settings (``[otel]``) and their validation; used by :mod:`tmcd.telemetry`."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Annotated

import msgspec
from msgspec import Meta

EXPORTERS: tuple[str, ...] = ("none", "console", "otlp")
PROTOCOLS: tuple[str, ...] = ("http/protobuf", "grpc")
OTLP_PACKAGES: dict[str, tuple[str, str]] = {
    # protocol -> (the exporter's import package, what to install)
    "http/protobuf": ("opentelemetry.exporter.otlp.proto.http", "pip install opentelemetry-exporter-otlp-proto-http"),
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc", "pip install 'tmcd[grpc]'"),
}
"""The OTLP exporter package each protocol needs (only the http one is a dependency of tmcd)."""


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


def exporter_installed(protocol: str) -> bool:
    """True when the OTLP exporter package for ``protocol`` can be found (it is not imported)."""
    try:
        return importlib.util.find_spec(OTLP_PACKAGES[protocol][0]) is not None
    except (ImportError, ValueError):  # a parent package missing or broken
        return False


def missing_exporter_fix(protocol: str, prefix: str = "otel.") -> tuple[str, str, str]:
    """``(key to blame, its value, what to do)`` when the exporter package of ``protocol`` is missing."""
    if protocol == "grpc":
        return prefix + "protocol", protocol, f"pip install 'tmcd[grpc]', or set {prefix}protocol = 'http/protobuf'"
    return prefix + "exporter", "otlp", f"{OTLP_PACKAGES[protocol][1]}, or set {prefix}exporter = 'console'"


def validate_otel(
    cfg: OtelConfig, prefix: str = "otel.", *, installed: Callable[[str], bool] = exporter_installed
) -> list[tuple[str, object, str]]:
    """Problems in ``cfg`` as ``(dotted key, value, expected)``; empty when the settings are usable.

    With ``exporter = "otlp"``, the protocol's exporter package must be installed (``installed``
    answers that; tests replace it), so a missing one is a configuration error before start-up.
    """
    problems: list[tuple[str, object, str]] = []
    if cfg.exporter not in EXPORTERS:
        problems.append((prefix + "exporter", cfg.exporter, "one of " + ", ".join(EXPORTERS)))
    if cfg.protocol not in PROTOCOLS:
        problems.append((prefix + "protocol", cfg.protocol, "one of " + ", ".join(PROTOCOLS)))
    elif cfg.exporter == "otlp" and not installed(cfg.protocol):
        if cfg.protocol == "grpc":
            expected = "http/protobuf, since the gRPC exporter is not installed (pip install 'tmcd[grpc]' to use grpc)"
            problems.append((prefix + "protocol", cfg.protocol, expected))
        else:
            install = OTLP_PACKAGES[cfg.protocol][1]
            expected = f"console or none, since the OTLP exporter is not installed ({install} to use otlp)"
            problems.append((prefix + "exporter", cfg.exporter, expected))
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
