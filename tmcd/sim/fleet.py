"""The simulated clusters themselves: names, labels, capacity, synced resources, drift.

Everything here is pure: randomness comes from a ``random.Random`` passed in by the caller.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from itertools import accumulate

from tmcd.contracts.messages import ConnectionState, ResourceQuantities

GIB = 1 << 30

PROVIDERS: dict[str, tuple[str, ...]] = {
    "aws": ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1"),
    "gcp": ("us-central1", "europe-west4", "asia-northeast1"),
    "azure": ("eastus", "westeurope", "southeastasia"),
}
PROVIDER_WEIGHTS: dict[str, float] = {"aws": 5.0, "gcp": 3.0, "azure": 2.0}

RESOURCE_WEIGHTS: dict[str, float] = {
    "apps/v1/deployments": 30.0,
    "v1/configmaps": 20.0,
    "v1/secrets": 12.0,
    "v1/services": 12.0,
    "networking.k8s.io/v1/ingresses": 6.0,
    "batch/v1/jobs": 6.0,
    "apps/v1/statefulsets": 4.0,
    "v1/serviceaccounts": 4.0,
    "autoscaling/v2/horizontalpodautoscalers": 3.0,
    "policy/v1/poddisruptionbudgets": 3.0,
    "v1/persistentvolumeclaims": 2.0,
    "rbac.authorization.k8s.io/v1/roles": 2.0,
    "rbac.authorization.k8s.io/v1/rolebindings": 2.0,
    "apps/v1/daemonsets": 1.0,
    "batch/v1/cronjobs": 1.0,
}
"""How often each resource kind changes, relative to the others."""

CORE_RESOURCES: tuple[str, ...] = ("apps/v1/deployments", "v1/configmaps", "v1/secrets", "v1/services")
"""Synced by every cluster; each other kind is synced by about half of them."""

NAMESPACES: tuple[str, ...] = (
    "default",
    "payments",
    "checkout",
    "catalog",
    "search",
    "identity",
    "frontend",
    "analytics",
    "platform",
    "monitoring",
)
APPS: tuple[str, ...] = (
    "api",
    "web",
    "worker",
    "cart",
    "auth",
    "billing",
    "gateway",
    "ledger",
    "notifier",
    "inventory",
    "recommender",
    "search",
)
NAME_SUFFIX: dict[str, str] = {
    "v1/configmaps": "-config",
    "v1/secrets": "-credentials",
    "networking.k8s.io/v1/ingresses": "-ingress",
    "batch/v1/jobs": "-migrate",
    "batch/v1/cronjobs": "-cleanup",
    "v1/serviceaccounts": "-sa",
    "autoscaling/v2/horizontalpodautoscalers": "-hpa",
    "policy/v1/poddisruptionbudgets": "-pdb",
    "v1/persistentvolumeclaims": "-data",
    "rbac.authorization.k8s.io/v1/roles": "-reader",
    "rbac.authorization.k8s.io/v1/rolebindings": "-reader",
}
SYNCER_VERSIONS: dict[str, float] = {"v0.11.2": 3.0, "v0.12.0": 5.0, "v0.12.1": 2.0}


def cluster_names(n: int) -> list[str]:
    """``sim-001`` .. ``sim-<n>``, zero-padded to ``max(3, len(str(n)))`` digits."""
    width = max(3, len(str(n)))
    return [f"sim-{i:0{width}d}" for i in range(1, n + 1)]


def _zones(provider: str, region: str) -> tuple[str, ...]:
    if provider == "aws":
        return tuple(f"{region}{z}" for z in "abc")
    if provider == "gcp":
        return tuple(f"{region}-{z}" for z in "abc")
    return tuple(f"{region}-{z}" for z in "123")


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


@dataclass(slots=True)
class SimCluster:
    """One simulated cluster: its static profile and its mutable syncer state."""

    name: str
    index: int
    labels: dict[str, str]
    capacity: ResourceQuantities
    allocatable: ResourceQuantities
    syncer_version: str
    resources: list[str]
    resource_cum: list[float]
    namespaces: list[str]
    weight: float
    """Share of the fleet's sync traffic, relative to the other clusters."""
    usage: list[float]
    """Fractions of allocatable cpu, memory and pods in use; drift on every heartbeat."""
    queue_base: int
    queue_depth: int = 0
    sequence: int = 0
    next_heartbeat: float = 0.0
    heartbeat_slot: float | None = None
    """Until the start-up heartbeat is sent: seconds after it that the next one is due (0..interval)."""
    first_heartbeat: float | None = None
    paused: bool = False
    conn_state: ConnectionState = "connected"
    pending_conn: deque[tuple[float, ConnectionState, str, int]] = field(default_factory=deque)
    """Scheduled connection changes: (time, state, reason, attempt)."""
    fault_disconnected: bool = False
    burst_until: float = 0.0
    burst_ratio: float = 0.0
    resync: deque[str] = field(default_factory=deque)
    """Resource kinds still to re-sync after a forced re-sync."""

    def used(self) -> ResourceQuantities:
        """Resources requested by running workloads now."""
        cpu, mem, pods = self.usage
        return ResourceQuantities(
            cpu=round(self.allocatable.cpu * cpu, 3),
            memory=int(self.allocatable.memory * mem),
            pods=int(self.allocatable.pods * pods),
        )

    def drift(self, rng: random.Random) -> None:
        """Random-walk usage and queue depth (queue depth reverts to its base)."""
        self.usage = [min(0.95, max(0.05, u + rng.gauss(0.0, 0.02))) for u in self.usage]
        pull = (self.queue_base - self.queue_depth) * 0.3
        self.queue_depth = max(0, round(self.queue_depth + pull + rng.gauss(0.0, 2.0)))

    def heartbeat_queue_depth(self, now: float) -> int:
        """Queue depth as reported: the wandering base plus re-sync and error-burst backlog."""
        extra = len(self.resync) * 25
        if self.burst_until > now:
            extra += 40
        return self.queue_depth + extra


def make_cluster(name: str, index: int, rng: random.Random) -> SimCluster:
    """Draw one cluster's profile from ``rng``."""
    provider = _pick(rng, PROVIDER_WEIGHTS)
    region = rng.choice(PROVIDERS[provider])
    zone = rng.choice(_zones(provider, region))
    nodes = rng.randint(3, 60)
    cores = rng.choice((4, 8, 16, 32))
    gib_per_core = rng.choice((2, 4, 8))
    capacity = ResourceQuantities(cpu=float(nodes * cores), memory=nodes * cores * gib_per_core * GIB, pods=nodes * 110)
    allocatable = ResourceQuantities(
        cpu=round(capacity.cpu - nodes * 0.15, 3),
        memory=int(capacity.memory * 0.92),
        pods=nodes * 108,
    )
    optional = [r for r in RESOURCE_WEIGHTS if r not in CORE_RESOURCES and rng.random() < 0.5]
    resources = [*CORE_RESOURCES, *optional]
    queue_base = rng.randint(0, 8)
    return SimCluster(
        name=name,
        index=index,
        labels={
            "region": region,
            "zone": zone,
            "provider": provider,
            "environment": rng.choices(("prod", "staging", "dev"), weights=(6, 3, 1))[0],
            "simulated": "true",
        },
        capacity=capacity,
        allocatable=allocatable,
        syncer_version=_pick(rng, SYNCER_VERSIONS),
        resources=resources,
        resource_cum=list(accumulate(RESOURCE_WEIGHTS[r] for r in resources)),
        namespaces=sorted(rng.sample(NAMESPACES, rng.randint(2, 6))),
        weight=rng.lognormvariate(0.0, 0.9),
        usage=[rng.uniform(0.2, 0.7), rng.uniform(0.25, 0.75), rng.uniform(0.1, 0.6)],
        queue_base=queue_base,
        queue_depth=queue_base,
    )


def object_name(rng: random.Random, resource: str) -> str:
    """A plausible object name for ``resource``."""
    return f"{rng.choice(APPS)}{NAME_SUFFIX.get(resource, '')}"
