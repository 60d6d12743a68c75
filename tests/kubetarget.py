"""Where the Kubernetes scenarios run: the fake API server (tests/fakekube.py), or a real cluster.

A scenario takes a :class:`Target` and uses only what both offer: put, get and delete objects of
a kind in a namespace of its own, list the Events there.  :func:`open_target` yields the fake
(``"fake"``) or, with ``TMCD_TEST_KUBECONFIG=/path/to/kubeconfig`` (its current context), the real
cluster (``"real"``; skipped when unset).  On a real cluster each test gets a namespace
``tmcd-test-<hex>`` (deleted afterwards), and the CRDs it needs are installed when absent and
left installed: tmcd's from ``config/crds/``, and for HTTPRoute and TrafficSplit the minimal test
stand-ins in ``tests/crds/`` (never over a cluster's own).  Use a disposable cluster (kind, k3d).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakekube import KINDS, FakeKube, Kind, write_kubeconfig
from tests.helpers import wait_for
from tmcd.config import KubeConfig
from tmcd.kube.client import Conflict, Kube, NotFound, Resource, connect

ROOT = Path(__file__).resolve().parent.parent
REAL = os.environ.get("TMCD_TEST_KUBECONFIG", "")
"""The kubeconfig of a real cluster to run the scenarios against too (its current context)."""
NO_REAL = "TMCD_TEST_KUBECONFIG is not set (no real cluster to run against)"
TARGETS = [pytest.param("fake"), pytest.param("real", marks=pytest.mark.skipif(not REAL, reason=NO_REAL))]
"""Parameters of a ``target`` fixture: every scenario on the fake, and on the real cluster if given."""
TMC_CRDS = sorted((ROOT / "config" / "crds").glob("*.yaml"))
ROUTE_CRDS = sorted((ROOT / "tests" / "crds").glob("*.yaml"))
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False)
EVENTS = Resource("", "v1", "events")

Obj = dict[str, Any]


def resource(kind: Kind) -> Resource:
    """The client's name for one of the fake's kinds."""
    return Resource(kind.group, kind.version, kind.plural, kind.namespaced)


class Target:
    """A cluster seen by a scenario: a namespace of its own, objects in it, its Events."""

    real = False
    timeout = 10.0
    """Seconds a scenario waits for an outcome (a real cluster gets longer)."""

    def __init__(self, kubeconfig: str, context: str, namespace: str) -> None:
        self.kubeconfig, self.context, self.namespace = kubeconfig, context, namespace

    def settings(self, **kw: Any) -> KubeConfig:
        """tmcd's [kube] settings for this cluster."""
        return KubeConfig(kubeconfig=self.kubeconfig, **kw)

    async def put(self, kind: Kind, obj: Obj) -> Obj:
        """Create the object in the namespace, or change the existing one's labels, annotations and spec."""
        raise NotImplementedError

    async def get(self, kind: Kind, name: str) -> Obj | None:
        """The object, or None."""
        raise NotImplementedError

    async def delete(self, kind: Kind, name: str) -> None:
        """Delete the object (watches see DELETED)."""
        raise NotImplementedError

    async def events(self, reason: str = "") -> list[Obj]:
        """The core/v1 Events in the namespace (with that reason)."""
        raise NotImplementedError

    async def status(self, kind: Kind, name: str) -> Obj:
        """The object's status ({} when it has none, or no object)."""
        obj = await self.get(kind, name)
        return dict((obj or {}).get("status") or {})


class FakeTarget(Target):
    """tests/fakekube.py: ``fake`` is there for the assertions only it can make (its request log)."""

    def __init__(self, fake: FakeKube, kubeconfig: str, context: str, namespace: str) -> None:
        super().__init__(kubeconfig, context, namespace)
        self.fake = fake

    async def put(self, kind: Kind, obj: Obj) -> Obj:
        obj.setdefault("metadata", {})["namespace"] = self.namespace
        return self.fake.put(kind, obj)

    async def get(self, kind: Kind, name: str) -> Obj | None:
        return self.fake.objects.get((kind, self.namespace, name))

    async def delete(self, kind: Kind, name: str) -> None:
        self.fake.delete(kind, self.namespace, name)

    async def events(self, reason: str = "") -> list[Obj]:
        return [
            o
            for (k, ns, _), o in self.fake.objects.items()
            if k.plural == "events" and ns == self.namespace and reason in ("", o.get("reason"))
        ]


class RealTarget(Target):
    """A real API server, through tmcd's own client."""

    real = True
    timeout = 60.0

    def __init__(self, kube: Kube, kubeconfig: str, context: str, namespace: str) -> None:
        super().__init__(kubeconfig, context, namespace)
        self.kube = kube

    async def put(self, kind: Kind, obj: Obj) -> Obj:
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
        body["metadata"] = {**obj.get("metadata", {}), "namespace": self.namespace}
        try:
            return await self.kube.create(resource(kind), self.namespace, body)
        except Conflict:  # it exists: change what a user would re-apply
            meta = body["metadata"]
            patch = {"metadata": {k: meta[k] for k in ("labels", "annotations") if k in meta}}
            if "spec" in body:
                patch["spec"] = body["spec"]
            return await self.kube.merge_patch(resource(kind), self.namespace, meta["name"], patch)

    async def get(self, kind: Kind, name: str) -> Obj | None:
        try:
            return await self.kube.get(resource(kind), self.namespace, name)
        except NotFound:
            return None

    async def delete(self, kind: Kind, name: str) -> None:
        await self.kube.delete(resource(kind), self.namespace, name)

    async def events(self, reason: str = "") -> list[Obj]:
        page = await self.kube.list(EVENTS, self.namespace)
        return [e for e in page.items if reason in ("", e.get("reason"))]


def current_context(kubeconfig: str) -> str:
    """The kubeconfig's current context."""
    return str(yaml.safe_load(Path(kubeconfig).read_text()).get("current-context") or "")


async def install_crds(kube: Kube, files: Iterable[Path], timeout: float = 60.0) -> list[str]:
    """Create each CRD the cluster does not have and wait until it is Established; the names created."""
    created = []
    for path in files:
        crd = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        try:
            await kube.get(CRDS, "", name)
            continue
        except NotFound:
            pass
        with suppress(Conflict):  # another test worker created it first
            await kube.create(CRDS, "", crd)
            created.append(name)

        async def established(name: str = name) -> bool:
            conditions = ((await kube.get(CRDS, "", name)).get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

        await wait_for(established, timeout=timeout, what=f"CRD {name} established", step=0.2)
    return created


@asynccontextmanager
async def real_target(kubeconfig: str, crds: Iterable[Path]) -> AsyncIterator[RealTarget]:
    """A namespace of its own on the cluster of ``kubeconfig`` (deleted after), with ``crds`` installed."""
    kube = await connect(KubeConfig(kubeconfig=kubeconfig))
    namespace = f"tmcd-test-{secrets.token_hex(4)}"
    try:
        await install_crds(kube, crds)
        labels = {"app.kubernetes.io/created-by": "tmcd-tests"}
        await kube.create(
            NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}
        )
        try:
            yield RealTarget(kube, kubeconfig, current_context(kubeconfig), namespace)
        finally:
            with suppress(NotFound):
                await kube.delete(NAMESPACES, "", namespace)
    finally:
        await kube.close()


@asynccontextmanager
async def open_target(
    which: str,
    tmp_path: Path,
    *,
    namespace: str = "default",
    kinds: tuple[Kind, ...] = KINDS,
    crds: Iterable[Path] = (),
) -> AsyncIterator[Target]:
    """The fake (its kubeconfig's one context is ``east``) or the real cluster (``crds`` installed there)."""
    if which == "real":
        if not REAL:
            pytest.skip(NO_REAL)
        async with real_target(REAL, crds) as real:
            yield real
        return
    fake = FakeKube(kinds=kinds)
    await fake.start()
    try:
        path = write_kubeconfig(tmp_path / "kubeconfig", {"east": fake.url})
        yield FakeTarget(fake, str(path), "east", namespace)
    finally:
        await fake.stop()
