"""tmcd settings: one msgspec Struct tree, loaded from defaults < file < TMCD_* env < flags.

Durations are seconds, sizes are bytes.  Every field is documented in
``config/tmcd.toml``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

PositiveSeconds = Annotated[float, Meta(gt=0)]
AGENT_NAMES: tuple[str, ...] = ("metrics", "health", "canary", "rollback")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class NatsConfig(_Section):
    """How to reach NATS; an empty url starts the embedded nats-server."""

    url: str = ""
    user: str = ""
    password: str = ""
    token: str = ""
    nkey_seed_file: str = ""
    creds_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    name: str = "tmcd"
    connect_timeout: PositiveSeconds = 2.0
    reconnect_wait_min: PositiveSeconds = 0.5
    reconnect_wait_max: PositiveSeconds = 30.0
    server_bin: str = ""
    """Path of the nats-server binary for the embedded server (TMCD_NATS_SERVER_BIN)."""


class HttpConfig(_Section):
    """The HTTP server (metrics, probes, API)."""

    listen: str = "127.0.0.1:8080"


class StreamLimits(_Section):
    """Retention limits of one JetStream stream."""

    max_age: Annotated[float, Meta(ge=0)] = 86400.0
    """Seconds a message is kept; 0 keeps forever."""
    max_bytes: Annotated[int, Meta(ge=-1)] = 1 << 30
    """Bytes the stream may hold; -1 is unlimited."""
    replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    storage: str = "file"


class StreamsConfig(_Section):
    """Retention limits per stream."""

    syncer: StreamLimits = msgspec.field(default_factory=StreamLimits)
    placement: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=7 * 86400.0))
    workload: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=3600.0))
    events: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=30 * 86400.0))
    dead: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=7 * 86400.0, max_bytes=256 << 20))


class KvConfig(_Section):
    """JetStream KV buckets."""

    history: Annotated[int, Meta(ge=1, le=64)] = 5
    replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    lease_ttl: PositiveSeconds = 15.0


class ConsumerConfig(_Section):
    """Durable pull consumers shared by the agents."""

    batch: Annotated[int, Meta(ge=1, le=10000)] = 256
    fetch_timeout: PositiveSeconds = 0.5
    ack_wait: PositiveSeconds = 30.0
    max_ack_pending: Annotated[int, Meta(ge=1)] = 20000


class MetricsConfig(_Section):
    """The metrics agent."""

    max_resources_per_cluster: Annotated[int, Meta(ge=1)] = 20


class HealthConfig(_Section):
    """The health agent."""

    interval: PositiveSeconds = 5.0


class CanaryConfig(_Section):
    """The canary controller."""

    interval: PositiveSeconds = 10.0


class RollbackConfig(_Section):
    """The rollback engine."""

    revision_history_limit: Annotated[int, Meta(ge=1)] = 10


class RuntimeConfig(_Section):
    """Agent supervision and shutdown."""

    restart_backoff_min: PositiveSeconds = 0.5
    restart_backoff_max: PositiveSeconds = 30.0
    shutdown_timeout: PositiveSeconds = 10.0


class Config(_Section):
    """All tmcd settings."""

    data_dir: str = ".tmcd"
    log_level: str = "info"
    agents: list[str] = msgspec.field(default_factory=lambda: list(AGENT_NAMES))
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    streams: StreamsConfig = msgspec.field(default_factory=StreamsConfig)
    kv: KvConfig = msgspec.field(default_factory=KvConfig)
    consumer: ConsumerConfig = msgspec.field(default_factory=ConsumerConfig)
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    canary: CanaryConfig = msgspec.field(default_factory=CanaryConfig)
    rollback: RollbackConfig = msgspec.field(default_factory=RollbackConfig)
