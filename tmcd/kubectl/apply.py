"""``kubectl tmc apply -f``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from tmcd.kubectl.client import Client
from tmcd.kubectl.common import CONTEXT_SETTINGS, client, global_options, namespace_for
from tmcd.kubectl.errors import EXIT_FAILED, CliError, ServerError, Unreachable, UsageError
from tmcd.kubectl.kinds import CliKind, by_kind

APPLY_ATTEMPTS = 5
"""Reads and replaces of one object tried when something else writes it in between."""
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""The annotation recording what apply last submitted (as kubectl's): a later apply of the same
manifest is ``unchanged``, and one that drops a field is not mistaken for it."""


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


def applied_config(obj: dict[str, Any]) -> dict[str, Any]:
    """What a manifest asks for: the object without status and server-set metadata (and without
    the last-applied annotation itself), as recorded in :data:`LAST_APPLIED`."""
    m = obj.get("metadata")
    meta: dict[str, Any] = m if isinstance(m, dict) else {}
    kept = {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")}
    annotations = {k: v for k, v in (kept.get("annotations") or {}).items() if k != LAST_APPLIED}
    if annotations:
        kept["annotations"] = annotations
    else:
        kept.pop("annotations", None)
    return {**{k: v for k, v in obj.items() if k not in ("status", "metadata")}, "metadata": kept}


def subset(want: Any, have: Any) -> bool:
    """Whether every field ``want`` sets has that value in ``have`` (null matches a missing field)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            subset(v, have.get(k)) if k in have else v is None for k, v in want.items()
        )
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(subset, want, have))
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    return bool(want == have)


def unchanged(config: dict[str, Any], live: dict[str, Any]) -> bool:
    """As kubectl apply decides it: the previous apply recorded this same configuration (so no field
    was removed since) and the live object still holds every value it sets.  An object no apply
    wrote (no record) is unchanged only when its spec, labels and annotations equal the manifest's."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    if LAST_APPLIED not in annotations:
        return _same(config, live)
    try:
        previous = json.loads(annotations[LAST_APPLIED])
    except ValueError:
        return False
    return bool(previous == config) and subset(config, live)


def _same(config: dict[str, Any], live: dict[str, Any]) -> bool:
    fields = (set(config) | set(live)) - {"metadata", "status"}
    if any(config.get(f) != live.get(f) for f in fields):
        return False
    mine, theirs = config.get("metadata") or {}, live.get("metadata") or {}
    return all((mine.get(k) or {}) == (theirs.get(k) or {}) for k in ("labels", "annotations"))


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "-f", "--filename", "files", multiple=True, required=True, metavar="FILE", help="YAML/JSON file, - = stdin."
)
@global_options
@click.pass_context
def apply(ctx: click.Context, files: tuple[str, ...]) -> None:
    """Create objects, or replace them if they changed, from YAML or JSON (one or many documents).

    Prints each object as created, configured or unchanged; an object that fails is reported
    (one line on stderr) and the others are still applied; the exit code is then 1.

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
    failed = 0
    for source, obj in objects:
        try:
            click.echo(_apply_one(ctx, c, source, obj))
        except Unreachable:
            raise  # nothing further can be applied either
        except CliError as err:
            click.echo(err.line(), err=True)
            failed += 1
    if failed:
        ctx.exit(EXIT_FAILED)


def _apply_one(ctx: click.Context, c: Client, source: str, obj: dict[str, Any]) -> str:
    """Apply one object; the line to print (``KIND/NAME created|configured|unchanged``)."""
    kind = _kind_of(obj, source)
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict) or not meta.get("name"):
        raise CliError(f"{source}: a {kind.kind} needs metadata.name")
    name = str(meta["name"])
    ns = str(meta.get("namespace") or namespace_for(ctx, kind, c.endpoint)) if kind.namespaced else ""
    if ns:
        meta["namespace"] = ns
    config = applied_config(obj)
    given = meta.get("annotations")
    annotations: dict[str, Any] = given if isinstance(given, dict) else {}
    meta["annotations"] = {**annotations, LAST_APPLIED: json.dumps(config, separators=(",", ":"), sort_keys=True)}
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
            return f"{kind.ref(name)} created"
        if unchanged(config, existing):
            return f"{kind.ref(name)} unchanged"
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
        return f"{kind.ref(name)} configured"
    raise CliError(f"{kind.ref(name)}: changed by others on every attempt")  # pragma: no cover
