"""The canary image on a cluster's Deployment: read one container's image, set it, put it back.

:class:`KubeWorkloads` satisfies :class:`tmcd.contracts.workloads.Workloads`; the runtime builds
it through :func:`workloads_factory` and hands the factory to the canary and rollback agents.
Each cluster is reached through its kubeconfig context, found as the traffic routers find it
(the SyncTarget's ``tmc.kcp.io/kubeconfig-context`` annotation, else ``[kube.contexts]``).

An image change is one JSON patch (RFC 6902) of the Deployment::

    [{"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "web"},
     {"op": "test", "path": "/spec/template/spec/containers/1/image", "value": "reg/web:1.0"},
     {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "reg/web:2.0"}]

Not a strategic merge patch: that one merges containers by name and would *add* a container
when the name is wrong, and it cannot say "only if the image is still the one I read".  The
``test`` ops guard exactly what tmcd changes -- the container at that index and its image -- and
not the object's resourceVersion, which the Deployment controller bumps with every status
update during a rollout.  A failed test (422, or 409 on some servers) reads the Deployment
again and retries (``MAX_ATTEMPTS``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tmcd.config import KubeConfig
from tmcd.contracts.traffic import ClusterAnnotations
from tmcd.contracts.workloads import ImageChanged, WorkloadError, WorkloadMissing, Workloads, WorkloadsFactory
from tmcd.kube.client import Clients, Conflict, Invalid, Kube, KubeError, NotFound, Resource
from tmcd.kube.routers import CONTEXT_ANNOTATION, context_of

__all__ = ["DEPLOYMENT", "MAX_ATTEMPTS", "KubeWorkloads", "container_image", "workloads_factory"]

log = logging.getLogger("tmcd.kube")

DEPLOYMENT = Resource("apps", "v1", "deployments")
MAX_ATTEMPTS = 5
"""Patches of one Deployment tried (each after a fresh read) before a conflict is an error."""


def container_image(obj: Mapping[str, Any], container: str) -> tuple[int, str] | None:
    """The index and image of ``container`` in a Deployment's pod template; None when it has none."""
    containers = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    for i, c in enumerate(containers):
        if isinstance(c, dict) and c.get("name") == container:
            return i, str(c.get("image") or "")
    return None


def _names(obj: Mapping[str, Any]) -> str:
    containers = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    return ", ".join(str(c.get("name")) for c in containers if isinstance(c, dict)) or "none"


class KubeWorkloads:
    """One container's image of a Deployment, on every cluster with a kubeconfig context."""

    def __init__(
        self, settings: KubeConfig, clusters: ClusterAnnotations | None = None, *, clients: Clients | None = None
    ) -> None:
        self.settings = settings
        self._clusters = clusters or dict
        self.clients = clients or Clients(settings)

    async def image(self, cluster: str, namespace: str, deployment: str, container: str) -> str:
        """See :class:`~tmcd.contracts.workloads.Workloads`."""
        kube = await self._client(cluster, namespace, deployment)
        _obj, _i, image = await self._read(kube, cluster, namespace, deployment, container)
        return image

    async def set_image(
        self, cluster: str, namespace: str, deployment: str, container: str, image: str, *, expect: str | None = None
    ) -> str:
        """See :class:`~tmcd.contracts.workloads.Workloads`."""
        where = self._where(cluster, namespace, deployment)
        kube = await self._client(cluster, namespace, deployment)
        _obj, i, current = await self._read(kube, cluster, namespace, deployment, container)
        for _ in range(MAX_ATTEMPTS):
            if current == image:
                return current
            if expect is not None and current != expect:
                raise ImageChanged(f"{where}: container {container} runs {current}, not {expect}", current)
            base = f"/spec/template/spec/containers/{i}"
            ops = [
                {"op": "test", "path": f"{base}/name", "value": container},
                {"op": "test", "path": f"{base}/image", "value": current},
                {"op": "replace", "path": f"{base}/image", "value": image},
            ]
            try:
                await kube.json_patch(DEPLOYMENT, namespace, deployment, ops)
            except (Conflict, Invalid) as exc:  # changed since read (a failed test op), or refused
                _obj, j, now = await self._read(kube, cluster, namespace, deployment, container)
                if isinstance(exc, Invalid) and (j, now) == (i, current):
                    raise WorkloadError(f"{where}: {_detail(exc)} ({kube.where})") from exc  # not a race: refused
                log.info("%s: %s; read it again", where, exc)
                i, current = j, now
                continue
            except KubeError as exc:
                raise self._error(exc, where, kube, "patch") from exc
            log.info("%s: container %s image %s -> %s", where, container, current, image)
            return current
        raise WorkloadError(f"{where}: still changing after {MAX_ATTEMPTS} patches")

    async def close(self) -> None:
        """Close every API server connection."""
        await self.clients.close()

    # -- one cluster -------------------------------------------------------------------------

    @staticmethod
    def _where(cluster: str, namespace: str, deployment: str) -> str:
        return f"Deployment {namespace}/{deployment} on cluster {cluster}"

    async def _client(self, cluster: str, namespace: str, deployment: str) -> Kube:
        where = self._where(cluster, namespace, deployment)
        context = context_of(self.settings, self._clusters, cluster)
        if not context:  # tmcd cannot reach it at all: as good as missing (a rollback skips it)
            raise WorkloadMissing(
                f"{where}: no kubeconfig context (annotate its SyncTarget with {CONTEXT_ANNOTATION} "
                "or add it to [kube.contexts])"
            )
        try:
            return await self.clients.get(context)
        except KubeError as exc:
            raise WorkloadError(f"{where}: {exc}") from exc

    async def _read(
        self, kube: Kube, cluster: str, namespace: str, deployment: str, container: str
    ) -> tuple[dict[str, Any], int, str]:
        where = self._where(cluster, namespace, deployment)
        try:
            obj = await kube.get(DEPLOYMENT, namespace, deployment)
        except NotFound as exc:
            raise WorkloadMissing(f"{where} not found ({kube.where})") from exc
        except KubeError as exc:
            raise self._error(exc, where, kube, "get") from exc
        found = container_image(obj, container)
        if found is None:
            raise WorkloadMissing(f"{where} has no container {container} (containers: {_names(obj)})")
        return obj, found[0], found[1]

    @staticmethod
    def _error(exc: KubeError, where: str, kube: Kube, verb: str) -> WorkloadError:
        if exc.status == 403:
            return WorkloadError(
                f"{where}: forbidden ({kube.where}): tmcd's identity needs {verb} on deployments.apps "
                "(config/kubernetes/traffic-role.yaml)"
            )
        return WorkloadError(f"{where}: {_detail(exc)} ({kube.where})")


def _detail(exc: KubeError) -> str:
    """The API server's words without the request the client put in front of them."""
    return str(exc).partition(": ")[2] or str(exc)


def workloads_factory(settings: KubeConfig, **kw: Any) -> WorkloadsFactory:
    """The factory the runtime hands to the canary and rollback agents (each adapter keeps its own
    client cache, closed with it)."""

    def build(clusters: ClusterAnnotations) -> Workloads:
        return KubeWorkloads(settings, clusters, **kw)

    return build
