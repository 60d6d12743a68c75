"""``kubectl tmc version``: the client's and the server's versions, and the server's replicas
with the agents each one leads."""

from __future__ import annotations

import time
from typing import Any

import click

from tmcd import __version__
from tmcd.kubectl.common import CONTEXT_SETTINGS, client, global_options
from tmcd.kubectl.output import cell, human_duration, table


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--client", "client_only", is_flag=True, help="Print only the client version.")
@global_options
@click.pass_context
def version(ctx: click.Context, client_only: bool) -> None:
    """Print the client version, the version of the tmcd serving the `tmc` service, and the
    tmcd replicas with the agents each one leads (health, placement, canary, rollback and kube
    act on one replica, the leader; metrics and the API run on all).

    \b
    Examples:
      kubectl tmc version --client
      kubectl tmc version --nats-url nats://127.0.0.1:4222
    """
    click.echo(f"Client Version: v{__version__}")
    if client_only:
        return
    c = client(ctx)
    report = c.replicas()
    replicas = [r for r in report.get("replicas") or [] if isinstance(r, dict)]
    if c.endpoint.transport == "nats":
        server = str(c.service_info().get("version") or "unknown")
    else:
        server = str(replicas[0].get("version") if replicas else "unknown")
    click.echo(f"Server Version: v{server.removeprefix('v')}")
    click.echo(replica_table(report, time.time()), nl=False)


def replica_table(report: dict[str, Any], now: float) -> str:
    """The replicas as a table (REPLICA, VERSION, AGE, LEADS), or a line saying election is off."""
    replicas = [r for r in report.get("replicas") or [] if isinstance(r, dict)]
    if not report.get("election", True):
        return "Leader election: off (leader.enabled = false): every agent runs on the one replica\n"
    rows = []
    for r in replicas:
        start = r.get("startTime")
        rows.append(
            [
                str(r.get("identity", "")),
                "v" + str(r.get("version", "")).removeprefix("v"),
                human_duration(now - start) if isinstance(start, int | float) else "<unknown>",
                cell(r.get("leads") or []),
            ]
        )
    if not rows:
        return "No replica records (the server may be starting)\n"
    return "\n" + table(["REPLICA", "VERSION", "AGE", "LEADS"], rows)
