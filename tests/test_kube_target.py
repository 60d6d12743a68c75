"""The real-cluster path of the Kubernetes tests (tests/kubetarget.py), run here against the fake API
server standing in for a cluster, so that the code behind ``TMCD_TEST_KUBECONFIG`` runs in every
test run even where no cluster is at hand: the CRDs installed when absent, a namespace of its own
(deleted after), objects put, changed, read and deleted through tmcd's client, Events listed, and
one router scenario run on it as it would run on a real cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests import test_kube_routers as routers
from tests.fakekube import (
    ANALYSISTEMPLATE,
    CANARYROLLOUT,
    CRD,
    EVENT,
    HTTPROUTE,
    KINDS,
    NAMESPACE,
    FakeKube,
    write_kubeconfig,
)
from tests.kubetarget import ROUTE_CRDS, TARGETS, TMC_CRDS, RealTarget, real_target
from tests.test_crds import structural_errors
from tests.test_kube_watch import cr
from tmcd.kube.routers import GatewayApiRouter

CLUSTER_KINDS = (*KINDS, ANALYSISTEMPLATE, EVENT, NAMESPACE, CRD)
CRD_NAMES = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in (*TMC_CRDS, *ROUTE_CRDS)}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[FakeKube]:
    fake = FakeKube(kinds=CLUSTER_KINDS)
    await fake.start()
    write_kubeconfig(tmp_path / "kubeconfig", {"kind-test": fake.url})
    try:
        yield fake
    finally:
        await fake.stop()


async def test_the_real_cluster_path_installs_what_is_missing_and_cleans_up(cluster: FakeKube, tmp_path: Path) -> None:
    kubeconfig = str(tmp_path / "kubeconfig")
    async with real_target(kubeconfig, [*TMC_CRDS, *ROUTE_CRDS]) as t:
        assert isinstance(t, RealTarget) and t.real and t.context == "kind-test"
        ns = t.namespace
        assert ns.startswith("tmcd-test-") and (NAMESPACE, "", ns) in cluster.objects
        assert {name for (k, _, name) in cluster.objects if k == CRD} == CRD_NAMES
        created = await t.put(CANARYROLLOUT, cr("web"))
        assert created["metadata"]["namespace"] == ns and created["spec"]["canaryVersion"] == "v2"
        changed = await t.put(CANARYROLLOUT, cr("web", canary_version="v3"))  # exists: its spec is patched
        assert changed["spec"]["canaryVersion"] == "v3" and changed["metadata"]["generation"] == 2
        got = await t.get(CANARYROLLOUT, "web")
        assert got is not None and got["metadata"]["uid"] == created["metadata"]["uid"]
        assert await t.status(CANARYROLLOUT, "web") == {}
        cluster.put(EVENT, {"metadata": {"name": "e1", "namespace": ns}, "reason": "Paused"})
        cluster.put(EVENT, {"metadata": {"name": "e2", "namespace": "elsewhere"}, "reason": "Paused"})
        assert [e["metadata"]["name"] for e in await t.events("Paused")] == ["e1"]
        await t.delete(CANARYROLLOUT, "web")
        assert await t.get(CANARYROLLOUT, "web") is None
    assert (NAMESPACE, "", ns) not in cluster.objects  # the namespace is deleted after the test
    posts = len(cluster.of("POST", "/customresourcedefinitions"))
    async with real_target(kubeconfig, [*TMC_CRDS, *ROUTE_CRDS]) as again:
        assert again.namespace != ns
    assert len(cluster.of("POST", "/customresourcedefinitions")) == posts  # installed once, then found


async def test_a_router_scenario_runs_on_the_real_cluster_path(cluster: FakeKube, tmp_path: Path) -> None:
    async with real_target(str(tmp_path / "kubeconfig"), ROUTE_CRDS) as t:
        await routers.test_a_router_sets_weights_and_reads_them_back(t, GatewayApiRouter, HTTPROUTE, routers.httproute)
        assert cluster.of("PATCH", f"/namespaces/{t.namespace}/httproutes/web")


def test_the_real_case_is_collected_and_skipped_without_a_kubeconfig() -> None:
    real = [p for p in TARGETS if p.values == ("real",)]
    assert len(real) == 1
    marks = [m for m in real[0].marks if m.name == "skipif"]
    assert marks and "TMCD_TEST_KUBECONFIG" in marks[0].kwargs["reason"]


@pytest.mark.parametrize("path", ROUTE_CRDS, ids=lambda p: p.name)
def test_the_stand_in_route_crds_are_structural_and_marked_as_test_fixtures(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# TEST FIXTURE")
    crd = yaml.safe_load(text)
    assert crd["metadata"]["labels"]["app.kubernetes.io/created-by"] == "tmcd-tests"
    for version in crd["spec"]["versions"]:
        assert structural_errors(version["schema"]["openAPIV3Schema"]) == []
