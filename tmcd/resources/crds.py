"""CustomResourceDefinitions of the tmc.kcp.io kinds, generated from their msgspec types.

:func:`render` returns ``config/crds/<plural>.tmc.kcp.io.yaml`` for CanaryRollout, AnalysisTemplate
and RolloutRevision; ``tmcd docs generate`` writes them and a test fails when they are stale.

The schema is msgspec's JSON Schema of the type (with our docstrings, see
:mod:`tmcd.contracts.jsonschema`) rewritten into Kubernetes' *structural* form: ``$ref`` inlined,
``anyOf [X, null]`` folded into ``X`` with ``nullable: true``, enums typed, exclusive bounds in
OpenAPI v3.0 spelling, free-form maps as ``x-kubernetes-preserve-unknown-fields``, ``metadata``
left to the API server. Defaults are not emitted (the API server would write them into stored
objects; tmcd applies them when it decodes): they are named in the description instead. Any
keyword or union the rewrite does not know is an error, so a new field type cannot slip out
unstructural. Keys are sorted, so the output depends neither on msgspec's key order nor on
PyYAML's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tmcd.contracts import jsonschema, yamlfile
from tmcd.resources.kinds import ANALYSIS_TEMPLATE, CANARY_ROLLOUT, ROLLOUT_REVISION, Kind

COMMAND = "tmcd docs generate"
DIRECTORY = "config/crds"
CATEGORIES = ("tmc",)
"""``kubectl get tmc`` lists every tmcd custom resource."""
LABELS = {"app.kubernetes.io/name": "tmcd", "app.kubernetes.io/part-of": "tmc"}


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry."""

    name: str
    """Title case; kubectl prints it UPPERCASE, as ``kubectl tmc get`` does."""
    type: str
    """integer, number, string, boolean or date."""
    json_path: str
    description: str
    priority: int = 0
    """0: always shown; 1: only with ``-o wide``."""


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since the object was created.")

# The columns of `kubectl tmc get <kind>` (tmcd/kubectl/columns.py; NAME is kubectl's own), in the
# same order, wide ones at priority 1. A test holds the two tables together. What a CRD column
# cannot show, because its jsonPath is a plain path (no expressions, no fallbacks, no len()):
# - CanaryRollout STEP ("3/7"): computed from status.currentStepIndex, status.phase and the number
#   of spec.steps; left out.
# - CanaryRollout STABLE and CANARY: the plugin falls back to spec.stableVersion/canaryVersion
#   before tmcd has written status; here they are empty until then.
# - CanaryRollout CLUSTERS: the API server prints the list itself, not comma-joined.
COLUMNS: dict[str, tuple[PrinterColumn, ...]] = {
    CANARY_ROLLOUT.kind: (
        PrinterColumn("Phase", "string", ".status.phase", "Where the rollout is."),
        PrinterColumn("Weight", "integer", ".status.currentWeight", "Percent of traffic set to the canary."),
        AGE,
        PrinterColumn("Applied", "integer", ".status.appliedWeight", "Canary weight the router reports.", 1),
        PrinterColumn("Clusters", "string", ".status.canaryClusters", "The canary clusters.", 1),
        PrinterColumn("Stable", "string", ".status.stableVersion", "The stable version.", 1),
        PrinterColumn("Canary", "string", ".status.canaryVersion", "The canary version.", 1),
    ),
    ANALYSIS_TEMPLATE.kind: (AGE,),
    ROLLOUT_REVISION.kind: (
        PrinterColumn("Rollout", "string", ".spec.rollout", "The CanaryRollout."),
        PrinterColumn("Revision", "integer", ".spec.revision", "The revision number."),
        PrinterColumn("Phase", "string", ".status.phase", "Whether this revision is current, and how it ended."),
        AGE,
    ),
}
UNEXPRESSED_COLUMNS: dict[str, tuple[str, ...]] = {CANARY_ROLLOUT.kind: ("STEP",)}
"""``kubectl tmc get`` columns (besides NAME) that have no CRD printer column."""

CRD_KINDS: tuple[Kind, ...] = (CANARY_ROLLOUT, ANALYSIS_TEMPLATE, ROLLOUT_REVISION)
SHORT_NAMES: dict[str, tuple[str, ...]] = {
    CANARY_ROLLOUT.kind: ("cr", "canary", "canaries"),
    ANALYSIS_TEMPLATE.kind: ("at",),
    ROLLOUT_REVISION.kind: ("rev", "revision", "revisions"),
}
"""The names ``kubectl tmc`` accepts besides kind, plural and singular (tmcd/kubectl/kinds.py)."""

_ROOT_DOCS = {
    "apiVersion": "The versioned schema of this object: tmc.kcp.io/v1alpha1.",
    "kind": "The REST resource this object represents, in CamelCase.",
    "metadata": "Standard object metadata.",
}
# Keywords copied as they are (after their values are checked where it matters).
_KEEP = ("description", "format", "pattern", "minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum")
# JSON Schema keywords that carry nothing a CRD needs (defaults become text, see the module doc).
_DROP = ("title", "default", "examples", "$schema")
_STRUCTURE = ("type", "enum", "const", "properties", "required", "items", "additionalProperties")
_STRUCTURE_BOUNDS = ("exclusiveMinimum", "exclusiveMaximum")
_FREE_FORM = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


class SchemaError(ValueError):
    """A type the structural rewrite cannot express; names the field path."""


def crd_name(kind: Kind) -> str:
    """``<plural>.<group>``, the CRD's object name and file stem."""
    return f"{kind.plural}.{kind.group}"


def file_name(kind: Kind) -> str:
    """The file under ``config/crds/``."""
    return f"{crd_name(kind)}.yaml"


def header(kind: Kind) -> str:
    """The comment on top of each generated file."""
    return (
        f"# CustomResourceDefinition of {kind.kind} ({kind.api_version}) -- generated from the msgspec types in\n"
        f"# tmcd/resources/ by `{COMMAND}`; do not edit by hand. Install: kubectl apply -f {DIRECTORY}/\n"
    )


def render() -> dict[str, bytes]:
    """File name -> exact bytes of every CRD file."""
    return {file_name(k): (header(k) + yamlfile.dump(crd(k))).encode("utf-8") for k in CRD_KINDS}


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of ``kind`` as a plain document."""
    version: dict[str, Any] = {
        "name": kind.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(kind)},
    }
    if "status" in version["schema"]["openAPIV3Schema"]["properties"]:
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = [_column(c) for c in COLUMNS[kind.kind]]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name(kind), "labels": dict(LABELS)},
        "spec": {
            "group": kind.group,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(SHORT_NAMES[kind.kind]),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": [version],
        },
    }


def _column(c: PrinterColumn) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name, "type": c.type, "jsonPath": c.json_path, "description": c.description}
    if c.priority:
        out["priority"] = c.priority
    return out


def openapi_schema(kind: Kind) -> dict[str, Any]:
    """The structural ``openAPIV3Schema`` of ``kind``'s type, keys sorted."""
    refs, defs = jsonschema.schema_components([kind.type], "#/$defs/{name}")
    jsonschema.add_field_docs([kind.type], defs)
    root = structural(refs[0], defs)
    root["description"] = kind.description
    props = root["properties"]
    for key, doc in _ROOT_DOCS.items():
        props[key] = {"type": "object"} if key == "metadata" else {"type": "string"}
        props[key]["description"] = doc
    # The API server owns metadata and always sets it; status is optional.
    root["required"] = [r for r in root.get("required", []) if r != "metadata"]
    if not root["required"]:
        del root["required"]
    out: dict[str, Any] = sort_keys(root)
    return out


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A msgspec JSON Schema node (``$ref`` into ``defs``) as a structural OpenAPI v3 schema."""
    return _Rewrite(defs).node(node, "", ())


def sort_keys(node: Any) -> Any:
    """Every mapping's keys sorted (lists keep their order: ``required`` reads as declared)."""
    if isinstance(node, dict):
        return {k: sort_keys(node[k]) for k in sorted(node)}
    if isinstance(node, list):
        return [sort_keys(v) for v in node]
    return node


class _Rewrite:
    """One rewrite pass over a schema with its ``$defs``."""

    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def node(self, node: dict[str, Any], path: str, seen: tuple[str, ...]) -> dict[str, Any]:
        where = path or "<root>"
        if "$ref" in node:
            name = str(node["$ref"]).rpartition("/")[2]
            if name in seen:
                raise SchemaError(f"{where}: {name} is recursive, which a structural schema cannot express")
            if name not in self.defs:
                raise SchemaError(f"{where}: unknown $ref {node['$ref']}")
            out = self.node(self.defs[name], path, (*seen, name))
            return self._overlay(out, node, where, "$ref")
        if "anyOf" in node:
            alts = [a for a in node["anyOf"] if a != {"type": "null"}]
            if len(alts) != 1:
                raise SchemaError(f"{where}: a union of {len(alts)} types is not structural; use one type")
            out = self.node(alts[0], path, seen)
            if len(alts) < len(node["anyOf"]):
                out["nullable"] = True
                if "enum" in out and None not in out["enum"]:
                    out["enum"].append(None)  # the API server checks enum on null values too
            return self._overlay(out, node, where, "anyOf")
        return self._plain(node, path, seen)

    @staticmethod
    def _overlay(out: dict[str, Any], node: dict[str, Any], where: str, skip: str) -> dict[str, Any]:
        """The field's own description (and default) beside a ``$ref``/``anyOf`` win over the target's."""
        rest = set(node) - {skip, "description", "default", "title"}
        if rest:
            raise SchemaError(f"{where}: keyword(s) {sorted(rest)} beside {skip} have no structural equivalent")
        description = _with_default(node.get("description", out.get("description", "")), node)
        if description:
            out["description"] = description
        return out

    def _plain(self, node: dict[str, Any], path: str, seen: tuple[str, ...]) -> dict[str, Any]:
        where = path or "<root>"
        unknown = set(node) - {*_KEEP, *_DROP, *_STRUCTURE, *_STRUCTURE_BOUNDS}
        if unknown:
            raise SchemaError(f"{where}: keyword(s) {sorted(unknown)} have no structural equivalent")
        out: dict[str, Any] = {k: node[k] for k in _KEEP if k in node}
        if "description" in node or ("default" in node and _default_text(node["default"])):
            out["description"] = _with_default(node.get("description", ""), node)
        enum = [node["const"]] if "const" in node else node.get("enum")
        tp = node.get("type")
        if isinstance(tp, list):
            raise SchemaError(f"{where}: a list of types {tp} is not structural")
        if enum is not None:
            out["enum"] = sorted(enum, key=json.dumps)  # msgspec's order is its own choice
            tp = tp or _enum_type(enum, where)
        for key in _STRUCTURE_BOUNDS:
            if key in node:  # JSON Schema 2020-12 number -> OpenAPI v3.0 bound + flag
                out[key.replace("exclusiveM", "m")] = node[key]
                out[key] = True
        if tp is None:
            raise SchemaError(f"{where}: no type (a free-form value); give the field a concrete type")
        out["type"] = tp
        if tp == "object":
            self._object(node, out, path, seen)
        elif tp == "array":
            if "items" not in node:
                raise SchemaError(f"{where}: an array needs items")
            out["items"] = self.node(node["items"], f"{path}[]", seen)
        return out

    def _object(self, node: dict[str, Any], out: dict[str, Any], path: str, seen: tuple[str, ...]) -> None:
        props = node.get("properties")
        extra = node.get("additionalProperties")
        if props:
            out["properties"] = {k: self.node(v, f"{path}.{k}", seen) for k, v in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        if isinstance(extra, dict):
            if props:
                where = path or "<root>"
                raise SchemaError(f"{where}: properties and additionalProperties together are not structural")
            if _is_free_form(extra):
                out.update(_FREE_FORM)
            else:
                out["additionalProperties"] = self.node(extra, f"{path}.*", seen)
        elif extra is True or (props is None and extra is None):  # a bare dict
            out.update(_FREE_FORM)
        # additionalProperties: false is dropped: the API server prunes unknown fields anyway.


def _is_free_form(node: dict[str, Any]) -> bool:
    """A schema that admits any JSON value (msgspec's ``Any``: no type, no ref, no union)."""
    return not (set(node) - {"description", "title"})


def _enum_type(values: list[Any], where: str) -> str:
    kinds = {type(v) for v in values}
    if kinds == {str}:
        return "string"
    if kinds == {int}:
        return "integer"
    if kinds <= {int, float}:
        return "number"
    if kinds == {bool}:
        return "boolean"
    raise SchemaError(f"{where}: enum mixes types {sorted(k.__name__ for k in kinds)}")


def _default_text(value: Any) -> str:
    """A default worth writing down: a scalar that says something (not null, "", [] or {})."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool | int) or (isinstance(value, str) and value):
        return json.dumps(value)
    return ""


def _with_default(description: str, node: dict[str, Any]) -> str:
    text = _default_text(node.get("default"))
    if not text:
        return description
    sep = "" if not description else (" " if description.endswith(".") else ". ")
    return f"{description}{sep}Default: {text}."
