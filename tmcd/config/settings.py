"""tmcd settings: one msgspec Struct tree (loaded by :mod:`tmcd.config.load`).

Durations are seconds, sizes are bytes.  Every field is documented in
``config/tmcd.toml``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from tmcd.config.otel import OtelConfig

PositiveSeconds = Annotated[float, Meta(gt=0)]
AGENT_NAMES: tuple[str, ...] = ("metrics", "health", "placement", "canary", "rollback")
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
    tls_cert: str = ""
    """PEM certificate (then any intermediates) to serve HTTPS with; set together with tls_key."""
    tls_key: str = ""
    """PEM private key (unencrypted) of tls_cert."""


class StreamLimits(_Section):
    """Retention limits of one JetStream stream."""

    max_age: Annotated[float, Meta(ge=0)] = 86400.0
    """Seconds a message is kept; 0 keeps forever."""
    max_bytes: Annotated[int, Meta(ge=-1)] = 1 << 30
    """Bytes the stream may hold; -1 is unlimited."""
    replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    storage: str = "file"
    duplicate_window: Annotated[float, Meta(ge=0)] = 120.0
    """Seconds JetStream remembers ``Nats-Msg-Id`` headers and drops repeats (capped at max_age)."""


class StreamsConfig(_Section):
    """Retention limits per stream."""

    syncer: StreamLimits = msgspec.field(default_factory=StreamLimits)
    placement: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=7 * 86400.0))
    workload: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=3600.0))
    events: StreamLimits = msgspec.field(
        default_factory=lambda: StreamLimits(max_age=30 * 86400.0, duplicate_window=3600.0)
    )
    dead: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=7 * 86400.0, max_bytes=256 << 20))
    traffic: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=0.0, max_bytes=64 << 20))
    """The last desired and applied weights per route: kept until replaced, not aged out."""


class KvConfig(_Section):
    """JetStream KV buckets."""

    history: Annotated[int, Meta(ge=1, le=64)] = 5
    replicas: Annotated[int, Meta(ge=1, le=5)] = 1


class ConsumerConfig(_Section):
    """Durable pull consumers shared by the agents."""

    durable_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "tmcd"
    """Durable consumers are named ``<durable_prefix>-<agent>-<stream>``; replicas that share a
    prefix split the work, deployments with different prefixes each see every message."""
    batch: Annotated[int, Meta(ge=1, le=10000)] = 256
    fetch_timeout: PositiveSeconds = 0.5
    ack_wait: PositiveSeconds = 30.0
    max_ack_pending: Annotated[int, Meta(ge=1)] = 20000


class MetricsConfig(_Section):
    """The metrics agent."""

    max_resources_per_cluster: Annotated[int, Meta(ge=1)] = 20
    max_workloads_per_cluster: Annotated[int, Meta(ge=1)] = 100
    """Workloads (namespace/name) per cluster whose WorkloadStats become ``tmc_workload_*`` series;
    windows of further workloads are counted in ``tmc_workload_stats_dropped_total``."""
    forget_after: PositiveSeconds = 86400.0
    """A cluster not heard from for this long has its series removed (a workload with no
    WorkloadStats for this long, its workload series)."""
    sweep_interval: PositiveSeconds = 60.0


class HealthConfig(_Section):
    """The health agent (cluster health from syncer heartbeats; component checks)."""

    heartbeat_threshold: PositiveSeconds = 60.0
    """A cluster whose last heartbeat is older than this is Unhealthy (kcp's default 1m)."""
    success_threshold: Annotated[float, Meta(ge=0)] = 30.0
    """A better status must hold this long before the cluster's status changes."""
    failure_threshold: Annotated[float, Meta(ge=0)] = 30.0
    """A worse status must hold this long before the cluster's status changes."""
    interval: PositiveSeconds = 5.0
    """Seconds between evaluations."""
    startup_grace: Annotated[float, Meta(ge=0)] = 60.0
    """After tmcd starts, clusters known from the registry are not judged before this."""
    error_ratio_threshold: Annotated[float, Meta(ge=0, le=1)] = 0.05
    error_window: PositiveSeconds = 300.0
    max_queue_depth: Annotated[int, Meta(ge=0)] = 1000
    forget_after: PositiveSeconds = 86400.0
    """A cluster silent this long is removed from the registry (and its series deleted)."""
    location_label: str = "region"
    """Cluster label that groups clusters into locations for aggregation."""
    max_consumer_pending: Annotated[int, Meta(ge=0)] = 100_000
    """The consumer-lag check fails above this many undelivered messages."""
    max_loop_lag: PositiveSeconds = 1.0
    """The eventloop check fails when the event loop is late by more than this."""
    check_cache: Annotated[float, Meta(ge=0)] = 1.0
    """Seconds a probe's check results are reused (a probe storm runs the checks once)."""


class CanaryConfig(_Section):
    """The canary controller."""

    interval: PositiveSeconds = 10.0


class RollbackConfig(_Section):
    """The rollback engine."""

    revision_history_limit: Annotated[int, Meta(ge=1)] = 10
    on_cluster_unhealthy: bool = True
    """Roll back a running canary when one of its canary clusters turns Unhealthy."""


class KubeConfig(_Section):
    """Kubernetes API servers (watch mode, the gateway-api and smi traffic routers)."""

    enabled: bool = False
    """Watch mode: mirror the control plane's CanaryRollouts and AnalysisTemplates into tmcd (the kube agent)."""
    namespaces: list[str] = msgspec.field(default_factory=list)
    """The namespaces watch mode watches; empty: all namespaces."""

    kubeconfig: str = ""
    """Path of the kubeconfig file; empty: $KUBECONFIG, else ~/.kube/config."""
    context: str = ""
    """The kubeconfig context of the control plane; empty: the file's current context."""
    in_cluster: bool = False
    """Reach the control plane with the pod's service account instead of a kubeconfig."""
    contexts: dict[str, str] = msgspec.field(default_factory=dict)
    """Cluster (SyncTarget name) -> the kubeconfig context of its API server, for the traffic
    routers; a SyncTarget's annotation tmc.kcp.io/kubeconfig-context wins over it."""


class ApiToken(_Section):
    """A bearer token for the API."""

    name: str
    """Who holds it (shown in logs instead of the token)."""
    token: str
    access: str = "read-only"
    """read-only or read-write."""


MIN_OBJECT_BYTES = 4096
MAX_OBJECT_BYTES = (1 << 20) - (16 << 10)
"""NATS's default max payload (1 MiB) less room for the KV message's headers."""


class LeaderConfig(_Section):
    """Leader election among replicas (JetStream KV leases): the health, placement, canary,
    rollback and kube agents act only on the replica holding their lease."""

    enabled: bool = True
    """False: every agent acts on this replica without a lease (one replica only)."""
    identity: Annotated[str, Meta(max_length=253)] = ""
    """This replica's name in leases; empty: ``<hostname>-<hash of data_dir and http.listen>``,
    the same after a restart (which takes its own leases back at once)."""
    lease_ttl: Annotated[float, Meta(ge=1, le=3600)] = 15.0
    """Seconds a lease lives without renewal: another replica takes over within it."""
    renew_interval: Annotated[float, Meta(ge=0.1, le=1200)] = 5.0
    """Seconds between renewals; a leader that lost its lease stops acting within one."""


class ApiConfig(_Section):
    """The resource API (HTTP under /api/v1 and the NATS service tmc.api.>)."""

    tokens: list[ApiToken] = msgspec.field(default_factory=list)
    """With none configured, writes are allowed only from loopback clients."""
    require_auth_for_reads: bool = False
    cors_origins: list[str] = msgspec.field(default_factory=list)
    """Origins allowed by CORS; empty (the default) turns CORS off."""
    max_object_bytes: Annotated[int, Meta(ge=MIN_OBJECT_BYTES, le=MAX_OBJECT_BYTES)] = 768 * 1024
    """The largest object (and request body) the API accepts, in bytes: larger ones answer 413.
    At most 1 MiB - 16 KiB, so that an object with its KV headers fits NATS's default max payload."""


class RuntimeConfig(_Section):
    """Agent supervision and shutdown."""

    restart_backoff_min: PositiveSeconds = 0.5
    restart_backoff_max: PositiveSeconds = 30.0
    shutdown_timeout: PositiveSeconds = 10.0
    """Seconds a shutdown may take in all; each step gets a share and is cut short after it."""


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
    otel: OtelConfig = msgspec.field(default_factory=OtelConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    leader: LeaderConfig = msgspec.field(default_factory=LeaderConfig)
    kube: KubeConfig = msgspec.field(default_factory=KubeConfig)
