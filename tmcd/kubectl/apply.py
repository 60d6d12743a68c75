"""``kubectl tmc apply -f``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from tmcd.kubectl.common import CONTEXT_SETTINGS, client, global_options, namespace_for
from tmcd.kubectl.errors import CliError, ServerError, UsageError
from tmcd.kubectl.kinds import CliKind, by_kind

APPLY_ATTEMPTS = 5
"""Reads and replaces of one object tried when something else writes it in between."""


def load_documents(text: str, source: str) -> list[dict[str, Any]]:
    """Every object in a YAML/JSON stream (``kind: List`` expanded, empty documents skipped)."""
    import yaml

    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise CliError(f"{source}: not valid YAML or JSON: {str(exc).splitlines()[0]}") from None
    out: list[dict[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise CliError(f"{source}: each document must be an object, got {type(doc).__name__}")
        if doc.get("kind") == "List" or (str(doc.get("kind", "")).endswith("List") and "items" in doc):
            out.extend(i for i in doc.get("items") or [] if isinstance(i, dict))
        else:
            out.append(doc)
    return out


def _kind_of(obj: dict[str, Any], source: str) -> CliKind:
    kind = by_kind(str(obj.get("kind", "")), str(obj.get("apiVersion", "")))
    if kind is None:
        raise CliError(
            f"{source}: no tmcd resource kind {obj.get('kind')!r} in version {obj.get('apiVersion')!r} "
            "(SyncTarget, Placement, CanaryRollout, AnalysisTemplate, RolloutRevision)"
        )
    return kind


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "-f", "--filename", "files", multiple=True, required=True, metavar="FILE", help="YAML/JSON file, - = stdin."
)
@global_options
@click.pass_context
def apply(ctx: click.Context, files: tuple[str, ...]) -> None:
    """Create objects, or replace them if they exist, from YAML or JSON (one or many documents).

    \b
    Examples:
      kubectl tmc apply -f placement.yaml
      kubectl tmc apply -f rollout.yaml -n shop
      cat objects.json | kubectl tmc apply -f -
    """
    objects: list[tuple[str, dict[str, Any]]] = []
    for f in files:
        if f == "-":
            text, source = sys.stdin.read(), "<stdin>"
        else:
            try:
                text, source = Path(f).read_text(), f
            except OSError as exc:
                raise UsageError(f"the path {f!r} does not exist or cannot be read: {exc.strerror}") from None
        objects.extend((source, o) for o in load_documents(text, source))
    if not objects:
        raise CliError("no objects passed to apply")
    c = client(ctx)
    for source, obj in objects:
        kind = _kind_of(obj, source)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict) or not meta.get("name"):
            raise CliError(f"{source}: a {kind.kind} needs metadata.name")
        name = str(meta["name"])
        ns = str(meta.get("namespace") or namespace_for(ctx, kind, c.endpoint)) if kind.namespaced else ""
        if ns:
            meta["namespace"] = ns
        had_status = "status" in obj
        for attempt in range(APPLY_ATTEMPTS):
            try:
                existing = c.call("get", kind, namespace=ns, name=name)
            except ServerError as err:
                if err.code != 404:
                    raise
                existing = None
            if existing is None:
                meta.pop("resourceVersion", None)
                c.call("create", kind, namespace=ns, object=obj)
                click.echo(f"{kind.ref(name)} created")
                break
            meta["resourceVersion"] = str((existing.get("metadata") or {}).get("resourceVersion", ""))
            if not had_status and "status" in existing:
                obj["status"] = existing["status"]
            try:
                c.call("replace", kind, namespace=ns, name=name, object=obj)
            except ServerError as err:
                # the resourceVersion is apply's own read, not the user's: an agent writing status
                # in between (the placement agent does, within milliseconds of a save) means read again
                if err.code != 409 or attempt == APPLY_ATTEMPTS - 1:
                    raise
                continue
            click.echo(f"{kind.ref(name)} configured")
            break
