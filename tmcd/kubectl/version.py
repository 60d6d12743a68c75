"""``kubectl tmc version``."""

from __future__ import annotations

import click

from tmcd import __version__
from tmcd.kubectl.common import CONTEXT_SETTINGS, client, global_options


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--client", "client_only", is_flag=True, help="Print only the client version.")
@global_options
@click.pass_context
def version(ctx: click.Context, client_only: bool) -> None:
    """Print the client version and the version of the tmcd serving the `tmc` service.

    \b
    Examples:
      kubectl tmc version --client
      kubectl tmc version --nats-url nats://127.0.0.1:4222
    """
    click.echo(f"Client Version: v{__version__}")
    if client_only:
        return
    info = client(ctx).service_info()
    server = str(info.get("version") or "unknown")
    click.echo(f"Server Version: v{server.removeprefix('v')}")
