"""``kubectl tmc history NAME``: a canary rollout's revisions, newest first."""

from __future__ import annotations

import click

from tmcd.kubectl.canary.control import complete_rollouts, target
from tmcd.kubectl.common import CONTEXT_SETTINGS, global_options
from tmcd.kubectl.getcore import check_format
from tmcd.kubectl.output import FORMATS, TEMPLATE_FORMATS, newline_after, render
from tmcd.kubectl.revisions import HISTORY, HISTORY_WIDE, list_revisions, revision_kind


def _complete_output(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    words = [*FORMATS, *(f"{t}=" for t in TEMPLATE_FORMATS)]
    return [w for w in words if w.startswith(incomplete)]


@click.command("history", context_settings=CONTEXT_SETTINGS)
@click.argument("name", metavar="NAME", shell_complete=complete_rollouts)
@click.option(
    "-o",
    "--output",
    default="table",
    metavar="FORMAT",
    shell_complete=_complete_output,
    help="table, wide, json, yaml, name, jsonpath=TEMPLATE, jsonpath-file=FILE, custom-columns=SPEC, "
    "custom-columns-file=FILE.",
)
@global_options
@click.pass_context
def history(ctx: click.Context, name: str, output: str) -> None:
    """Show a canary rollout's revision history, newest first.

    One row per revision tmcd recorded: the version it ran, its phase (Active: serving traffic
    now; Superseded: replaced; RolledBackTo: stable again through a rollback; Failed: a canary
    that was rolled back), what triggered it and how it ended. -o wide adds the version that was
    stable when it was written, the clusters it ran on and its traffic weights; -o json|yaml prints
    the RolloutRevision objects. `kubectl tmc rollback NAME --to-revision N` returns to one.

    \b
    Examples:
      kubectl tmc history checkout -n shop
      kubectl tmc history checkout -n shop -o wide
      kubectl tmc history checkout -n shop -o jsonpath='{.items[0].spec.version}'
    """
    fmt = check_format(output)
    t = target(ctx, name)
    items = list_revisions(t.client, t.namespace, name)
    if not items and fmt in ("table", "wide"):
        t.client.call("get", t.kind, namespace=t.namespace, name=name)  # NotFound for an unknown rollout
        click.echo(f"No revisions found for {t.ref} in {t.namespace} namespace.", err=True)
        return
    out = render(revision_kind(), items, fmt, HISTORY, HISTORY_WIDE)
    click.echo(out, nl=newline_after(fmt))
