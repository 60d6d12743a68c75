"""tmcd's configuration, in one place: the settings tree (:mod:`.settings`, with
:mod:`.otel`), loading from defaults < file < ``TMCD_*`` env < flags (:mod:`.load`), and
the TOML reader and writer (:mod:`.toml`)."""

from tmcd.config.load import (
    ENV_PREFIX,
    SWITCHES,
    ConfigError,
    env_name,
    load_config,
    parse_bool,
    parse_listen,
    render_config,
    secret_keys,
)
from tmcd.config.otel import OtelConfig, validate_otel
from tmcd.config.settings import (
    AGENT_NAMES,
    LOG_LEVELS,
    ApiConfig,
    ApiToken,
    CanaryConfig,
    Config,
    ConsumerConfig,
    HealthConfig,
    HttpConfig,
    KvConfig,
    MetricsConfig,
    NatsConfig,
    RollbackConfig,
    RuntimeConfig,
    StreamLimits,
    StreamsConfig,
)

__all__ = [
    "AGENT_NAMES",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "SWITCHES",
    "ApiConfig",
    "ApiToken",
    "CanaryConfig",
    "Config",
    "ConfigError",
    "ConsumerConfig",
    "HealthConfig",
    "HttpConfig",
    "KvConfig",
    "MetricsConfig",
    "NatsConfig",
    "OtelConfig",
    "RollbackConfig",
    "RuntimeConfig",
    "StreamLimits",
    "StreamsConfig",
    "env_name",
    "load_config",
    "parse_bool",
    "parse_listen",
    "render_config",
    "secret_keys",
    "validate_otel",
]
