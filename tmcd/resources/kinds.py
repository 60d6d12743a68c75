"""The kind table: names, scope, KV bucket and type of every resource tmcd stores."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from tmcd.resources import canary, placement, synctarget


@dataclass(frozen=True)
class Kind:
    """One resource kind as the store, the HTTP and NATS APIs and OpenAPI see it."""

    kind: str
    """CamelCase kind, e.g. ``Placement``."""
    plural: str
    """URL path segment and NATS subject token, e.g. ``placements``."""
    singular: str
    short_names: tuple[str, ...]
    api_version: str
    """``group/version``."""
    namespaced: bool
    bucket: str
    """JetStream KV bucket holding the objects."""
    description: str
    type: type[msgspec.Struct]
    """The msgspec Struct class."""

    @property
    def group(self) -> str:
        """The API group (``scheduling.kcp.io``)."""
        return self.api_version.partition("/")[0]

    @property
    def version(self) -> str:
        """The API version (``v1alpha1``)."""
        return self.api_version.partition("/")[2]


SYNC_TARGET = Kind(
    kind=synctarget.KIND,
    plural="synctargets",
    singular="synctarget",
    short_names=("cl", "cluster", "clusters"),
    api_version=synctarget.API_VERSION,
    namespaced=False,
    bucket="tmc-clusters",
    description="A physical cluster registered with TMC, with its syncer heartbeat and health.",
    type=synctarget.SyncTarget,
)
PLACEMENT = Kind(
    kind=placement.KIND,
    plural="placements",
    singular="placement",
    short_names=("pl",),
    api_version=placement.API_VERSION,
    namespaced=False,
    bucket="tmc-placements",
    description="Cluster selectors and scheduling policy, with the chosen clusters and the reasons.",
    type=placement.Placement,
)
CANARY_ROLLOUT = Kind(
    kind=canary.CANARY_ROLLOUT,
    plural="canaryrollouts",
    singular="canaryrollout",
    short_names=("cr",),
    api_version=canary.API_VERSION,
    namespaced=True,
    bucket="tmc-canaries",
    description="A progressive rollout of a workload across clusters: steps, traffic weights and analysis.",
    type=canary.CanaryRollout,
)
ANALYSIS_TEMPLATE = Kind(
    kind=canary.ANALYSIS_TEMPLATE,
    plural="analysistemplates",
    singular="analysistemplate",
    short_names=("at",),
    api_version=canary.API_VERSION,
    namespaced=True,
    bucket="tmc-analysistemplates",
    description="Reusable canary analysis: metrics, providers and pass conditions.",
    type=canary.AnalysisTemplate,
)
ROLLOUT_REVISION = Kind(
    kind=canary.ROLLOUT_REVISION,
    plural="rolloutrevisions",
    singular="rolloutrevision",
    short_names=("rev",),
    api_version=canary.API_VERSION,
    namespaced=True,
    bucket="tmc-revisions",
    description="A snapshot of a rollout's spec, placement and weights that it can roll back to.",
    type=canary.RolloutRevision,
)

KINDS: tuple[Kind, ...] = (SYNC_TARGET, PLACEMENT, CANARY_ROLLOUT, ANALYSIS_TEMPLATE, ROLLOUT_REVISION)

_BY_PLURAL = {k.plural: k for k in KINDS}
_BY_KIND = {k.kind: k for k in KINDS}
_BY_TYPE: dict[type, Kind] = {k.type: k for k in KINDS}
_BY_ANY_NAME: dict[str, Kind] = {
    name.lower(): k for k in KINDS for name in (k.kind, k.plural, k.singular, *k.short_names)
}


def by_plural(plural: str) -> Kind:
    """The kind whose plural is ``plural``; KeyError if none."""
    return _BY_PLURAL[plural]


def by_kind(kind: str) -> Kind:
    """The kind named ``kind`` (CamelCase); KeyError if none."""
    return _BY_KIND[kind]


def by_type(cls: type) -> Kind:
    """The kind whose Struct class is ``cls``; KeyError if none."""
    return _BY_TYPE[cls]


def of(obj: object) -> Kind:
    """The kind of a resource object; KeyError if it is not one."""
    return _BY_TYPE[type(obj)]


def lookup(name: str) -> Kind:
    """Resolve what a user types (kind, plural, singular or short name, any case); KeyError if none."""
    return _BY_ANY_NAME[name.lower()]


def kv_key(kind: Kind, namespace: str, name: str) -> str:
    """The KV key of an object: ``name`` (cluster-scoped) or ``namespace.name``."""
    if kind.namespaced:
        if not namespace:
            raise ValueError(f"{kind.kind} is namespaced: a namespace is required")
        return f"{namespace}.{name}"
    return name


def parse_kv_key(kind: Kind, key: str) -> tuple[str, str]:
    """``(namespace, name)`` from a KV key; the namespace is ``""`` for cluster-scoped kinds."""
    if kind.namespaced:
        namespace, dot, name = key.partition(".")
        if not dot or not namespace or not name or "." in name:
            raise ValueError(f"bad {kind.kind} key {key!r}: want namespace.name")
        return namespace, name
    if not key or "." in key:
        raise ValueError(f"bad {kind.kind} key {key!r}: want name")
    return "", key
