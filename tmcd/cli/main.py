"""`tmcd`: run the daemon, the simulator, the demo; export schemas; show config."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from tmcd import __version__
from tmcd.cli.options import config_from_options, daemon_options
from tmcd.config import ConfigError, env_warnings, render_config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tmcd", message="%(prog)s %(version)s")
def cli() -> None:
    """tmcd: observability and progressive delivery for TMC multi-cluster Kubernetes."""
    # Every command reads TMCD_* (settings, or the simulator's URL and data dir): a misspelt
    # variable is otherwise silently ignored.  Warned here, once, before any command runs.
    for line in env_warnings():
        click.echo(f"tmcd: warning: {line}", err=True)


@cli.command()
@daemon_options
def run(**opts: str | None) -> None:
    """Run the daemon (agents, HTTP server; an embedded NATS when no URL is set)."""
    from tmcd.runtime.daemon import Daemon
    from tmcd.runtime.logs import setup_logging

    cfg = config_from_options(**opts)
    setup_logging(cfg.log_level)
    sys.exit(_run_daemon(lambda: Daemon(cfg, install_global_tracer=True).run()))


@cli.command()
@daemon_options
@click.option("--clusters", type=click.IntRange(min=1), default=20, show_default=True, help="Simulated clusters.")
@click.option("--rate", type=click.FloatRange(min=0), default=100.0, show_default=True, help="Sync events/s.")
@click.option("--seed", type=int, default=1, show_default=True, help="Simulator seed.")
def demo(clusters: int, rate: float, seed: int, **opts: str | None) -> None:
    """Run tmcd on an embedded NATS with a simulated fleet; Ctrl-C stops everything."""
    from tmcd.cli.demo import run_demo
    from tmcd.runtime.logs import setup_logging

    cfg = config_from_options(**opts)
    setup_logging(cfg.log_level)
    sys.exit(_run_daemon(lambda: run_demo(cfg, clusters=clusters, rate=rate, seed=seed)))


def _run_daemon(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run the daemon; a start-up failure is one line on stderr and exit code 1 (2 for telemetry settings)."""
    from tmcd.bus import BusError
    from tmcd.runtime.embedded import EmbeddedNatsError
    from tmcd.telemetry import TelemetryError

    try:
        return asyncio.run(main())
    except TelemetryError as exc:  # an [otel] setting the installed packages cannot serve
        click.echo(f"tmcd: error: {exc}", err=True)
        return 2
    except (EmbeddedNatsError, BusError) as exc:
        click.echo(f"tmcd: error: {exc}", err=True)
    except OSError as exc:
        click.echo(f"tmcd: error: {exc.strerror or exc}", err=True)
    return 1


@cli.group()
def schema() -> None:
    """The NATS contract (AsyncAPI + JSON Schema)."""


@schema.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schema_export(directory: Path) -> None:
    """Write DIRECTORY/asyncapi.yaml and DIRECTORY/schemas/*.json from the message types."""
    from tmcd.contracts.asyncapi import export

    for path in export(directory, __version__):
        click.echo(f"wrote {path}")


@cli.group("docs")
def docs_group() -> None:
    """Generated reference documentation."""


@docs_group.command("generate")
@click.option("--dir", "directory", default="docs", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--crds-dir",
    default="config/crds",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the CustomResourceDefinitions go.",
)
def docs_generate(directory: Path, crds_dir: Path) -> None:
    """Write the generated reference docs (metrics.md, api/*.md) under DIR and the CRDs under CRDS_DIR."""
    from tmcd.api.reference import default_routes, write_reference
    from tmcd.metrics import docs as metrics_docs
    from tmcd.resources import crds

    path = directory / "metrics.md"
    click.echo(f"{'wrote' if metrics_docs.write(path) else 'unchanged'} {path}")
    for path, changed in write_reference(directory / "api", default_routes(), __version__):
        click.echo(f"{'wrote' if changed else 'unchanged'} {path}")
    crds_dir.mkdir(parents=True, exist_ok=True)
    for name, data in crds.render().items():
        path = crds_dir / name
        changed = not path.is_file() or path.read_bytes() != data
        if changed:
            path.write_bytes(data)
        click.echo(f"{'wrote' if changed else 'unchanged'} {path}")


@cli.group("config")
def config_group() -> None:
    """Inspect configuration."""


@config_group.command("show")
@daemon_options
def config_show(**opts: str | None) -> None:
    """Print the effective configuration as TOML (secrets masked)."""
    click.echo(render_config(config_from_options(**opts)), nl=False)


@cli.command()
@click.option("--config", "config_file", metavar="FILE", help="TOML config file (default: $TMCD_CONFIG).")
@click.option("--nats-url", metavar="URL", help="NATS URL [default: $TMCD_NATS_URL, else DATA_DIR/nats.url].")
@click.option("--data-dir", metavar="DIR", help="Where 'tmcd run' writes nats.url (default .tmcd).")
@click.option("--read-only", is_flag=True, help="Never send a command (pause, promote, ...): browse only.")
def tui(config_file: str | None, nats_url: str | None, data_dir: str | None, read_only: bool) -> None:
    """The terminal dashboard: 1-5 switch views, / filters, s/S sort, ? help, q quits."""
    from tmcd.config import load_config
    from tmcd.tui.connect import nats_url as find_url

    cfg = load_config(config_file, overrides={"nats.url": nats_url, "data_dir": data_dir})
    from tmcd.tui.app import run_dashboard

    sys.exit(run_dashboard(find_url(cfg.nats.url, cfg.data_dir), cfg.nats, read_only=read_only))


def _register_sim() -> None:
    from tmcd.sim.cli import sim

    cli.add_command(sim)


_register_sim()


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage and configuration errors are one line on stderr with exit code 2."""
    try:
        rv = cli.main(args=argv, prog_name="tmcd", standalone_mode=False)
    except ConfigError as exc:
        click.echo(f"tmcd: {exc}", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "tmcd"
        click.echo(f"{where}: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(2)
    except click.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"tmcd: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
