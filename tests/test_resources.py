"""Resource kinds: wire format, examples, the kind table and semantic validation."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import yaml

from tmcd.api.errors import StatusCause, from_validation
from tmcd.resources import kinds
from tmcd.resources.canary import CanaryRollout, CanaryRolloutSpec, Comparison, PrometheusProvider, Threshold
from tmcd.resources.examples import EXAMPLES, example
from tmcd.resources.placement import LabelSelector, LabelSelectorRequirement
from tmcd.resources.validate import label_key_errors, label_value_errors, validate

KIND_NAMES = sorted(EXAMPLES)


def _builtins(obj: object) -> dict[str, Any]:
    data = msgspec.to_builtins(obj)
    assert isinstance(data, dict)
    return data


# --- round trips and wire names ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_example_json_round_trip(kind: str) -> None:
    obj = EXAMPLES[kind]
    assert msgspec.json.decode(msgspec.json.encode(obj), type=type(obj)) == obj


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_example_yaml_round_trip(kind: str) -> None:
    obj = EXAMPLES[kind]
    text = yaml.safe_dump(msgspec.to_builtins(obj), sort_keys=False)
    assert msgspec.convert(yaml.safe_load(text), type=type(obj)) == obj


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_example_is_valid_and_matches_kind_table(kind: str) -> None:
    obj = EXAMPLES[kind]
    k = kinds.by_kind(kind)
    assert validate(obj) == []
    assert type(obj) is k.type
    assert kinds.of(obj) is k
    data = _builtins(obj)
    assert data["apiVersion"] == k.api_version
    assert data["kind"] == kind
    assert bool(data["metadata"].get("namespace")) == k.namespaced


def test_example_returns_independent_copy() -> None:
    copy = example("CanaryRollout")
    assert copy == EXAMPLES["CanaryRollout"] and copy is not EXAMPLES["CanaryRollout"]
    assert isinstance(copy, CanaryRollout)
    copy.spec.steps[1].set_weight = 20
    assert copy != EXAMPLES["CanaryRollout"]


def _keys(value: object) -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(k)
            out |= _keys(v)
    elif isinstance(value, list):
        for v in value:
            out |= _keys(v)
    return out


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_no_snake_case_on_the_wire(kind: str) -> None:
    assert not [k for k in _keys(_builtins(EXAMPLES[kind])) if "_" in k]


def test_camel_case_wire_names() -> None:
    pl = _builtins(EXAMPLES["Placement"])
    assert {"locationSelectors", "namespaceSelector", "numberOfClusters", "policy", "tolerateUnhealthy"} <= set(
        pl["spec"]
    )
    assert pl["spec"]["locationSelectors"][0]["matchExpressions"][0] == {
        "key": "region",
        "operator": "In",
        "values": ["eu-west-1", "eu-central-1"],
    }
    assert pl["spec"]["locationSelectors"][0]["matchLabels"] == {"environment": "prod"}
    assert {"phase", "selectedClusters", "candidates", "lastDecisionTime", "conditions"} <= set(pl["status"])
    assert pl["status"]["candidates"][2]["selected"] is False
    assert pl["status"]["conditions"][0]["lastTransitionTime"]

    cr = _builtins(EXAMPLES["CanaryRollout"])
    spec = cr["spec"]
    assert {"workloadRef", "stableVersion", "canaryVersion", "placementRef", "trafficRouting", "steps"} <= set(spec)
    assert spec["workloadRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "checkout",
        "container": "checkout",
        "canaryImage": "ghcr.io/acme/checkout:1.5.0",
    }
    assert spec["trafficRouting"] == {"router": "nats", "route": "checkout"}
    assert spec["steps"] == [
        {"setClusters": {"count": 1}},
        {"setWeight": 10},
        {"analysis": {"templates": ["error-rate"], "intervals": 5, "interval": 30.0}},
        {"setWeight": 50},
        {"pause": {"duration": 300.0}},
        {"setClusters": {"percent": 100}},
        {"setWeight": 100},
    ]
    assert spec["analysis"]["startStep"] == 1
    assert {
        "phase",
        "currentStepIndex",
        "currentWeight",
        "canaryClusters",
        "stableRevision",
        "canaryRevision",
        "message",
        "conditions",
        "analysisRuns",
        "observedGeneration",
        "pauseStartTime",
    } <= set(cr["status"])
    assert cr["status"]["analysisRuns"][0]["stepIndex"] == 2
    assert cr["status"]["analysisRuns"][0]["metrics"][0]["evidence"]["threshold"] == {"max": 0.01}

    full = msgspec.to_builtins(msgspec.convert(spec, type=CanaryRolloutSpec))
    assert full == spec  # defaults are omitted from the spec, and come back on decode
    decoded = msgspec.convert(cr, type=CanaryRollout)
    assert decoded.spec.revision_history_limit == 10
    assert decoded.spec.progress_deadline_seconds == 600.0

    at = _builtins(EXAMPLES["AnalysisTemplate"])
    m0, m1, m2 = at["spec"]["metrics"]
    assert {"noData", "failureLimit", "inconclusiveLimit", "consecutiveErrorLimit"} <= set(m0)
    assert m0["provider"] == {"nats": {"metric": "error_ratio", "track": "canary"}}
    assert m0["condition"] == {"threshold": {"max": 0.01}}
    assert m1["condition"] == {"comparison": {"test": "mann-whitney", "maxIncrease": 0.1, "confidence": 0.95}}
    assert set(m2["provider"]) == {"prometheus"}

    rev = _builtins(EXAMPLES["RolloutRevision"])
    assert {"rollout", "revision", "rolloutSpec", "placement", "weights", "createdBy"} <= set(rev["spec"])
    assert rev["status"]["phase"] == "Active"

    st = _builtins(EXAMPLES["SyncTarget"])
    assert st["status"]["lastSyncerHeartbeatTime"] and st["metadata"]["name"] == "sim-001"


def test_defaults_from_minimal_json() -> None:
    obj = msgspec.json.decode(
        b'{"metadata": {"name": "all"}, "spec": {}}', type=kinds.PLACEMENT.type
    )  # a Placement with every default
    data = _builtins(obj)
    assert data["spec"] == {
        "locationSelectors": [],
        "namespaceSelector": None,
        "numberOfClusters": None,
        "policy": "Spread",
        "tolerateUnhealthy": False,
    }
    assert data["status"]["phase"] == "Pending"


@pytest.mark.parametrize(
    ("kind", "path", "value", "field"),
    [
        ("Placement", ["spec", "numberOfClusters"], 0, "spec.numberOfClusters"),
        ("Placement", ["spec", "policy"], "Random", "spec.policy"),
        ("Placement", ["spec", "locationSelectors", 0, "matchExpressions", 0, "operator"], "Gt", None),
        ("CanaryRollout", ["spec", "steps", 1, "setWeight"], 101, "spec.steps[1].setWeight"),
        ("CanaryRollout", ["spec", "steps", 5, "setClusters", "percent"], 0, "spec.steps[5].setClusters.percent"),
        ("CanaryRollout", ["spec", "trafficRouting", "router"], "istio", "spec.trafficRouting.router"),
        ("CanaryRollout", ["status", "phase"], "Done", "status.phase"),
        ("AnalysisTemplate", ["spec", "metrics", 1, "condition", "comparison", "confidence"], 0.9999, None),
        ("AnalysisTemplate", ["spec", "metrics", 0, "provider", "nats", "metric"], "cpu", None),
        ("AnalysisTemplate", ["spec", "metrics", 0, "noData"], "ignore", "spec.metrics[0].noData"),
        ("RolloutRevision", ["spec", "weights", "canary"], 101, None),
        ("RolloutRevision", ["status", "phase"], "Current", "status.phase"),
    ],
)
def test_decode_rejects_with_field_path(kind: str, path: list[str | int], value: object, field: str | None) -> None:
    data: Any = _builtins(EXAMPLES[kind])
    target = data
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    with pytest.raises(msgspec.ValidationError) as exc:
        msgspec.json.decode(msgspec.json.encode(data), type=kinds.by_kind(kind).type)
    cause = from_validation(kind, "x", exc.value).causes[0]
    expected = field or ".".join(str(p) if isinstance(p, str) else "" for p in path)
    if field is not None:
        assert cause.field == expected
    else:
        assert cause.field.startswith(str(path[0]))


def test_json_schema_for_every_kind() -> None:
    _, components = msgspec.json.schema_components([k.type for k in kinds.KINDS])
    assert set(k.kind for k in kinds.KINDS) <= set(components)
    props = components["PlacementSpec"]["properties"]
    assert "numberOfClusters" in props and "description" in props["locationSelectors"]


# --- kind table ---------------------------------------------------------------------------------


def test_kind_table() -> None:
    assert [k.kind for k in kinds.KINDS] == [
        "SyncTarget",
        "Placement",
        "CanaryRollout",
        "AnalysisTemplate",
        "RolloutRevision",
    ]
    assert {k.plural: k.bucket for k in kinds.KINDS} == {
        "synctargets": "tmc-clusters",
        "placements": "tmc-placements",
        "canaryrollouts": "tmc-canaries",
        "analysistemplates": "tmc-analysistemplates",
        "rolloutrevisions": "tmc-revisions",
    }
    assert {k.plural: k.namespaced for k in kinds.KINDS} == {
        "synctargets": False,
        "placements": False,
        "canaryrollouts": True,
        "analysistemplates": True,
        "rolloutrevisions": True,
    }
    pl = kinds.by_plural("placements")
    assert pl is kinds.by_kind("Placement") is kinds.PLACEMENT
    assert (pl.singular, pl.short_names, pl.api_version) == ("placement", ("pl",), "scheduling.kcp.io/v1alpha1")
    assert (pl.group, pl.version) == ("scheduling.kcp.io", "v1alpha1")
    assert kinds.by_plural("synctargets").api_version == "workload.kcp.io/v1alpha1"
    assert kinds.by_plural("canaryrollouts").api_version == "tmc.kcp.io/v1alpha1"
    for k in kinds.KINDS:
        assert k.type.__name__ == k.kind
        assert k.plural == k.kind.lower() + "s" and k.singular == k.kind.lower()
        assert k.description
    owners: dict[str, set[str]] = {}
    for k in kinds.KINDS:
        for n in (k.kind.lower(), k.plural, k.singular, *k.short_names):
            owners.setdefault(n, set()).add(k.kind)
    assert all(len(v) == 1 for v in owners.values()), owners


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("cl", "SyncTarget"),
        ("synctarget", "SyncTarget"),
        ("SyncTargets", "SyncTarget"),
        ("pl", "Placement"),
        ("cr", "CanaryRollout"),
        ("CanaryRollout", "CanaryRollout"),
        ("at", "AnalysisTemplate"),
        ("rev", "RolloutRevision"),
        ("rolloutrevisions", "RolloutRevision"),
    ],
)
def test_lookup(name: str, kind: str) -> None:
    assert kinds.lookup(name).kind == kind


def test_lookup_errors() -> None:
    with pytest.raises(KeyError):
        kinds.by_plural("Placements")
    with pytest.raises(KeyError):
        kinds.by_kind("placement")
    with pytest.raises(KeyError):
        kinds.lookup("deployments")
    with pytest.raises(KeyError):
        kinds.of(object())


def test_kv_keys() -> None:
    assert kinds.kv_key(kinds.SYNC_TARGET, "", "sim-001") == "sim-001"
    assert kinds.kv_key(kinds.PLACEMENT, "", "checkout-eu") == "checkout-eu"
    assert kinds.kv_key(kinds.CANARY_ROLLOUT, "shop", "checkout") == "shop.checkout"
    assert kinds.parse_kv_key(kinds.CANARY_ROLLOUT, "shop.checkout") == ("shop", "checkout")
    assert kinds.parse_kv_key(kinds.PLACEMENT, "checkout-eu") == ("", "checkout-eu")
    for k in kinds.KINDS:
        ns = "shop" if k.namespaced else ""
        assert kinds.parse_kv_key(k, kinds.kv_key(k, ns, "a-1")) == (ns, "a-1")
    with pytest.raises(ValueError, match="namespace is required"):
        kinds.kv_key(kinds.ROLLOUT_REVISION, "", "checkout-2")
    for bad in ("checkout", "a.b.c", ".x", "x."):
        with pytest.raises(ValueError):
            kinds.parse_kv_key(kinds.CANARY_ROLLOUT, bad)
    for bad in ("a.b", ""):
        with pytest.raises(ValueError):
            kinds.parse_kv_key(kinds.SYNC_TARGET, bad)


# --- semantic validation --------------------------------------------------------------------------


def _set(obj: object, path: str, value: object) -> None:
    *parents, last = path.split(".")
    target: Any = obj
    for p in parents:
        target = target[int(p)] if p.isdigit() else getattr(target, p)
    if last.isdigit():
        target[int(last)] = value
    else:
        setattr(target, last, value)


_IN_NO_VALUES = LabelSelector(match_expressions=[LabelSelectorRequirement(key="region", operator="In")])
_PROM = PrometheusProvider(address="http://prometheus:9090", query="up")

CASES: list[tuple[str, list[tuple[str, object]], list[str], str]] = [
    # metadata
    ("SyncTarget", [("metadata.name", "sim_001")], ["metadata.name"], "FieldValueInvalid"),
    ("Placement", [("metadata.name", "")], ["metadata.name"], "FieldValueRequired"),
    ("Placement", [("metadata.name", "a" * 64)], ["metadata.name"], "FieldValueInvalid"),
    ("Placement", [("metadata.namespace", "shop")], ["metadata.namespace"], "FieldValueForbidden"),
    ("CanaryRollout", [("metadata.namespace", "")], ["metadata.namespace"], "FieldValueRequired"),
    ("CanaryRollout", [("metadata.namespace", "Shop")], ["metadata.namespace"], "FieldValueInvalid"),
    ("AnalysisTemplate", [("metadata.name", "error.rate")], ["metadata.name"], "FieldValueInvalid"),
    ("Placement", [("metadata.labels", {"bad key": "x"})], ["metadata.labels[bad key]"], "FieldValueInvalid"),
    ("Placement", [("metadata.labels", {"app": "-x"})], ["metadata.labels[app]"], "FieldValueInvalid"),
    ("Placement", [("metadata.labels", {"app": "x" * 64})], ["metadata.labels[app]"], "FieldValueInvalid"),
    ("Placement", [("metadata.labels", {"k" * 64: "v"})], ["metadata.labels[" + "k" * 64 + "]"], "FieldValueInvalid"),
    ("Placement", [("metadata.labels", {"Acme.io/app": "v"})], ["metadata.labels[Acme.io/app]"], "FieldValueInvalid"),
    ("Placement", [("metadata.labels", {"/app": "v"})], ["metadata.labels[/app]"], "FieldValueInvalid"),
    # placement selectors
    (
        "Placement",
        [("spec.location_selectors.0.match_expressions.0.values", [])],
        ["spec.locationSelectors[0].matchExpressions[0].values"],
        "FieldValueRequired",
    ),
    (
        "Placement",
        [("spec.location_selectors.0.match_expressions.0.operator", "Exists")],
        ["spec.locationSelectors[0].matchExpressions[0].values"],
        "FieldValueForbidden",
    ),
    (
        "Placement",
        [("spec.location_selectors.0.match_expressions.0.values", ["eu-west-1", "eu west"])],
        ["spec.locationSelectors[0].matchExpressions[0].values[1]"],
        "FieldValueInvalid",
    ),
    (
        "Placement",
        [("spec.location_selectors.0.match_expressions.0.key", "")],
        ["spec.locationSelectors[0].matchExpressions[0].key"],
        "FieldValueRequired",
    ),
    (
        "Placement",
        [("spec.location_selectors.0.match_expressions.0.operator", "Gt")],
        ["spec.locationSelectors[0].matchExpressions[0].operator"],
        "FieldValueInvalid",
    ),
    (
        "Placement",
        [("spec.location_selectors.0.match_labels", {"region": "eu west"})],
        ["spec.locationSelectors[0].matchLabels[region]"],
        "FieldValueInvalid",
    ),
    (
        "Placement",
        [("spec.namespace_selector", _IN_NO_VALUES)],
        ["spec.namespaceSelector.matchExpressions[0].values"],
        "FieldValueRequired",
    ),
    ("Placement", [("spec.number_of_clusters", 0)], ["spec.numberOfClusters"], "FieldValueInvalid"),
    # canary rollout steps
    ("CanaryRollout", [("spec.steps.1.set_weight", 101)], ["spec.steps[1].setWeight"], "FieldValueInvalid"),
    ("CanaryRollout", [("spec.steps.6.set_weight", -1)], ["spec.steps[6].setWeight"], "FieldValueInvalid"),
    ("CanaryRollout", [("spec.steps.0.set_weight", 5)], ["spec.steps[0]"], "FieldValueForbidden"),
    ("CanaryRollout", [("spec.steps.0.set_clusters", None)], ["spec.steps[0]"], "FieldValueRequired"),
    (
        "CanaryRollout",
        [("spec.steps.0.set_clusters.percent", 50)],
        ["spec.steps[0].setClusters"],
        "FieldValueForbidden",
    ),
    (
        "CanaryRollout",
        [("spec.steps.0.set_clusters.count", None)],
        ["spec.steps[0].setClusters"],
        "FieldValueRequired",
    ),
    (
        "CanaryRollout",
        [("spec.steps.0.set_clusters.count", 0)],
        ["spec.steps[0].setClusters.count"],
        "FieldValueInvalid",
    ),
    (
        "CanaryRollout",
        [("spec.steps.5.set_clusters.percent", 0)],
        ["spec.steps[5].setClusters.percent"],
        "FieldValueInvalid",
    ),
    (
        "CanaryRollout",
        [("spec.steps.5.set_clusters.percent", 101)],
        ["spec.steps[5].setClusters.percent"],
        "FieldValueInvalid",
    ),
    ("CanaryRollout", [("spec.steps.4.pause.duration", -1.0)], ["spec.steps[4].pause.duration"], "FieldValueInvalid"),
    (
        "CanaryRollout",
        [("spec.steps.2.analysis.templates", [])],
        ["spec.steps[2].analysis.templates"],
        "FieldValueRequired",
    ),
    (
        "CanaryRollout",
        [("spec.steps.2.analysis.templates", ["Error_Rate"])],
        ["spec.steps[2].analysis.templates[0]"],
        "FieldValueInvalid",
    ),
    (
        "CanaryRollout",
        [("spec.steps.2.analysis.intervals", 0)],
        ["spec.steps[2].analysis.intervals"],
        "FieldValueInvalid",
    ),
    (
        "CanaryRollout",
        [("spec.steps.2.analysis.interval", 0.0)],
        ["spec.steps[2].analysis.interval"],
        "FieldValueInvalid",
    ),
    # canary rollout spec
    ("CanaryRollout", [("spec.placement_ref", "")], ["spec.placementRef"], "FieldValueRequired"),
    ("CanaryRollout", [("spec.cluster_selector", LabelSelector())], ["spec.placementRef"], "FieldValueForbidden"),
    ("CanaryRollout", [("spec.placement_ref", "checkout.eu")], ["spec.placementRef"], "FieldValueInvalid"),
    (
        "CanaryRollout",
        [("spec.placement_ref", ""), ("spec.cluster_selector", _IN_NO_VALUES)],
        ["spec.clusterSelector.matchExpressions[0].values"],
        "FieldValueRequired",
    ),
    ("CanaryRollout", [("spec.workload_ref.name", "")], ["spec.workloadRef.name"], "FieldValueRequired"),
    ("CanaryRollout", [("spec.workload_ref.kind", "")], ["spec.workloadRef.kind"], "FieldValueRequired"),
    ("CanaryRollout", [("spec.traffic_routing.route", "a.b")], ["spec.trafficRouting.route"], "FieldValueInvalid"),
    ("CanaryRollout", [("spec.stable_version", "")], ["spec.stableVersion"], "FieldValueRequired"),
    ("CanaryRollout", [("spec.canary_version", "")], ["spec.canaryVersion"], "FieldValueRequired"),
    (
        "CanaryRollout",
        [("spec.canary_version", "ghcr.io/acme/checkout:1.4.2")],
        ["spec.canaryVersion"],
        "FieldValueInvalid",
    ),
    ("CanaryRollout", [("spec.analysis.templates", [])], ["spec.analysis.templates"], "FieldValueRequired"),
    ("CanaryRollout", [("spec.analysis.start_step", 8)], ["spec.analysis.startStep"], "FieldValueInvalid"),
    ("CanaryRollout", [("spec.revision_history_limit", -1)], ["spec.revisionHistoryLimit"], "FieldValueInvalid"),
    ("CanaryRollout", [("spec.progress_deadline_seconds", 0.0)], ["spec.progressDeadlineSeconds"], "FieldValueInvalid"),
    # analysis template
    ("AnalysisTemplate", [("spec.metrics", [])], ["spec.metrics"], "FieldValueRequired"),
    ("AnalysisTemplate", [("spec.metrics.0.name", "")], ["spec.metrics[0].name"], "FieldValueRequired"),
    ("AnalysisTemplate", [("spec.metrics.1.name", "error-ratio")], ["spec.metrics[1].name"], "FieldValueDuplicate"),
    ("AnalysisTemplate", [("spec.metrics.0.interval", 0.0)], ["spec.metrics[0].interval"], "FieldValueInvalid"),
    ("AnalysisTemplate", [("spec.metrics.0.count", 0)], ["spec.metrics[0].count"], "FieldValueInvalid"),
    ("AnalysisTemplate", [("spec.metrics.0.failure_limit", -1)], ["spec.metrics[0].failureLimit"], "FieldValueInvalid"),
    (
        "AnalysisTemplate",
        [("spec.metrics.0.inconclusive_limit", -1)],
        ["spec.metrics[0].inconclusiveLimit"],
        "FieldValueInvalid",
    ),
    (
        "AnalysisTemplate",
        [("spec.metrics.0.consecutive_error_limit", -1)],
        ["spec.metrics[0].consecutiveErrorLimit"],
        "FieldValueInvalid",
    ),
    (
        "AnalysisTemplate",
        [("spec.metrics.0.provider.prometheus", _PROM)],
        ["spec.metrics[0].provider"],
        "FieldValueForbidden",
    ),
    ("AnalysisTemplate", [("spec.metrics.0.provider.nats", None)], ["spec.metrics[0].provider"], "FieldValueRequired"),
    (
        "AnalysisTemplate",
        [("spec.metrics.2.provider.prometheus.address", "prometheus:9090")],
        ["spec.metrics[2].provider.prometheus.address"],
        "FieldValueInvalid",
    ),
    (
        "AnalysisTemplate",
        [("spec.metrics.2.provider.prometheus.query", " ")],
        ["spec.metrics[2].provider.prometheus.query"],
        "FieldValueRequired",
    ),
    (
        "AnalysisTemplate",
        [("spec.metrics.0.condition.comparison", Comparison(max_increase=0.1))],
        ["spec.metrics[0].condition"],
        "FieldValueForbidden",
    ),
    (
        "AnalysisTemplate",
        [("spec.metrics.0.condition.threshold", None)],
        ["spec.metrics[0].condition"],
        "FieldValueRequired",
    ),
    (
        "AnalysisTemplate",
        [("spec.metrics.0.condition.threshold", Threshold())],
        ["spec.metrics[0].condition.threshold"],
        "FieldValueRequired",
    ),
    (
        "AnalysisTemplate",
        [("spec.metrics.0.condition.threshold", Threshold(min=2.0, max=1.0))],
        ["spec.metrics[0].condition.threshold.min"],
        "FieldValueInvalid",
    ),
    (
        "AnalysisTemplate",
        [("spec.metrics.1.condition.comparison.confidence", 0.3)],
        ["spec.metrics[1].condition.comparison.confidence"],
        "FieldValueInvalid",
    ),
    (
        "AnalysisTemplate",
        [("spec.metrics.1.condition.comparison.confidence", 1.0)],
        ["spec.metrics[1].condition.comparison.confidence"],
        "FieldValueInvalid",
    ),
    (
        "AnalysisTemplate",
        [("spec.metrics.1.condition.comparison.max_increase", -0.1)],
        ["spec.metrics[1].condition.comparison.maxIncrease"],
        "FieldValueInvalid",
    ),
    (
        "AnalysisTemplate",
        [("spec.metrics.1.provider.nats.track", "canary")],
        ["spec.metrics[1].provider.nats.track"],
        "FieldValueInvalid",
    ),
    # rollout revision
    ("RolloutRevision", [("spec.rollout", "")], ["spec.rollout"], "FieldValueRequired"),
    ("RolloutRevision", [("spec.revision", 0)], ["spec.revision"], "FieldValueInvalid"),
    ("RolloutRevision", [("spec.placement.1", "sim 004")], ["spec.placement[1]"], "FieldValueInvalid"),
    ("RolloutRevision", [("spec.weights", {"stable": 50, "canary": 10})], ["spec.weights"], "FieldValueInvalid"),
    (
        "RolloutRevision",
        [("spec.weights", {"stable": -10, "canary": 110})],
        ["spec.weights[stable]", "spec.weights[canary]"],
        "FieldValueInvalid",
    ),
    (
        "RolloutRevision",
        [("spec.rollout_spec.steps.1.set_weight", 200)],
        ["spec.rolloutSpec.steps[1].setWeight"],
        "FieldValueInvalid",
    ),
]


@pytest.mark.parametrize(
    ("kind", "changes", "fields", "reason"),
    CASES,
    ids=[f"{c[0]}:{'+'.join(p for p, _ in c[1])}={c[1][-1][1]!r}"[:90] for c in CASES],
)
def test_validation_cause(kind: str, changes: list[tuple[str, object]], fields: list[str], reason: str) -> None:
    obj = example(kind)
    for path, value in changes:
        _set(obj, path, value)
    causes = validate(obj)
    assert [c.field for c in causes] == fields, causes
    assert causes[0].reason == reason
    assert all(isinstance(c, StatusCause) and c.message for c in causes)


def test_validation_collects_every_cause() -> None:
    obj = example("CanaryRollout")
    _set(obj, "metadata.name", "Checkout")
    _set(obj, "spec.steps.1.set_weight", 150)
    _set(obj, "spec.steps.3.set_weight", 120)
    assert [c.field for c in validate(obj)] == ["metadata.name", "spec.steps[1].setWeight", "spec.steps[3].setWeight"]


def test_validation_accepts_edge_values() -> None:
    obj = example("CanaryRollout")
    _set(obj, "spec.steps.1.set_weight", 0)
    _set(obj, "spec.steps.4.pause.duration", None)
    _set(obj, "spec.placement_ref", "")
    _set(obj, "spec.cluster_selector", LabelSelector())
    _set(obj, "metadata.labels", {"tmc.kcp.io/rollout": "checkout", "empty": ""})
    assert validate(obj) == []
    pl = example("Placement")
    _set(pl, "spec.location_selectors", [])
    _set(pl, "spec.number_of_clusters", None)
    assert validate(pl) == []


def test_validate_rejects_non_resources() -> None:
    with pytest.raises(TypeError, match="not a tmcd resource"):
        validate({"kind": "Placement"})


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("app", True),
        ("app.kubernetes.io/name", True),
        ("topology.kubernetes.io/zone", True),
        ("a_b.c-d", True),
        ("", False),
        ("-app", False),
        ("app/", False),
        ("a/b/c", False),
        ("Example.COM/app", False),
        ("x" * 63, True),
        ("x" * 64, False),
        ("a" * 254 + "/x", False),
    ],
)
def test_label_keys(key: str, ok: bool) -> None:
    assert (label_key_errors(key) == []) is ok


@pytest.mark.parametrize(
    ("value", "ok"), [("", True), ("eu-west-1", True), ("A.b_c", True), ("-x", False), ("a b", False)]
)
def test_label_values(value: str, ok: bool) -> None:
    assert (label_value_errors(value) == []) is ok
