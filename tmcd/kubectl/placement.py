"""``kubectl tmc placement simulate|explain``: which clusters a Placement chooses, and why not the others."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from tmcd.kubectl.apply import load_documents
from tmcd.kubectl.common import CONTEXT_SETTINGS, client, global_options, kind_arg
from tmcd.kubectl.errors import CliError
from tmcd.kubectl.output import dump_json, dump_yaml, table

OUTPUTS = ("table", "json", "yaml")


@click.group(context_settings=CONTEXT_SETTINGS)
def placement() -> None:
    """Simulate or explain placement decisions.

    \b
    Examples:
      kubectl tmc placement simulate -f placement.yaml
      kubectl tmc placement explain web
    """


def _print(decision: dict[str, Any], fmt: str, candidates_key: str = "candidates") -> None:
    if fmt == "json":
        click.echo(dump_json(decision))
        return
    if fmt == "yaml":
        click.echo(dump_yaml(decision))
        return
    rows = [
        [
            c.get("cluster", ""),
            "yes" if c.get("selected") else "no",
            f"{float(c.get('score', 0.0)):.3f}",
            c.get("reason", ""),
            c.get("message", ""),
        ]
        for c in decision.get(candidates_key, [])
    ]
    phase = decision.get("phase", "")
    selected = decision.get("selected") or [c["cluster"] for c in decision.get(candidates_key, []) if c.get("selected")]
    click.echo(f"Phase:     {phase}")
    click.echo(f"Selected:  {', '.join(selected) if selected else '<none>'}")
    if decision.get("message"):
        click.echo(f"Message:   {decision['message']}")
    if rows:
        click.echo()
        click.echo(table(["CLUSTER", "SELECTED", "SCORE", "REASON", "DETAIL"], rows))


@placement.command("simulate", context_settings=CONTEXT_SETTINGS)
@click.option("-f", "--filename", "filename", required=True, help="A Placement manifest (YAML or JSON); - for stdin.")
@click.option("-o", "--output", "fmt", type=click.Choice(OUTPUTS), default="table", show_default=True)
@global_options
@click.pass_context
def simulate(ctx: click.Context, filename: str, fmt: str) -> None:
    """Decide a Placement against the current clusters without saving it.

    \b
    Examples:
      kubectl tmc placement simulate -f placement.yaml
      cat placement.yaml | kubectl tmc placement simulate -f - -o yaml
    """
    text = sys.stdin.read() if filename == "-" else _read(filename)
    docs = [d for d in load_documents(text, filename) if d.get("kind") == "Placement"]
    if len(docs) != 1:
        raise CliError(f"{filename}: expected exactly one Placement, found {len(docs)}")
    c = client(ctx)
    decision = c.call("simulate", kind_arg("placements"), object=docs[0])
    _print(decision, fmt)


@placement.command("explain", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("-o", "--output", "fmt", type=click.Choice(OUTPUTS), default="table", show_default=True)
@global_options
@click.pass_context
def explain(ctx: click.Context, name: str, fmt: str) -> None:
    """Show a saved Placement's last decision: every cluster, chosen or not, and why.

    \b
    Examples:
      kubectl tmc placement explain web
    """
    obj = client(ctx).call("get", kind_arg("placements"), name=name)
    status = obj.get("status", {})
    decision = {
        "phase": status.get("phase", ""),
        "selected": [s.get("cluster", "") for s in status.get("selectedClusters", [])],
        "candidates": status.get("candidates", []),
        "lastDecisionTime": status.get("lastDecisionTime", ""),
    }
    _print(decision, fmt)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
