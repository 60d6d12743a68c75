"""The click root group with lazy subcommands and kubectl-style one-line errors."""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from tmcd.kubectl.common import CONTEXT_SETTINGS, global_options, settings
from tmcd.kubectl.errors import EXIT_FAILED, EXIT_USAGE, CliError
from tmcd.kubectl.main import COMPLETE_VAR, LAZY_COMMANDS, PROG


class LazyGroup(click.Group):
    """A group whose commands are ``module:attr`` strings imported on first use."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            module, _, attr = self.lazy_commands[cmd_name].partition(":")
            cmd = getattr(importlib.import_module(module), attr)
            if not isinstance(cmd, click.Command):
                raise TypeError(f"{self.lazy_commands[cmd_name]} is not a click command")
            return cmd
        return super().get_command(ctx, cmd_name)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run with one-line errors: ``error: ...`` on stderr, exit 2 for usage, 1 for failures."""
        extra.setdefault("obj", None)
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or PROG,
                complete_var=complete_var or COMPLETE_VAR,
                standalone_mode=False,
                **extra,
            )
        except click.UsageError as err:
            msg = (err.format_message().splitlines() or ["bad usage"])[0].rstrip(".")
            hint = f"; see '{err.ctx.command_path} -h'" if err.ctx else ""
            click.echo(f"error: {msg}{hint}", err=True)
            sys.exit(EXIT_USAGE)
        except CliError as err:
            click.echo(err.line(), err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(EXIT_FAILED)
        except click.ClickException as err:
            click.echo(f"error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except Exception as exc:
            if _verbosity() >= 6:
                traceback.print_exc()
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(rv if isinstance(rv, int) else 0)


_last_ctx: list[click.Context] = []


def _verbosity() -> int:
    return max((settings(c).verbosity for c in _last_ctx), default=0)


@click.group(cls=LazyGroup, lazy_commands=LAZY_COMMANDS, context_settings=CONTEXT_SETTINGS)
@global_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """kubectl tmc: fleets, placements and rollouts of kcp TMC, from tmcd.

    \b
    Connection: --nats-url / TMC_NATS_URL (default: <TMCD_DATA_DIR or .tmcd>/nats.url,
    else nats://127.0.0.1:4222), --server / TMC_SERVER for the HTTP API, --token / TMC_TOKEN;
    or the kubeconfig context's `tmc` extension {natsURL, server}.  An https:// server's
    certificate is verified with the system's CAs or --certificate-authority FILE
    (--insecure-skip-tls-verify: not at all).

    \b
    Examples:
      kubectl tmc get clusters
      kubectl tmc describe placement web
      kubectl tmc apply -f placement.yaml
      kubectl tmc canary status checkout -n shop --watch
    """
    _last_ctx[:] = [ctx]
