"""config/crds/: current, structural, faithful to the types and to `kubectl tmc get`, and accepted by kubectl."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from click.testing import CliRunner
from msgspec import inspect as mi
from openapi_schema_validator import OAS30Validator

from tests import tools
from tests.kubediscovery import discovery_kubeconfig
from tmcd.cli.main import cli
from tmcd.kubectl import columns as kubectl_columns
from tmcd.kubectl.kinds import by_kind as cli_kind
from tmcd.resources import crds
from tmcd.resources.examples import example
from tmcd.resources.kinds import CANARY_ROLLOUT, Kind
from tmcd.resources.meta import ObjectMeta

ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = ROOT / crds.DIRECTORY
KIND_IDS = [k.kind for k in crds.CRD_KINDS]

# --- a structural-schema checker, from Kubernetes' rules -------------------------------------------
# https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/
# #specifying-a-structural-schema -- stricter where tmcd never needs the freedom (no anyOf/allOf
# at all, preserve-unknown-fields only on objects, no untyped nodes).

TYPES = {"object", "array", "string", "integer", "number", "boolean"}
ALLOWED = {
    "type", "description", "title", "nullable", "enum", "format", "default",
    "properties", "required", "additionalProperties", "minProperties", "maxProperties",
    "items", "minItems", "maxItems",
    "minLength", "maxLength", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
}  # fmt: skip
ONLY_ON = {
    "object": {"properties", "required", "additionalProperties", "minProperties", "maxProperties"},
    "array": {"items", "minItems", "maxItems", "x-kubernetes-list-type", "x-kubernetes-list-map-keys"},
    "string": {"minLength", "maxLength", "pattern", "format"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
}
PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def structural_errors(root: Any) -> list[str]:
    """Everything that keeps ``root`` (an openAPIV3Schema) from being a structural schema."""
    errors: list[str] = []
    _check(root, "<root>", errors)
    if isinstance(root, dict):
        if root.get("type") != "object":
            errors.append("<root>: type must be object")
        if "default" in root:
            errors.append("<root>: no default at the root")
        meta = root.get("properties", {}).get("metadata")
        if isinstance(meta, dict):
            extra = set(meta) - {"type", "description", "properties"}
            named = set(meta.get("properties", {})) - {"name", "generateName"}
            if meta.get("type") != "object" or extra or named:
                errors.append("<root>.metadata: only type object (and name/generateName restrictions)")
    return errors


def _check(node: Any, path: str, errors: list[str]) -> None:
    if not isinstance(node, dict):
        errors.append(f"{path}: a schema must be an object, not {type(node).__name__}")
        return
    for key in sorted(set(node) - ALLOWED):
        errors.append(f"{path}: keyword {key} is not allowed in a structural schema")
    tp = node.get("type")
    if tp == "null" or isinstance(tp, list):
        errors.append(f"{path}: type {tp!r}: use one type and nullable: true")
        return
    if tp not in TYPES:
        errors.append(f"{path}: every node needs a type (one of {sorted(TYPES)}), got {tp!r}")
        return
    for flag in ("nullable", "exclusiveMinimum", "exclusiveMaximum", "x-kubernetes-preserve-unknown-fields"):
        if flag in node and not isinstance(node[flag], bool):
            errors.append(f"{path}: {flag} must be a boolean")
    family = "number" if tp == "integer" else tp
    for other, keys in ONLY_ON.items():
        for key in sorted(keys & set(node)) if other != family else ():
            errors.append(f"{path}: {key} belongs on {other} nodes, not {tp}")
    if "description" in node and not isinstance(node["description"], str):
        errors.append(f"{path}: description must be a string")
    for bound in ("Minimum", "Maximum"):
        if node.get(f"exclusive{bound}") and f"{bound.lower()}" not in node:
            errors.append(f"{path}: exclusive{bound} without {bound.lower()}")
    if "enum" in node:
        _check_enum(node, tp, path, errors)
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and (tp != "object" or preserve is not True):
        errors.append(f"{path}: x-kubernetes-preserve-unknown-fields: true only on objects")
    if tp == "object":
        _check_object(node, path, errors)
    if tp == "array":
        if "items" not in node:
            errors.append(f"{path}: an array needs items")
        else:
            _check(node["items"], f"{path}[]", errors)


def _check_enum(node: dict[str, Any], tp: str, path: str, errors: list[str]) -> None:
    values = node["enum"]
    if not isinstance(values, list) or not values:
        errors.append(f"{path}: enum must be a non-empty list")
        return
    for v in values:
        ok = isinstance(v, PYTHON_TYPES[tp]) and not (isinstance(v, bool) and tp != "boolean")
        if not ok and not (v is None and node.get("nullable")):
            errors.append(f"{path}: enum value {v!r} is not a {tp}")


def _check_object(node: dict[str, Any], path: str, errors: list[str]) -> None:
    props = node.get("properties")
    extra = node.get("additionalProperties")
    if props is not None and extra is not None:
        errors.append(f"{path}: properties and additionalProperties must not be used together")
    if extra is not None:
        if isinstance(extra, dict):
            _check(extra, f"{path}.*", errors)
        else:
            errors.append(f"{path}: additionalProperties must be a schema, not {extra!r}")
    if props is not None:
        if not isinstance(props, dict):
            errors.append(f"{path}: properties must be a map")
            return
        for name, sub in props.items():
            _check(sub, f"{path}.{name}", errors)
    required = node.get("required", [])
    if not isinstance(required, list) or len(set(required)) != len(required):
        errors.append(f"{path}: required must be a list of distinct names")
    else:
        for name in required:
            if name not in (props or {}):
                errors.append(f"{path}: required {name!r} is not a property")
    free = node.get("x-kubernetes-preserve-unknown-fields") is True
    if props is None and extra is None and not free and not path.endswith("<root>.metadata"):
        errors.append(
            f"{path}: an object with no properties keeps nothing; mark it x-kubernetes-preserve-unknown-fields"
        )


def schema_of(kind: Kind) -> dict[str, Any]:
    return crds.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


# --- the files ---------------------------------------------------------------------------------------


def test_committed_crds_are_current() -> None:
    files = crds.render()
    assert sorted(files) == sorted(p.name for p in CRD_DIR.iterdir()), "config/crds/ has files it should not"
    for name, data in files.items():
        assert (CRD_DIR / name).read_bytes() == data, f"config/crds/{name} is out of date: run `tmcd docs generate`"
    assert crds.render() == files, "the output must be deterministic"


@pytest.mark.parametrize("kind", crds.CRD_KINDS, ids=KIND_IDS)
def test_each_file_is_the_crd_its_name_says(kind: Kind) -> None:
    data = (CRD_DIR / f"{kind.plural}.tmc.kcp.io.yaml").read_bytes().decode()
    assert data.startswith("# ") and "generated" in data.splitlines()[0] and "`tmcd docs generate`" in data
    doc = yaml.safe_load(data)
    assert doc == crds.crd(kind)  # the bytes carry the document, whatever PyYAML's style
    assert (doc["apiVersion"], doc["kind"]) == ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    spec = doc["spec"]
    assert doc["metadata"]["name"] == f"{kind.plural}.tmc.kcp.io" and spec["group"] == "tmc.kcp.io"
    assert spec["scope"] == "Namespaced" and spec["names"]["kind"] == kind.kind
    assert spec["names"]["categories"] == ["tmc"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    has_status = "status" in version["schema"]["openAPIV3Schema"]["properties"]
    assert version.get("subresources") == ({"status": {}} if has_status else None)
    assert has_status == (kind.kind != "AnalysisTemplate")


def test_the_schema_keeps_docs_enums_bounds_and_nullability() -> None:
    spec = schema_of(CANARY_ROLLOUT)["properties"]["spec"]
    step = spec["properties"]["steps"]["items"]["properties"]
    assert step["setWeight"] == {
        "description": "Percent of traffic to the canary.",
        "maximum": 100,
        "minimum": 0,
        "nullable": True,
        "type": "integer",
    }
    assert spec["properties"]["trafficRouting"]["properties"]["router"]["enum"] == ["gateway-api", "nats", "smi"]
    deadline = spec["properties"]["progressDeadlineSeconds"]
    assert (deadline["minimum"], deadline["exclusiveMinimum"], deadline["description"]) == (0, True, "Default: 600.")
    assert spec["required"] == ["workloadRef", "stableVersion", "canaryVersion", "trafficRouting"]
    # a field docstring (placementRef) and a struct docstring (workloadRef) become descriptions
    assert spec["properties"]["placementRef"]["description"] == "Name of a Placement; exclusive with clusterSelector."
    assert spec["properties"]["workloadRef"]["description"] == "The workload the rollout changes."
    status = schema_of(CANARY_ROLLOUT)["properties"]["status"]["properties"]
    evidence = status["analysisRuns"]["items"]["properties"]["metrics"]["items"]["properties"]["evidence"]
    assert evidence["x-kubernetes-preserve-unknown-fields"] is True and "additionalProperties" not in evidence
    assert schema_of(CANARY_ROLLOUT)["properties"]["metadata"] == {
        "description": "Standard object metadata.",
        "type": "object",
    }


# --- structural ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", crds.CRD_KINDS, ids=KIND_IDS)
def test_every_crd_is_structural(kind: Kind) -> None:
    assert structural_errors(schema_of(kind)) == []


def _breakages() -> list[tuple[str, Any, str]]:
    """(what, a mutation of CanaryRollout's schema, what the checker must say)."""

    def spec(s: dict[str, Any]) -> dict[str, Any]:
        return s["properties"]["spec"]["properties"]  # type: ignore[no-any-return]

    return [
        ("untyped field", lambda s: spec(s)["placementRef"].pop("type"), "needs a type"),
        ("$ref", lambda s: spec(s).__setitem__("x", {"$ref": "#/$defs/X"}), "keyword $ref"),
        ("anyOf at the root", lambda s: s.__setitem__("anyOf", [{"type": "object"}]), "keyword anyOf"),
        ("null type", lambda s: spec(s)["placementRef"].__setitem__("type", "null"), "nullable"),
        ("type list", lambda s: spec(s)["placementRef"].__setitem__("type", ["string", "null"]), "nullable"),
        (
            "properties beside additionalProperties",
            lambda s: spec(s)["workloadRef"].__setitem__("additionalProperties", {"type": "string"}),
            "not be used together",
        ),
        ("additionalProperties: false", lambda s: spec(s)["workloadRef"].__setitem__("additionalProperties", False),
         "must be a schema"),
        ("preserve on a string", lambda s: spec(s)["placementRef"].__setitem__(
            "x-kubernetes-preserve-unknown-fields", True), "only on objects"),
        ("metadata with fields", lambda s: s["properties"]["metadata"].__setitem__(
            "properties", {"labels": {"type": "object"}}), "metadata"),
        ("array without items", lambda s: spec(s)["steps"].pop("items"), "needs items"),
        ("minimum on a string", lambda s: spec(s)["placementRef"].__setitem__("minimum", 1), "minimum belongs"),
        ("enum of the wrong type", lambda s: spec(s)["revisionHistoryLimit"].__setitem__("enum", ["ten"]),
         "not a integer"),
        ("nullable as text", lambda s: spec(s)["placementRef"].__setitem__("nullable", "yes"), "boolean"),
        ("required but absent", lambda s: s["properties"]["spec"]["required"].append("nope"), "not a property"),
        ("empty object", lambda s: spec(s)["workloadRef"].pop("properties"), "keeps nothing"),
        ("2020-12 exclusive bound", lambda s: spec(s)["progressDeadlineSeconds"].__setitem__(
            "exclusiveMinimum", 0), "boolean"),
    ]  # fmt: skip


@pytest.mark.parametrize(("what", "breaks", "says"), _breakages(), ids=[b[0] for b in _breakages()])
def test_the_checker_rejects_a_broken_schema(what: str, breaks: Any, says: str) -> None:
    schema = copy.deepcopy(schema_of(CANARY_ROLLOUT))
    breaks(schema)
    errors = structural_errors(schema)
    assert any(says in e for e in errors), (what, errors)


def test_types_a_structural_schema_cannot_hold_are_refused() -> None:
    defs = {"A": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}}
    with pytest.raises(crds.SchemaError, match=r"\.a: A is recursive"):
        crds.structural({"$ref": "#/$defs/A"}, defs)
    union = {"type": "object", "properties": {"v": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}
    with pytest.raises(crds.SchemaError, match=r"^\.v: a union of 2 types"):
        crds.structural(union, {})
    with pytest.raises(crds.SchemaError, match=r"\.x: no type"):
        crds.structural({"type": "object", "properties": {"x": {"description": "Any JSON value."}}}, {})
    with pytest.raises(crds.SchemaError, match=r"keyword\(s\) \['prefixItems'\]"):
        crds.structural({"type": "array", "prefixItems": [{"type": "string"}]}, {})


# --- the examples fit the schema ---------------------------------------------------------------------


def pruned(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of ``obj`` the API server would drop (pruning: not declared, no preserve-unknown-fields)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or path == ".metadata":
        return []
    out: list[str] = []
    if isinstance(obj, dict) and schema.get("type") == "object":
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, value in obj.items():
            sub = props.get(key) if props is not None else extra
            if sub is None:
                out.append(f"{path}.{key}")
            else:
                out += pruned(value, sub, f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, value in enumerate(obj):
            out += pruned(value, schema["items"], f"{path}[{i}]")
    return out


def validation_errors(obj: Any, kind: Kind) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in OAS30Validator(schema_of(kind)).iter_errors(obj)
    ]


@pytest.mark.parametrize("kind", crds.CRD_KINDS, ids=KIND_IDS)
def test_the_example_validates_and_loses_nothing_to_pruning(kind: Kind) -> None:
    obj = msgspec.to_builtins(example(kind.kind))
    assert validation_errors(obj, kind) == []
    assert pruned(obj, schema_of(kind)) == []
    # every field, defaults included (tmcd's omit_defaults leaves some out), still fits
    full = msgspec.to_builtins(msgspec.convert(obj, kind.type))
    assert validation_errors(full, kind) == [] and pruned(full, schema_of(kind)) == []


def test_the_schema_rejects_what_tmcd_rejects() -> None:
    obj = msgspec.to_builtins(example("CanaryRollout"))
    bad = copy.deepcopy(obj)
    bad["spec"]["steps"].append({"setWeight": 150})
    bad["spec"]["trafficRouting"]["router"] = "istio"
    del bad["spec"]["canaryVersion"]
    bad["status"]["currentWeight"] = "ten"
    errors = validation_errors(bad, CANARY_ROLLOUT)
    assert len(errors) == 4, errors
    for text in ("150 is greater than the maximum of 100", "'istio' is not one of", "'canaryVersion' is a required",
                 "'ten' is not of type 'integer'"):  # fmt: skip
        assert any(text in e for e in errors), (text, errors)
    with pytest.raises(msgspec.ValidationError):  # tmcd refuses it too
        msgspec.convert(bad, CANARY_ROLLOUT.type)
    # an unknown field: tmcd ignores it, the API server prunes it
    assert pruned({**obj, "spec": {**obj["spec"], "extra": 1}}, schema_of(CANARY_ROLLOUT)) == [".spec.extra"]


# --- printer columns and names ------------------------------------------------------------------------


def _field(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in json_path.lstrip(".").split("."):
        node = (node or {}).get("properties", {}).get(part)
    return node


@pytest.mark.parametrize("kind", crds.CRD_KINDS, ids=KIND_IDS)
def test_printer_columns_point_at_fields_of_the_right_type(kind: Kind) -> None:
    meta_fields = {f.encode_name for f in mi.type_info(ObjectMeta).fields}  # type: ignore[attr-defined]
    for col in crds.crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = col["jsonPath"]
        if path.startswith(".metadata."):
            assert path.removeprefix(".metadata.") in meta_fields, path
            assert col["type"] == "date"
            continue
        field = _field(schema_of(kind), path)
        assert field is not None, f"{kind.kind} column {col['name']}: {path} is not in the schema"
        want = {"integer": {"integer"}, "number": {"number", "integer"}, "string": {"string", "array"}}
        assert field["type"] in want[col["type"]], (col, field["type"])


@pytest.mark.parametrize("kind", crds.CRD_KINDS, ids=KIND_IDS)
def test_printer_columns_match_kubectl_tmc_get(kind: Kind) -> None:
    cols, wide = kubectl_columns.BY_KIND.get(kind.kind, kubectl_columns.DEFAULT)
    skipped = {"NAME", *crds.UNEXPRESSED_COLUMNS.get(kind.kind, ())}
    plugin = [(h, h in {w for w, _ in wide}) for h, _ in [*cols, *wide] if h not in skipped]
    ours = [(c.name.upper(), c.priority == 1) for c in crds.COLUMNS[kind.kind]]
    assert ours == plugin


@pytest.mark.parametrize("kind", crds.CRD_KINDS, ids=KIND_IDS)
def test_short_names_are_the_plugins(kind: Kind) -> None:
    names = crds.crd(kind)["spec"]["names"]
    plugin = cli_kind(kind.kind, kind.api_version)
    assert plugin is not None and names["shortNames"] == list(plugin.aliases)
    assert set(kind.short_names) <= set(names["shortNames"])
    assert (names["plural"], names["singular"]) == (plugin.plural, plugin.singular)


# --- generation ----------------------------------------------------------------------------------------


def test_docs_generate_writes_the_crds(tmp_path: Path) -> None:
    args = ["docs", "generate", "--dir", str(tmp_path / "docs"), "--crds-dir", str(tmp_path / "crds")]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    for name, data in crds.render().items():
        assert (tmp_path / "crds" / name).read_bytes() == data
        assert f"wrote {tmp_path / 'crds' / name}" in first.output
    (tmp_path / "crds" / "canaryrollouts.tmc.kcp.io.yaml").write_text("stale\n")
    again = CliRunner().invoke(cli, args)
    assert f"wrote {tmp_path / 'crds' / 'canaryrollouts.tmc.kcp.io.yaml'}" in again.output
    assert f"unchanged {tmp_path / 'crds' / 'rolloutrevisions.tmc.kcp.io.yaml'}" in again.output
    assert (tmp_path / "crds" / "canaryrollouts.tmc.kcp.io.yaml").read_bytes() == crds.render()[
        "canaryrollouts.tmc.kcp.io.yaml"
    ]


# --- kubectl ---------------------------------------------------------------------------------------------

# kubectl maps a manifest to a resource through discovery even with --dry-run=client: this
# loopback server answers discovery for apiextensions.k8s.io and 404 for everything else (so
# each CRD is "created (dry run)").
_DISCOVERY = {
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": []},
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": "apiextensions.k8s.io",
                "versions": [{"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"},
            }
        ],
    },
    "/apis/apiextensions.k8s.io/v1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "apiextensions.k8s.io/v1",
        "resources": [
            {
                "name": "customresourcedefinitions",
                "singularName": "customresourcedefinition",
                "namespaced": False,
                "kind": "CustomResourceDefinition",
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                "shortNames": ["crd", "crds"],
            }
        ],
    },
}


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    with discovery_kubeconfig(tmp_path / "kubeconfig", lambda: _DISCOVERY) as path:
        yield path


def test_kubectl_applies_every_crd_in_a_dry_run(kubeconfig: Path, tmp_path: Path) -> None:
    kubectl = tools.require("kubectl")
    base = [kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache")]
    cmd = [*base, "apply", "--dry-run=client", "--validate=false", "-f", str(CRD_DIR)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for kind in crds.CRD_KINDS:
        line = f"customresourcedefinition.apiextensions.k8s.io/{kind.plural}.tmc.kcp.io created (dry run)"
        assert line in proc.stdout.splitlines(), proc.stdout
    # what kubectl parsed is what tmcd generated
    proc = subprocess.run([*cmd, "-o", "json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    parsed = json.loads(proc.stdout)
    items = parsed["items"] if parsed.get("kind") == "List" else [parsed]
    by_name = {i["metadata"]["name"]: i for i in items}
    for kind in crds.CRD_KINDS:
        got = by_name[crds.crd_name(kind)]
        got["metadata"].pop("annotations", None)  # kubectl's last-applied-configuration
        assert got == crds.crd(kind)
