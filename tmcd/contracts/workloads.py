"""The workload contract: how the canary sets (and puts back) one container's image on a cluster's Deployment.

It lives here, beside the traffic router contract and for the same reason: the canary and
rollback agents use it, the Kubernetes adapters (``tmcd/kube/workloads.py``) implement it, and
neither imports the other -- the runtime hands the agents a :data:`WorkloadsFactory`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tmcd.contracts.traffic import ClusterAnnotations

__all__ = ["ImageChanged", "WorkloadError", "WorkloadMissing", "Workloads", "WorkloadsFactory"]


class WorkloadError(Exception):
    """The Deployment could not be read or changed (no context, unreachable, forbidden, a refused
    patch); the message names the object and the cluster, in words a rollout's status can carry."""


class WorkloadMissing(WorkloadError):
    """The Deployment, or the container in it, does not exist, or the cluster has no kubeconfig
    context at all: there is nothing tmcd can set or put back there."""


class ImageChanged(WorkloadError):
    """The container's image is not the one the caller expected (someone else changed it)."""

    def __init__(self, message: str, current: str) -> None:
        super().__init__(message)
        self.current = current
        """The image the container has now."""


class Workloads(Protocol):
    """Reads and sets one container's image of a Deployment, per cluster."""

    async def image(self, cluster: str, namespace: str, deployment: str, container: str) -> str:
        """The container's image on ``cluster``; raises WorkloadMissing, WorkloadError."""
        ...

    async def set_image(
        self, cluster: str, namespace: str, deployment: str, container: str, image: str, *, expect: str | None = None
    ) -> str:
        """Set the container's image to ``image`` and return the image it replaced (``image`` itself
        when it was already set: nothing is written).  With ``expect``, only an ``expect`` image is
        replaced; another one raises ImageChanged.  Only that container's image changes."""
        ...

    async def close(self) -> None:
        """Release what the adapter holds (connections)."""
        ...


WorkloadsFactory = Callable[[ClusterAnnotations], Workloads]
"""(the clusters' SyncTarget annotations) -> a workload adapter; the canary and rollback agents
build one when they start and close it when they stop."""
