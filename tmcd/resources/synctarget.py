"""SyncTarget (workload.kcp.io/v1alpha1): the cluster registry entry kept by the health agent."""

from __future__ import annotations

from typing import Literal

import msgspec

from tmcd.resources.meta import Condition, ObjectMeta

API_VERSION = "workload.kcp.io/v1alpha1"
KIND = "SyncTarget"

HealthStatus = Literal["Healthy", "Degraded", "Unhealthy", "Unknown"]


class SyncTargetSpec(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """What operators set."""

    unschedulable: bool = False
    """Cordoned: placement does not choose it."""


class SyncTargetStatus(msgspec.Struct, kw_only=True, rename="camel"):
    """What the syncer reports (through heartbeats) and tmcd concludes."""

    capacity: dict[str, str] = msgspec.field(default_factory=dict)
    """Kubernetes quantities: cpu (cores), memory (bytes), pods."""
    allocatable: dict[str, str] = msgspec.field(default_factory=dict)
    used: dict[str, str] = msgspec.field(default_factory=dict)
    last_syncer_heartbeat_time: str = ""
    synced_resources: list[str] = msgspec.field(default_factory=list)
    conditions: list[Condition] = msgspec.field(default_factory=list)
    health: HealthStatus = "Unknown"
    """tmcd's overall status: Healthy, Degraded, Unhealthy or Unknown."""
    health_reason: str = ""
    sync_paused: bool = False
    """As the syncer reports it in its heartbeats (the syncer is the source of truth)."""
    connected: bool = True
    queue_depth: int = 0
    error_ratio: float = 0.0
    syncer_version: str = ""


class SyncTarget(msgspec.Struct, kw_only=True, rename="camel"):
    """One cluster as tmcd knows it."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: SyncTargetSpec = msgspec.field(default_factory=SyncTargetSpec)
    status: SyncTargetStatus = msgspec.field(default_factory=SyncTargetStatus)
