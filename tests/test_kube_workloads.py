"""Canary images on Deployments.

The Kubernetes adapter (``tmcd/kube/workloads.py``) against the fake API server over real sockets:
the requests it sends and each kind of answer.  Then the canary and rollback agents (real
nats-server, fake clock) setting the canary image on their canary clusters and putting it back,
a crash in the middle of an action and of the rollback, success, and the errors a rollout's
status carries.  With ``TMCD_TEST_KUBECONFIG`` the scenarios on the ``istack`` fixture also run
against that real cluster (its current context as cluster c0, the Deployment ``web`` in
``default``, created when missing); skipped otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.fakekube import DEPLOYMENT, HTTPROUTE, FakeKube, serve, write_kubeconfig
from tests.helpers import wait_for
from tests.kubeimages import (
    CANARY,
    CLUSTERS,
    PATH,
    PAUSE,
    PROXY,
    REAL,
    STABLE,
    ImageStack,
    deployment,
    image_stack,
    images,
    steps,
    with_image,
)
from tests.test_kube_routers import httproute
from tmcd.canary.model import Applied
from tmcd.canary.reversal import route_of
from tmcd.config import KubeConfig
from tmcd.contracts import subjects
from tmcd.contracts.messages import CanaryEvent, RollbackEvent
from tmcd.contracts.workloads import ImageChanged, WorkloadError, WorkloadMissing
from tmcd.kube.routers import CONTEXT_ANNOTATION
from tmcd.kube.workloads import KubeWorkloads
from tmcd.kubectl.describe_canary import RecentEvents, describe_canary
from tmcd.resources.canary import (
    CanaryRollout,
    CanaryRolloutSpec,
    CanaryStep,
    SetClusters,
    StepAction,
    TrafficRouting,
    WorkloadImage,
    WorkloadRef,
)
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.validate import validate
from tmcd.rollback.model import RollbackEnv, advance, begin, stage_applied
from tmcd.runtime.embedded import EmbeddedNats

# -- the adapter -------------------------------------------------------------------------------------


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[FakeKube, FakeKube, KubeWorkloads]]:
    async for east, west in serve(2):
        path = write_kubeconfig(tmp_path / "kubeconfig", {"east": east.url, "west": west.url})
        w = KubeWorkloads(KubeConfig(kubeconfig=str(path), contexts={"east": "east", "west": "west"}))
        try:
            yield east, west, w
        finally:
            await w.close()


async def test_set_image_sends_one_json_patch_guarding_that_container(fleet: Any) -> None:
    east, _west, w = fleet
    east.put(DEPLOYMENT, deployment())
    assert await w.image("east", "default", "web", "web") == STABLE
    before = len(east.requests)
    assert await w.set_image("east", "default", "web", "web", CANARY) == STABLE
    sent = east.requests[before:]
    assert [(q.method, q.path) for q in sent] == [("GET", PATH), ("PATCH", PATH)]
    assert (sent[1].content_type, sent[1].authorization) == ("application/json-patch+json", "Bearer token-east")
    assert sent[1].body == [
        {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "web"},
        {"op": "test", "path": "/spec/template/spec/containers/1/image", "value": STABLE},
        {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": CANARY},
    ]
    assert images(east) == {"proxy": PROXY, "web": CANARY}  # only that container
    patches = len(east.of("PATCH"))
    assert await w.set_image("east", "default", "web", "web", CANARY) == CANARY  # already set: no write
    with pytest.raises(ImageChanged) as info:  # only the image the caller expects is replaced
        await w.set_image("east", "default", "web", "web", STABLE, expect="reg.example/web:0.9")
    assert info.value.current == CANARY and len(east.of("PATCH")) == patches
    assert await w.set_image("east", "default", "web", "web", STABLE, expect=CANARY) == CANARY
    assert images(east)["web"] == STABLE


@pytest.mark.parametrize("status", [422, 409])
async def test_an_image_changed_between_read_and_patch_is_read_again(tmp_path: Path, status: int) -> None:
    async for (fake,) in serve(1, test_failure_status=status):
        path = write_kubeconfig(tmp_path / "kc", {"east": fake.url})
        w = KubeWorkloads(KubeConfig(kubeconfig=str(path), contexts={"east": "east"}))
        try:
            fake.put(DEPLOYMENT, deployment())
            fake.before_patch.append(with_image("reg.example/web:1.1"))  # someone else writes first
            assert await w.set_image("east", "default", "web", "web", CANARY) == "reg.example/web:1.1"
            assert [q.method for q in fake.requests] == ["GET", "PATCH", "GET", "PATCH"]
            assert images(fake)["web"] == CANARY
            fake.before_patch.append(with_image("reg.example/web:hotfix"))
            with pytest.raises(ImageChanged, match=r"runs reg\.example/web:hotfix, not reg\.example/web:2\.0"):
                await w.set_image("east", "default", "web", "web", STABLE, expect=CANARY)
            assert images(fake)["web"] == "reg.example/web:hotfix"  # theirs, left alone
            fake.before_patch.extend(with_image(f"reg.example/web:{i}") for i in range(10))
            with pytest.raises(WorkloadError, match="on cluster east: still changing after 5 patches"):
                await w.set_image("east", "default", "web", "web", CANARY)
        finally:
            await w.close()


async def test_each_kind_of_answer_is_a_clear_error(fleet: Any) -> None:
    east, west, w = fleet
    with pytest.raises(WorkloadMissing, match=r"^Deployment default/web on cluster east not found \(context east\)$"):
        await w.image("east", "default", "web", "web")
    east.put(DEPLOYMENT, deployment(web=False))
    with pytest.raises(WorkloadMissing, match=r"on cluster east has no container web \(containers: proxy\)"):
        await w.set_image("east", "default", "web", "web", CANARY)
    east.put(DEPLOYMENT, deployment())
    east.forbidden.add(("patch", "deployments"))
    with pytest.raises(WorkloadError, match=r"forbidden \(context east\): tmcd's identity needs patch on deployments"):
        await w.set_image("east", "default", "web", "web", CANARY)
    east.forbidden = {("get", "deployments")}
    with pytest.raises(WorkloadError, match=r"needs get on deployments\.apps") as info:
        await w.image("east", "default", "web", "web")
    assert not isinstance(info.value, WorkloadMissing)
    assert east.requests[-1].method == "GET" and images(east)["web"] == STABLE
    with pytest.raises(WorkloadMissing, match="cluster nowhere: no kubeconfig context"):
        await w.set_image("nowhere", "default", "web", "web", CANARY)
    await west.stop()
    with pytest.raises(WorkloadError, match=r"Deployment default/web on cluster west: .*context west") as info:
        await w.image("west", "default", "web", "web")
    assert not isinstance(info.value, WorkloadMissing)  # unreachable is not missing: tried again


async def test_a_synctarget_annotation_names_the_context(fleet: Any) -> None:
    _east, west, w = fleet
    west.put(DEPLOYMENT, deployment())
    by_annotation = KubeWorkloads(
        KubeConfig(kubeconfig=w.settings.kubeconfig), lambda: {"prod-1": {CONTEXT_ANNOTATION: "west"}}
    )
    try:
        assert await by_annotation.set_image("prod-1", "default", "web", "web", CANARY) == STABLE
        assert images(west)["web"] == CANARY
    finally:
        await by_annotation.close()


# -- the canary and rollback agents ---------------------------------------------------------------------


REAL_TOO = ["fake", pytest.param("real", marks=pytest.mark.skipif(not REAL, reason="TMCD_TEST_KUBECONFIG is not set"))]


@pytest.fixture(params=REAL_TOO)
async def istack(
    nats_server: EmbeddedNats, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[ImageStack]:
    """The stack on fake API servers, and on the real cluster when there is one."""
    async with image_stack(nats_server.url, tmp_path, str(request.param)) as s:
        yield s


@pytest.fixture
async def fstack(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[ImageStack]:
    """The stack on fake API servers only (scenarios that need to change what the servers answer)."""
    async with image_stack(nats_server.url, tmp_path, "fake") as s:
        yield s


async def test_a_canary_sets_its_image_on_the_canary_clusters_and_a_rollback_puts_it_back(istack: ImageStack) -> None:
    s = istack
    n = 2 if s.fakes else 1
    reachable = list(s.fakes) or ["c0"]
    await s.start_agent()
    await s.put_rollout([CanaryStep(set_clusters=SetClusters(count=n)), CanaryStep(set_weight=20), PAUSE])
    r = await s.phase_is("web", "Paused")
    canaries = r.status.canary_clusters
    assert len(canaries) == n
    for c in reachable:
        assert (await s.image(c), await s.image(c, "proxy")) == (CANARY if c in canaries else STABLE, PROXY), c
    assert [(x.cluster, x.deployment, x.container, x.image, x.previous, x.state) for x in r.status.workload_images] == [
        (c, "web", "web", CANARY, STABLE, "Canary") for c in canaries
    ]
    events = await s.read(subjects.canary_event(s.ns, "web"), CanaryEvent)
    chosen = next(e for e in events if e.type == "step" and "applied canary clusters" in e.message)
    assert chosen.evidence["images"] == {c: {"image": CANARY, "previous": STABLE} for c in canaries}
    assert (
        f"; canary image {CANARY} on {', '.join(canaries)} (container web of Deployment {s.ns}/web)" in chosen.message
    )

    assert (await s.control("web", "abort")).ok
    r = await s.phase_is("web", "RolledBack")
    assert [await s.image(c) for c in reachable] == [STABLE] * len(reachable)
    assert r.status.workload_images == []  # cleared at CleaningUp
    stages = await s.read(subjects.rollback_event(s.ns, "web"), RollbackEvent)
    assert [e.stage for e in stages] == ["started", "traffic", "placement", "cleanup", "completed"]
    placement = stages[2]
    assert placement.clusters == canaries
    put_back = ", ".join(f"{c} ({STABLE})" for c in canaries)
    assert placement.reason == f"image put back on {put_back}; canary placement emptied"


async def test_success_keeps_the_canary_image_and_drops_the_records(istack: ImageStack) -> None:
    s = istack
    reachable = list(s.fakes) or ["c0"]
    await s.start_agent()
    await s.put_rollout(steps(1))
    await s.phase_is("web", "Paused")
    assert (await s.control("web", "promote", full=True)).ok
    r = await s.phase_is("web", "Succeeded")
    assert r.status.stable_version == "v2" and r.status.workload_images == []
    # promoting is 100 % canary on every eligible cluster: each got the image first, and keeps it
    assert [await s.image(c) for c in reachable] == [CANARY] * len(reachable)
    events = await s.read(subjects.canary_event(s.ns, "web"), CanaryEvent)
    final = next(e for e in events if e.type == "step" and e.evidence.get("action") == "finalize")
    assert final.evidence["keptImages"] == dict.fromkeys(reachable, CANARY)


@pytest.mark.parametrize("patched", [False, True], ids=["before-the-patch", "after-the-patch"])
async def test_a_crash_in_the_middle_of_an_action_applies_only_that_action_again(
    fstack: ImageStack, patched: bool
) -> None:
    s = fstack
    await s.start_agent()
    await s.put_rollout(steps(1, 2))
    r = await s.phase_is("web", "Paused")
    await s.stop_agent()
    # as a tmcd killed while applying the second setClusters: recorded Applying, with the new
    # cluster's image recorded -- and (after-the-patch) already set on its Deployment
    first = r.status.canary_clusters[0]
    new = next(c for c in CLUSTERS if c != first)
    assert r.status.action is not None
    action = StepAction(
        kind="clusters", step_index=2, clusters=sorted([first, new]), generation=r.status.action.generation + 1
    )
    rec = WorkloadImage(cluster=new, deployment="web", container="web", image=CANARY, previous=STABLE)
    st = msgspec.structs.replace(
        r.status,
        phase="Progressing",
        current_step_index=2,
        pause_start_time="",
        pause_reason="",
        action=action,
        workload_images=sorted([*r.status.workload_images, rec], key=lambda x: x.cluster),
    )
    await s.canaries.put("shop.web", msgspec.structs.replace(r, status=st))
    if patched:
        await s.observer.set_image(new, "shop", "web", "web", CANARY)
    for f in s.fakes.values():
        f.requests.clear()
    calls = len(s.router.calls)
    await s.start_agent()

    async def last_pause() -> CanaryRollout | None:
        r = await s.get("web")
        return r if r.status.phase == "Paused" and r.status.current_step_index == 3 else None

    r = await wait_for(last_pause, what="the last pause")
    patches = {c: len(f.of("PATCH", "/deployments/web")) for c, f in s.fakes.items()}
    assert patches == {c: int(c == new and not patched) for c in CLUSTERS}  # set once, or not again
    assert (await s.image(first), await s.image(new)) == (CANARY, CANARY)
    assert [(x.cluster, x.previous) for x in r.status.workload_images] == sorted([(first, STABLE), (new, STABLE)])
    assert [c[0] for c in s.router.calls[calls:]] == [0]  # the action once more, nothing else


async def test_a_crash_in_the_rollbacks_restoring_stage_puts_back_only_what_is_left(fstack: ImageStack) -> None:
    s = fstack
    await s.start_agent()
    await s.put_rollout(steps(2))
    r = await s.phase_is("web", "Paused")
    await s.stop_agent()
    # as a tmcd killed in Restoring after it put back a's image, before b's
    a, b = r.status.canary_clusters
    r = msgspec.structs.replace(r, status=begin(r, s.clock.now, trigger="Aborted", reason="aborted by request"))
    r = msgspec.structs.replace(r, status=advance(r, RollbackEnv(now=s.clock.now)).status)
    assert r.status.rollback is not None
    gen = r.status.rollback.generation
    await s.router.set_weights(route_of(r), 0, [], gen)
    r = msgspec.structs.replace(r, status=stage_applied(r, s.clock.now)[0])
    r = msgspec.structs.replace(r, status=advance(r, RollbackEnv(now=s.clock.now, applied=Applied(gen, {}))).status)
    assert r.status.rollback is not None and r.status.rollback.phase == "Restoring"
    await s.canaries.put("shop.web", r)
    await s.observer.set_image(a, "shop", "web", "web", STABLE)
    for f in s.fakes.values():
        f.requests.clear()
    await s.start_agent()
    done = await s.phase_is("web", "RolledBack")
    assert {c: len(f.of("PATCH", "/deployments/web")) for c, f in s.fakes.items()} == {c: int(c == b) for c in CLUSTERS}
    assert [await s.image(c) for c in CLUSTERS] == [STABLE] * 6 and done.status.workload_images == []
    placement = next(
        e for e in await s.read(subjects.rollback_event("shop", "web"), RollbackEvent) if e.stage == "placement"
    )
    assert placement.reason.startswith(f"image put back on {a} ({STABLE}), {b} ({STABLE})")


async def test_a_missing_deployment_shows_in_the_status_until_it_is_there(fstack: ImageStack) -> None:
    s = fstack
    for f in s.fakes.values():
        f.delete(DEPLOYMENT, "shop", "web")
    await s.start_agent()
    await s.put_rollout(steps(1))

    async def stuck() -> CanaryRollout | None:
        r = await s.get("web")
        return r if r.status.message.startswith("workload: Deployment shop/web on cluster c") else None

    r = await wait_for(stuck, what="the workload error in the status")
    assert "not found (context ctx-c" in r.status.message and r.status.workload_images == []
    assert r.status.action is not None and r.status.action.state == "Applying"  # tried again, not skipped
    assert s.router.calls == []  # no traffic to a canary cluster without its image
    for f in s.fakes.values():
        f.put(DEPLOYMENT, deployment(ns="shop"))
    r = await s.phase_is("web", "Paused")
    assert [x.cluster for x in r.status.workload_images] == r.status.canary_clusters


async def test_without_the_kubernetes_adapters_such_a_rollout_is_degraded(fstack: ImageStack) -> None:
    s = fstack
    s.factory = None  # as agents built without the runtime's factories
    await s.start_agent()
    await s.put_rollout(steps(1))
    r = await s.phase_is("web", "Degraded")
    assert r.status.message == (
        "spec.workloadRef.canaryImage: setting the canary image needs the Kubernetes adapters, "
        "which this process was started without"
    )
    assert all(not f.of("PATCH") for f in s.fakes.values())


async def test_a_refused_restore_holds_the_rollback_until_it_is_allowed(fstack: ImageStack) -> None:
    s = fstack
    await s.start_agent()
    await s.put_rollout(steps(2))
    a, b = (await s.phase_is("web", "Paused")).status.canary_clusters
    s.fakes[a].forbidden.add(("patch", "deployments"))
    assert (await s.control("web", "abort")).ok

    async def held() -> CanaryRollout | None:
        r = await s.get("web")
        rb = r.status.rollback
        return r if rb is not None and rb.phase == "Restoring" and "forbidden" in rb.message else None

    r = await wait_for(held, what="the refused restore in the rollback's message")
    assert r.status.rollback is not None
    assert r.status.rollback.message.startswith(f"workload: Deployment shop/web on cluster {a}: forbidden")
    assert r.status.phase == "RollingBack" and await s.image(a) == CANARY
    s.fakes[a].forbidden.clear()
    await s.phase_is("web", "RolledBack")
    assert (await s.image(a), await s.image(b)) == (STABLE, STABLE)


async def test_an_image_someone_else_changed_is_left_as_it_is(fstack: ImageStack) -> None:
    s = fstack
    await s.start_agent()
    await s.put_rollout(steps(2))
    a, b = (await s.phase_is("web", "Paused")).status.canary_clusters
    await s.observer.set_image(a, "shop", "web", "web", "reg.example/web:hotfix")
    assert (await s.control("web", "abort")).ok
    await s.phase_is("web", "RolledBack")
    assert (await s.image(a), await s.image(b)) == ("reg.example/web:hotfix", STABLE)
    placement = next(
        e for e in await s.read(subjects.rollback_event("shop", "web"), RollbackEvent) if e.stage == "placement"
    )
    assert placement.clusters == [b]
    assert placement.reason == (
        f"image put back on {b} ({STABLE}); image not put back on {a}: it runs reg.example/web:hotfix, "
        "set by someone else since; left as is; canary placement emptied"
    )


async def test_the_runtime_wiring_sets_images_before_weights_and_puts_them_back_after(fstack: ImageStack) -> None:
    s = fstack
    for f in s.fakes.values():
        route = httproute("web")
        route["metadata"]["namespace"] = "shop"
        f.put(HTTPROUTE, route)
    s.runtime = True  # the agents as `tmcd run` builds them: gateway-api router and images through the factories
    await s.start_agent()
    await s.put_rollout(
        [CanaryStep(set_clusters=SetClusters(count=1)), CanaryStep(set_weight=20), PAUSE], router="gateway-api"
    )
    (c,) = (await s.phase_is("web", "Paused")).status.canary_clusters
    log = [(q.method, q.path.rpartition("/namespaces/shop/")[2]) for q in s.fakes[c].requests if q.method == "PATCH"]
    assert log.index(("PATCH", "deployments/web")) < log.index(("PATCH", "httproutes/web"))  # image, then traffic
    assert s.fakes[c].obj(HTTPROUTE, "shop", "web")["spec"]["rules"][0]["backendRefs"][1]["weight"] == 20
    assert (await s.control("web", "abort")).ok
    await s.phase_is("web", "RolledBack")
    log = [(q.method, q.path.rpartition("/namespaces/shop/")[2]) for q in s.fakes[c].requests if q.method == "PATCH"]
    assert log[-2:] == [("PATCH", "httproutes/web"), ("PATCH", "deployments/web")]  # traffic back, then the image
    assert await s.image(c) == STABLE


# -- the spec and what `kubectl tmc describe` shows -------------------------------------------------------


def test_the_spec_asks_for_a_container_and_an_image_of_an_apps_v1_deployment() -> None:
    def causes(**ref: Any) -> dict[str, str]:
        spec = CanaryRolloutSpec(
            workload_ref=WorkloadRef(name="web", **ref),
            stable_version="v1",
            canary_version="v2",
            placement_ref="prod",
            traffic_routing=TrafficRouting(route="web"),
        )
        r = CanaryRollout(metadata=ObjectMeta(name="web", namespace="shop"), spec=spec)
        return {c.field: c.message for c in validate(r)}

    assert causes() == {} and causes(container="web", canary_image=CANARY) == {}
    assert causes(container="web") == {
        "spec.workloadRef.canaryImage": "is required with container (the image the canary clusters run)"
    }
    assert causes(canary_image=CANARY) == {
        "spec.workloadRef.container": "is required with canaryImage (the container whose image is set)"
    }
    assert list(causes(container="Web_1", canary_image=CANARY)) == ["spec.workloadRef.container"]
    assert causes(container="web", canary_image="reg/web: 2") == {
        "spec.workloadRef.canaryImage": "must not contain whitespace, got 'reg/web: 2'"
    }
    assert causes(kind="StatefulSet", container="web", canary_image=CANARY) == {
        "spec.workloadRef.kind": "must be Deployment (apps/v1) to set canaryImage, got StatefulSet (apps/v1)"
    }
    assert msgspec.json.encode(WorkloadRef(name="web")) == b'{"apiVersion":"apps/v1","kind":"Deployment","name":"web"}'


def test_describe_canary_shows_the_image_per_cluster() -> None:
    obj = {
        "apiVersion": "tmc.kcp.io/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"workloadRef": {"name": "web", "container": "web", "canaryImage": CANARY}},
        "status": {
            "phase": "RollingBack",
            "workloadImages": [
                {"cluster": "c1", "deployment": "web", "container": "web", "image": CANARY, "previous": STABLE},
                {"cluster": "c4", "deployment": "web", "container": "web", "image": CANARY, "previous": STABLE,
                 "state": "Skipped", "message": "it runs x, set by someone else since; left as is"},
            ],
        },
    }  # fmt: skip
    lines = describe_canary(obj, RecentEvents([]), 0.0).splitlines()
    assert f"  Canary Image:         {CANARY} (container web)" in lines
    i = lines.index("Workload Images:")
    assert lines[i + 1 : i + 4] == [
        "  CLUSTER   DEPLOYMENT/CONTAINER   IMAGE                 PREVIOUS              STATE",
        f"  c1        web/web                {CANARY}   {STABLE}   Canary",
        f"  c4        web/web                {CANARY}   {STABLE}   Skipped: it runs x, set by someone else since;"
        " left as is",
    ]
