"""``kubectl tmc sync``: per-cluster sync state, and pause/resume/force through the syncers.

The syncer of each cluster answers ``tmc.ctl.sync.<cluster>.<action>`` (``tmcd sim`` does
too); tmcd records what the syncer reports in the SyncTarget, so the syncer stays the
source of truth.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from tmcd.kubectl.client import NatsConnection
from tmcd.kubectl.common import CONTEXT_SETTINGS, client, dns_label, global_options, kind_arg
from tmcd.kubectl.errors import EXIT_FAILED, CliError
from tmcd.kubectl.getcore import fresh_heartbeats
from tmcd.kubectl.output import age, table

ACTIONS = {"pause": "paused", "resume": "running", "force": "resyncing"}


@click.group(context_settings=CONTEXT_SETTINGS)
def sync() -> None:
    """Sync state of clusters, and pause, resume or force a full re-sync.

    \b
    Examples:
      kubectl tmc sync status
      kubectl tmc sync pause sim-003
      kubectl tmc sync resume --all
      kubectl tmc sync force -l region=eu-west-1 --timeout 10
    """


@sync.command("status", context_settings=CONTEXT_SETTINGS)
@click.argument("cluster", required=False)
@global_options
@click.pass_context
def status(ctx: click.Context, cluster: str | None) -> None:
    """Per cluster: paused, queue depth, last heartbeat, error ratio, resources synced.

    \b
    Examples:
      kubectl tmc sync status
      kubectl tmc sync status sim-001
    """
    kind = kind_arg("synctargets")
    c = client(ctx)
    items = [c.call("get", kind, name=cluster)] if cluster else c.call("list", kind).get("items", [])
    items = fresh_heartbeats(c, items)
    now = time.time()
    rows = []
    for st in items:
        s = st.get("status", {})
        rows.append(
            [
                st["metadata"]["name"],
                "true" if s.get("syncPaused") else "false",
                str(s.get("queueDepth", 0)),
                age(s.get("lastSyncerHeartbeatTime", ""), now) if s.get("lastSyncerHeartbeatTime") else "",
                f"{100 * float(s.get('errorRatio', 0.0)):.1f}%",
                str(len(s.get("syncedResources", []))),
                s.get("health", ""),
            ]
        )
    if not rows:
        click.echo("No clusters found.", err=True)
        return
    click.echo(table(["CLUSTER", "PAUSED", "QUEUE", "LAST HEARTBEAT", "ERRORS", "RESOURCES", "STATUS"], rows))


def _control(action: str) -> click.Command:
    @click.command(action, context_settings=CONTEXT_SETTINGS)
    @click.argument("clusters", nargs=-1, metavar="[CLUSTER...]")
    @click.option("--all", "all_", is_flag=True, help="Every known cluster.")
    @click.option("-l", "--selector", default="", help="Clusters whose labels match (e.g. region=eu-west-1).")
    @click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for each syncer's answer.")
    @global_options
    @click.pass_context
    def command(ctx: click.Context, clusters: tuple[str, ...], all_: bool, selector: str, timeout: float) -> None:
        for name in clusters:  # each becomes a subject token: refuse before anything is sent
            dns_label(name, "cluster")
        c = client(ctx)
        if c.endpoint.transport != "nats":
            raise CliError("sync control needs NATS: set --nats-url")
        names = list(clusters)
        if all_ or selector:
            if names:
                raise click.UsageError("give cluster names, or --all / -l, not both")
            listing = c.call("list", kind_arg("synctargets"), labelSelector=selector or None)
            names = [dns_label(i["metadata"]["name"], "cluster") for i in listing.get("items", [])]
            if not names:
                raise CliError("no clusters match")
        elif not names:
            raise click.UsageError("give one or more clusters, --all, or -l SELECTOR")
        failed = 0
        conn = NatsConnection(c.endpoint.url, c.endpoint.token, timeout)
        try:
            for name in names:
                ok, line = _ask(conn, name, action, timeout)
                click.echo(line)
                if not ok:
                    failed += 1
                    conn.close()  # a timed-out socket cannot be read again: start afresh
                    conn = NatsConnection(c.endpoint.url, c.endpoint.token, timeout)
        finally:
            conn.close()
        if failed:
            ctx.exit(EXIT_FAILED)

    command.__doc__ = f"""{action.capitalize()} syncing on clusters; prints each syncer's acknowledgement.

    \b
    Exits 1 if any cluster did not acknowledge within --timeout.

    \b
    Examples:
      kubectl tmc sync {action} sim-001
      kubectl tmc sync {action} --all
      kubectl tmc sync {action} -l region=eu-west-1
    """
    command.help = command.__doc__
    return command


def _ask(conn: NatsConnection, cluster: str, action: str, timeout: float) -> tuple[bool, str]:
    request = {"cluster": cluster, "action": action, "timestamp": time.time(), "requested_by": "kubectl-tmc"}
    try:
        headers, data = conn.request(f"tmc.ctl.sync.{cluster}.{action}", json.dumps(request).encode())
    except CliError as exc:
        return (
            False,
            f"{cluster}: no acknowledgement within {timeout:g}s ({exc.message if hasattr(exc, 'message') else exc})",
        )
    if headers.get("Status") == "503":
        return False, f"{cluster}: no syncer answered (no responders)"
    reply: dict[str, Any] = json.loads(data) if data else {}
    if not reply.get("ok"):
        return False, f"{cluster}: refused ({reply.get('code', '?')}): {reply.get('message', '')}"
    return True, f"{cluster}: {reply.get('state') or ACTIONS[action]}"


for _action in ACTIONS:
    sync.add_command(_control(_action))
