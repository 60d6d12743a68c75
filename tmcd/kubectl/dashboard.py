"""``kubectl tmc dashboard``: the terminal dashboard.  Textual and the bus load only here, when it runs."""

from __future__ import annotations

import click

from tmcd.kubectl.common import CONTEXT_SETTINGS, global_options, settings
from tmcd.kubectl.endpoint import resolve
from tmcd.kubectl.errors import UsageError


@click.command("dashboard", context_settings=CONTEXT_SETTINGS)
@click.option("--read-only", is_flag=True, help="Never send a command (pause, promote, ...): browse only.")
@global_options
@click.pass_context
def dashboard(ctx: click.Context, read_only: bool) -> None:
    """Open the terminal dashboard: the fleet, a cluster, sync, canaries and events, live.

    It reads NATS itself (--nats-url, TMC_NATS_URL, the kubeconfig context's tmc extension, or
    the nats.url that `tmcd run` writes), live: 1-5 switch views, / filters, s/S sort, ? help,
    q quits.

    \b
    Examples:
      kubectl tmc dashboard
      kubectl tmc dashboard --nats-url nats://tmcd.prod:4222 --read-only
    """
    ep = resolve(settings(ctx))
    if ep.transport != "nats":
        raise UsageError("the dashboard reads NATS: pass --nats-url (or TMC_NATS_URL), not only --server")
    from tmcd.tui.app import run_dashboard

    raise SystemExit(run_dashboard(ep.url, read_only=read_only))
