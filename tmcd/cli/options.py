"""Command-line options shared by `tmcd run`, `tmcd demo` and `tmcd config show`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from tmcd.config import Config, load_config

F = TypeVar("F", bound=Callable[..., Any])


def daemon_options(fn: F) -> F:
    """Add --config, --nats-url, --http-listen, --data-dir, --agents, --log-level."""
    opts = [
        click.option("--config", "config_file", metavar="FILE", help="TOML config file (default: $TMCD_CONFIG)."),
        click.option("--nats-url", metavar="URL", help="NATS server URL(s); empty starts an embedded nats-server."),
        click.option("--http-listen", metavar="HOST:PORT", help="HTTP listen address (default 127.0.0.1:8080)."),
        click.option("--data-dir", metavar="DIR", help="Data directory (default .tmcd)."),
        click.option(
            "--agents", metavar="LIST", help="Comma-separated agents to run: metrics,health,placement,canary,rollback."
        ),
        click.option("--log-level", metavar="LEVEL", help="debug, info, warning or error."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def config_from_options(
    config_file: str | None,
    nats_url: str | None,
    http_listen: str | None,
    data_dir: str | None,
    agents: str | None,
    log_level: str | None,
) -> Config:
    """Load the effective config; flags override env, which overrides the file."""
    return load_config(
        config_file,
        overrides={
            "nats.url": nats_url,
            "http.listen": http_listen,
            "data_dir": data_dir,
            "agents": agents,
            "log_level": log_level,
        },
    )
