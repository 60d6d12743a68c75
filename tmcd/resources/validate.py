"""Semantic validation msgspec cannot express, as Kubernetes-style field causes.

Every function returns a list of :class:`StatusCause` whose ``field`` is a path like
``spec.steps[2].setWeight``; an empty list means valid. Range checks repeat the msgspec
constraints so objects built in Python (not decoded) are checked too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tmcd.contracts.names import InvalidNameError, validate_name
from tmcd.resources.canary import (
    AnalysisMetric,
    AnalysisTemplate,
    CanaryRollout,
    CanaryRolloutSpec,
    CanaryStep,
    RolloutRevision,
    TrafficRouting,
    WorkloadRef,
)
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.placement import LabelSelector, Placement
from tmcd.resources.status import StatusCause
from tmcd.resources.synctarget import SyncTarget

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
FORBIDDEN = "FieldValueForbidden"
DUPLICATE = "FieldValueDuplicate"

_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_NAME = 63
_MAX_PREFIX = 253
MAX_ANNOTATIONS_BYTES = 256 * 1024
"""The total size of an object's annotation keys and values, as Kubernetes caps it (TotalAnnotationSizeLimitB)."""


class _Causes(list[StatusCause]):
    def add(self, field: str, message: str, reason: str = INVALID) -> None:
        self.append(StatusCause(field=field, message=message, reason=reason))


def _name(causes: _Causes, field: str, value: str, what: str) -> None:
    try:
        validate_name(value, what)
    except InvalidNameError as exc:
        causes.add(field, exc.reason, REQUIRED if not value else INVALID)


def label_key_errors(key: str) -> list[str]:
    """What is wrong with a label key (``[prefix/]name``), Kubernetes rules."""
    errors: list[str] = []
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        errors.append("prefix part must not be empty")
    if prefix and (len(prefix) > _MAX_PREFIX or not _DNS1123_SUBDOMAIN.match(prefix)):
        errors.append(f"prefix part must be a DNS-1123 subdomain of at most {_MAX_PREFIX} characters")
    if not name:
        errors.append("name part must not be empty")
    elif len(name) > _MAX_NAME:
        errors.append(f"name part must be at most {_MAX_NAME} characters")
    elif not _QUALIFIED_NAME.match(name):
        errors.append(
            "name part must consist of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        )
    return errors


def label_value_errors(value: str) -> list[str]:
    """What is wrong with a label value, Kubernetes rules (empty is allowed)."""
    if not value:
        return []
    if len(value) > _MAX_NAME:
        return [f"must be at most {_MAX_NAME} characters"]
    if not _QUALIFIED_NAME.match(value):
        return ["must consist of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"]
    return []


def _labels(causes: _Causes, field: str, labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        for msg in label_key_errors(key):
            causes.add(f"{field}[{key}]", f"invalid label key {key!r}: {msg}")
        for msg in label_value_errors(value):
            causes.add(f"{field}[{key}]", f"invalid label value {value!r}: {msg}")


def _selector(causes: _Causes, field: str, sel: LabelSelector) -> None:
    _labels(causes, f"{field}.matchLabels", sel.match_labels)
    for i, req in enumerate(sel.match_expressions):
        path = f"{field}.matchExpressions[{i}]"
        for msg in label_key_errors(req.key):
            causes.add(f"{path}.key", f"invalid label key {req.key!r}: {msg}", REQUIRED if not req.key else INVALID)
        if req.operator in ("In", "NotIn"):
            if not req.values:
                causes.add(f"{path}.values", f"must be non-empty when operator is {req.operator}", REQUIRED)
            for j, value in enumerate(req.values):
                for msg in label_value_errors(value):
                    causes.add(f"{path}.values[{j}]", f"invalid label value {value!r}: {msg}")
        elif req.operator in ("Exists", "DoesNotExist"):
            if req.values:
                causes.add(f"{path}.values", f"must be empty when operator is {req.operator}", FORBIDDEN)
        else:
            causes.add(
                f"{path}.operator", f"unsupported operator {req.operator!r}: want In, NotIn, Exists or DoesNotExist"
            )


def _metadata(causes: _Causes, meta: ObjectMeta, *, namespaced: bool) -> None:
    _name(causes, "metadata.name", meta.name, "resource")
    if namespaced:
        _name(causes, "metadata.namespace", meta.namespace, "namespace")
    elif meta.namespace:
        causes.add("metadata.namespace", "must be empty: the kind is cluster-scoped", FORBIDDEN)
    _labels(causes, "metadata.labels", meta.labels)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in meta.annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        causes.add(
            "metadata.annotations",
            f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes, got {size}",
            "FieldValueTooLong",
        )


def _exactly_one(causes: _Causes, field: str, options: Mapping[str, object]) -> bool:
    chosen = [name for name, value in options.items() if value is not None]
    if len(chosen) == 1:
        return True
    names = ", ".join(options)
    if chosen:
        causes.add(field, f"exactly one of {names} may be set, got {', '.join(chosen)}", FORBIDDEN)
    else:
        causes.add(field, f"exactly one of {names} is required", REQUIRED)
    return False


def _range(causes: _Causes, field: str, value: float, lo: float, hi: float | None = None) -> None:
    if value < lo or (hi is not None and value > hi):
        causes.add(field, f"must be between {lo:g} and {hi:g}" if hi is not None else f"must be at least {lo:g}")


def _positive(causes: _Causes, field: str, value: float) -> None:
    if not value > 0:
        causes.add(field, "must be greater than 0")


def _templates(causes: _Causes, field: str, templates: Sequence[str]) -> None:
    if not templates:
        causes.add(field, "at least one AnalysisTemplate name is required", REQUIRED)
    for i, name in enumerate(templates):
        _name(causes, f"{field}[{i}]", name, "analysis template")


# --- per kind --------------------------------------------------------------------------------------


def validate_synctarget(obj: SyncTarget) -> list[StatusCause]:
    """Validate a SyncTarget."""
    causes = _Causes()
    _metadata(causes, obj.metadata, namespaced=False)
    return list(causes)


def validate_placement(obj: Placement) -> list[StatusCause]:
    """Validate a Placement."""
    causes = _Causes()
    _metadata(causes, obj.metadata, namespaced=False)
    spec = obj.spec
    for i, sel in enumerate(spec.location_selectors):
        _selector(causes, f"spec.locationSelectors[{i}]", sel)
    if spec.namespace_selector is not None:
        _selector(causes, "spec.namespaceSelector", spec.namespace_selector)
    if spec.number_of_clusters is not None and spec.number_of_clusters < 1:
        causes.add("spec.numberOfClusters", "must be at least 1 (omit it to choose every eligible cluster)")
    return list(causes)


def _step(causes: _Causes, field: str, step: CanaryStep) -> None:
    options = {
        "setClusters": step.set_clusters,
        "setWeight": step.set_weight,
        "pause": step.pause,
        "analysis": step.analysis,
    }
    if not _exactly_one(causes, field, options):
        return
    if step.set_clusters is not None:
        sc = step.set_clusters
        if _exactly_one(causes, f"{field}.setClusters", {"count": sc.count, "percent": sc.percent}):
            if sc.count is not None:
                _range(causes, f"{field}.setClusters.count", sc.count, 1)
            if sc.percent is not None:
                _range(causes, f"{field}.setClusters.percent", sc.percent, 1, 100)
    if step.set_weight is not None:
        _range(causes, f"{field}.setWeight", step.set_weight, 0, 100)
    if step.pause is not None and step.pause.duration is not None:
        _range(causes, f"{field}.pause.duration", step.pause.duration, 0)
    if step.analysis is not None:
        an = step.analysis
        _templates(causes, f"{field}.analysis.templates", an.templates)
        if an.intervals is not None:
            _range(causes, f"{field}.analysis.intervals", an.intervals, 1)
        if an.interval is not None:
            _positive(causes, f"{field}.analysis.interval", an.interval)


def _traffic_routing(causes: _Causes, field: str, tr: TrafficRouting) -> None:
    _name(causes, f"{field}.route", tr.route, "route")
    services = {"stableService": tr.stable_service or "", "canaryService": tr.canary_service or ""}
    if tr.router == "nats":
        for key, value in services.items():
            if value:
                causes.add(f"{field}.{key}", "is used only by the gateway-api and smi routers; remove it for nats")
        return
    for key, value in services.items():
        if not value:
            causes.add(f"{field}.{key}", f"is required by the {tr.router} router (the Service name)", REQUIRED)
        else:
            _name(causes, f"{field}.{key}", value, "service")
    if services["stableService"] and services["stableService"] == services["canaryService"]:
        causes.add(f"{field}.canaryService", "must differ from stableService")


def _workload_ref(causes: _Causes, field: str, ref: WorkloadRef) -> None:
    _name(causes, f"{field}.name", ref.name, "workload")
    if not ref.kind:
        causes.add(f"{field}.kind", "is required", REQUIRED)
    container, image = ref.container or "", ref.canary_image or ""
    if not container and not image:
        return
    if ref.kind and (ref.api_version, ref.kind) != ("apps/v1", "Deployment"):
        got = f"{ref.kind} ({ref.api_version})"
        causes.add(f"{field}.kind", f"must be Deployment (apps/v1) to set canaryImage, got {got}")
    if not container:
        causes.add(f"{field}.container", "is required with canaryImage (the container whose image is set)", REQUIRED)
    else:
        _name(causes, f"{field}.container", container, "container")
    if not image:
        causes.add(f"{field}.canaryImage", "is required with container (the image the canary clusters run)", REQUIRED)
    elif any(c.isspace() for c in image):
        causes.add(f"{field}.canaryImage", f"must not contain whitespace, got {image!r}")


def _rollout_spec(causes: _Causes, field: str, spec: CanaryRolloutSpec) -> None:
    _workload_ref(causes, f"{field}.workloadRef", spec.workload_ref)
    if not spec.stable_version:
        causes.add(f"{field}.stableVersion", "is required", REQUIRED)
    if not spec.canary_version:
        causes.add(f"{field}.canaryVersion", "is required", REQUIRED)
    elif spec.canary_version == spec.stable_version:
        causes.add(f"{field}.canaryVersion", "must differ from stableVersion")
    ref = spec.placement_ref or None
    if _exactly_one(causes, f"{field}.placementRef", {"placementRef": ref, "clusterSelector": spec.cluster_selector}):
        if spec.placement_ref:
            _name(causes, f"{field}.placementRef", spec.placement_ref, "placement")
        if spec.cluster_selector is not None:
            _selector(causes, f"{field}.clusterSelector", spec.cluster_selector)
    _traffic_routing(causes, f"{field}.trafficRouting", spec.traffic_routing)
    for i, step in enumerate(spec.steps):
        _step(causes, f"{field}.steps[{i}]", step)
    if spec.analysis is not None:
        _templates(causes, f"{field}.analysis.templates", spec.analysis.templates)
        if spec.analysis.start_step > len(spec.steps):
            causes.add(f"{field}.analysis.startStep", f"must be at most the number of steps ({len(spec.steps)})")
    _range(causes, f"{field}.revisionHistoryLimit", spec.revision_history_limit, 0)
    _positive(causes, f"{field}.progressDeadlineSeconds", spec.progress_deadline_seconds)


def validate_canaryrollout(obj: CanaryRollout) -> list[StatusCause]:
    """Validate a CanaryRollout."""
    causes = _Causes()
    _metadata(causes, obj.metadata, namespaced=True)
    _rollout_spec(causes, "spec", obj.spec)
    return list(causes)


def _metric(causes: _Causes, field: str, m: AnalysisMetric) -> None:
    if not m.name:
        causes.add(f"{field}.name", "is required", REQUIRED)
    _positive(causes, f"{field}.interval", m.interval)
    _range(causes, f"{field}.count", m.count, 1)
    for attr, wire in (
        ("failure_limit", "failureLimit"),
        ("inconclusive_limit", "inconclusiveLimit"),
        ("consecutive_error_limit", "consecutiveErrorLimit"),
    ):
        _range(causes, f"{field}.{wire}", getattr(m, attr), 0)
    p = m.provider
    providers = {"nats": p.nats, "prometheus": p.prometheus, "syncer": p.syncer}
    if _exactly_one(causes, f"{field}.provider", providers) and p.prometheus:
        if not p.prometheus.address.startswith(("http://", "https://")):
            causes.add(f"{field}.provider.prometheus.address", "must be an http:// or https:// URL")
        if not p.prometheus.query.strip():
            causes.add(f"{field}.provider.prometheus.query", "is required", REQUIRED)
    c = m.condition
    if not _exactly_one(causes, f"{field}.condition", {"threshold": c.threshold, "comparison": c.comparison}):
        return
    if c.threshold is not None:
        t = c.threshold
        if t.min is None and t.max is None:
            causes.add(f"{field}.condition.threshold", "at least one of min or max is required", REQUIRED)
        elif t.min is not None and t.max is not None and t.min > t.max:
            causes.add(f"{field}.condition.threshold.min", f"must not exceed max ({t.max:g})")
    if c.comparison is not None:
        _range(causes, f"{field}.condition.comparison.maxIncrease", c.comparison.max_increase, 0)
        _range(causes, f"{field}.condition.comparison.confidence", c.comparison.confidence, 0.5, 0.999)
        if p.nats is not None and p.nats.track is not None:
            causes.add(f"{field}.provider.nats.track", "must be unset for a comparison (it measures both tracks)")


def validate_analysistemplate(obj: AnalysisTemplate) -> list[StatusCause]:
    """Validate an AnalysisTemplate."""
    causes = _Causes()
    _metadata(causes, obj.metadata, namespaced=True)
    if not obj.spec.metrics:
        causes.add("spec.metrics", "at least one metric is required", REQUIRED)
    seen: set[str] = set()
    for i, m in enumerate(obj.spec.metrics):
        _metric(causes, f"spec.metrics[{i}]", m)
        if m.name in seen:
            causes.add(f"spec.metrics[{i}].name", f"duplicate metric name {m.name!r}", DUPLICATE)
        seen.add(m.name)
    return list(causes)


def validate_rolloutrevision(obj: RolloutRevision) -> list[StatusCause]:
    """Validate a RolloutRevision."""
    causes = _Causes()
    _metadata(causes, obj.metadata, namespaced=True)
    spec = obj.spec
    _name(causes, "spec.rollout", spec.rollout, "rollout")
    _range(causes, "spec.revision", spec.revision, 1)
    _rollout_spec(causes, "spec.rolloutSpec", spec.rollout_spec)
    for i, cluster in enumerate(spec.placement):
        _name(causes, f"spec.placement[{i}]", cluster, "cluster")
    for track, weight in spec.weights.items():
        _range(causes, f"spec.weights[{track}]", weight, 0, 100)
    if spec.weights and sum(spec.weights.values()) != 100:
        causes.add("spec.weights", f"must sum to 100, got {sum(spec.weights.values())}")
    return list(causes)


_VALIDATORS: dict[type, Callable[[Any], list[StatusCause]]] = {
    SyncTarget: validate_synctarget,
    Placement: validate_placement,
    CanaryRollout: validate_canaryrollout,
    AnalysisTemplate: validate_analysistemplate,
    RolloutRevision: validate_rolloutrevision,
}


def validate(obj: object) -> list[StatusCause]:
    """Validate any resource object; TypeError for an object that is not one."""
    try:
        fn = _VALIDATORS[type(obj)]
    except KeyError:
        raise TypeError(f"not a tmcd resource: {type(obj).__name__}") from None
    return fn(obj)
