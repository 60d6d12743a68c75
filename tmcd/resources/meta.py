"""ObjectMeta and Condition, as Kubernetes spells them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""Names and namespaces are DNS-1123 labels: they become NATS subject tokens and KV keys."""
Name = Annotated[
    str,
    msgspec.Meta(
        pattern=DNS1123_LABEL,
        max_length=63,
        description="A DNS-1123 label: lowercase letters, digits and '-', at most 63 characters.",
    ),
]
Namespace = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
        max_length=63,
        description="A DNS-1123 label; empty for cluster-scoped kinds, and on a create taken from the URL.",
    ),
]


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

    name: Name
    namespace: Namespace = ""
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
