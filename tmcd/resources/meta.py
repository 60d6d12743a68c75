"""ObjectMeta and Condition, as Kubernetes spells them."""

from __future__ import annotations

import datetime as dt

import msgspec


class OwnerReference(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """The object that owns this one (e.g. the CanaryRollout of a ``<rollout>-canary`` Placement)."""

    api_version: str
    kind: str
    name: str
    namespace: str = ""
    """The owner's namespace (tmcd lets a cluster-scoped object name a namespaced owner)."""
    uid: str = ""
    controller: bool = True


class ObjectMeta(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Standard object metadata."""

    name: str
    namespace: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    uid: str = ""
    resource_version: str = ""
    """The KV revision the object was read at; writes compare-and-set on it."""
    generation: int = 0
    creation_timestamp: str = ""
    owner_references: list[OwnerReference] = msgspec.field(default_factory=list)


class Condition(msgspec.Struct, kw_only=True, rename="camel", frozen=True):
    """One condition: ``status`` is True, False or Unknown."""

    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""


def rfc3339(ts: float) -> str:
    """Unix seconds as an RFC 3339 UTC timestamp with second precision (Kubernetes style)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
