"""Watch mode: the kube agent lists and watches CanaryRollouts and AnalysisTemplates in a fake
Kubernetes API server (real sockets, kubernetes-asyncio), mirrors them into tmcd's store (a real
nats-server), writes status back through the status subresource and records Events."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from tests.fakekube import ANALYSISTEMPLATE, CANARYROLLOUT, EVENT, KINDS, FakeKube, serve, write_kubeconfig
from tests.helpers import wait_for
from tests.test_canary_agent import STEPS, Stack
from tests.test_canary_model import template
from tmcd.api.errors import ApiError
from tmcd.api.store import ResourceStore
from tmcd.config import Config, KubeConfig
from tmcd.kube.agent import KubeAgent
from tmcd.kube.mirror import MIRRORED_ANNOTATION, MIRRORED_LABEL, decide, phase_event, status_patch, store_body
from tmcd.resources.canary import CanaryRollout, CanaryRolloutSpec, CanaryRolloutStatus, TrafficRouting, WorkloadRef
from tmcd.resources.kinds import ANALYSIS_TEMPLATE, CANARY_ROLLOUT
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.placement import LabelSelector
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.registry import build_agents

ROOT = Path(__file__).resolve().parent.parent
NS = "shop"
ROLLOUTS = "/apis/tmc.kcp.io/v1alpha1/namespaces/shop/canaryrollouts"


def cr(name: str, canary_version: str = "v2", **meta: Any) -> dict[str, Any]:
    """A CanaryRollout as a user applies it (JSON, no status)."""
    spec = CanaryRolloutSpec(
        workload_ref=WorkloadRef(name=name),
        stable_version="v1",
        canary_version=canary_version,
        cluster_selector=LabelSelector(match_labels={"env": "prod"}),
        traffic_routing=TrafficRouting(route=name),
        steps=STEPS,
    )
    r = CanaryRollout(metadata=ObjectMeta(name=name, namespace=NS, **meta), spec=spec)
    out: dict[str, Any] = msgspec.to_builtins(r)
    out.pop("status", None)
    out["metadata"] = {"name": name, "namespace": NS, **meta}
    return out


class Watch:
    """A provisioned tmcd store, a fake API server and the kube agent (started by :meth:`start`)."""

    def __init__(self, stack: Stack, fake: FakeKube, kubeconfig: Path) -> None:
        self.s, self.fake = stack, fake
        stack.cfg.kube = KubeConfig(kubeconfig=str(kubeconfig), enabled=True, namespaces=[NS])
        self.store = ResourceStore(stack.bus, clock=stack.clock)
        self.agent = KubeAgent()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ctx = AgentContext(
            bus=self.s.bus, config=self.s.cfg, metrics=self.s.metrics, stop=self._stop, clock=self.s.clock
        )
        self._task = asyncio.create_task(self.agent.run(ctx))
        await wait_for(
            lambda: self.fake.watches(CANARYROLLOUT) and self.fake.watches(ANALYSISTEMPLATE), what="both kinds watched"
        )

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def watching(self, plural: str) -> int:
        return sum(1 for q in self.fake.of("GET") if q.path.endswith(plural) and q.query.get("watch") == "true")

    async def stored(self, name: str) -> CanaryRollout | None:
        try:
            r: CanaryRollout = await self.store.get(CANARY_ROLLOUT, NS, name)
            return r
        except ApiError:
            return None

    def events(self, reason: str = "") -> list[dict[str, Any]]:
        return [o for (k, _, _), o in self.fake.objects.items() if k == EVENT and reason in ("", o["reason"])]


@pytest.fixture
async def watch(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Watch]:
    async for fakes in serve(1, kinds=(*KINDS, ANALYSISTEMPLATE, EVENT)):
        s = Stack(nats_server.url, tmp_path)
        await s.start()
        w = Watch(s, fakes[0], write_kubeconfig(tmp_path / "kubeconfig", {"ctl": fakes[0].url}))
        try:
            yield w
        finally:
            with contextlib.suppress(Exception):
                if s._task is not None and not s._task.done():
                    await s.stop_agent()
            await w.stop()
            await s.bus.close()


async def test_list_and_watch_mirror_crs_and_their_spec_changes(watch: Watch) -> None:
    watch.fake.put(CANARYROLLOUT, cr("listed"))
    at: dict[str, Any] = msgspec.to_builtins(template())
    at["metadata"] = {"name": "errors", "namespace": NS}
    watch.fake.put(ANALYSISTEMPLATE, at)
    await watch.start()
    r = await wait_for(lambda: watch.stored("listed"), what="the listed CR in the store")
    assert r.metadata.labels[MIRRORED_LABEL] == "true" and r.metadata.annotations[MIRRORED_ANNOTATION]
    assert r.spec.canary_version == "v2" and r.status.phase == "Pending"

    watch.fake.put(CANARYROLLOUT, cr("watched"))  # after the list: arrives through the watch
    await wait_for(lambda: watch.stored("watched"), what="the watched CR in the store")
    watch.fake.put(CANARYROLLOUT, cr("watched", canary_version="v3"))

    async def v3() -> bool:
        r = await watch.stored("watched")
        return r is not None and r.spec.canary_version == "v3" and r.metadata.generation == 2

    await wait_for(v3, what="the spec change mirrored")
    lists = [q for q in watch.fake.of("GET", "canaryrollouts") if q.query.get("watch") != "true"]
    watches = [q for q in watch.fake.of("GET", "canaryrollouts") if q.query.get("watch") == "true"]
    assert len(lists) == 1 and watches[0].query["allowWatchBookmarks"] == "true"
    assert len(watch.fake.of("PATCH")) >= 1  # the status of the new objects (Pending) went back
    t = await watch.store.get(ANALYSIS_TEMPLATE, NS, "errors")
    assert t.metadata.labels[MIRRORED_LABEL] == "true"


async def test_no_namespaces_watches_all_of_them(watch: Watch) -> None:
    watch.s.cfg.kube.namespaces = []
    watch.fake.put(CANARYROLLOUT, cr("listed"))
    await watch.start()
    await wait_for(lambda: watch.stored("listed"), what="the listed CR in the store")
    paths = {q.path for q in watch.fake.of("GET", "canaryrollouts")}
    assert paths == {"/apis/tmc.kcp.io/v1alpha1/canaryrollouts"}  # the cluster-wide collection
    watch.fake.put(CANARYROLLOUT, cr("watched"))
    await wait_for(lambda: watch.stored("watched"), what="the watched CR in the store")


async def test_a_bookmark_moves_the_resume_point_and_a_dropped_stream_resumes_there(watch: Watch) -> None:
    await watch.start()
    listed_rv = watch.fake.of("GET", "canaryrollouts")[-1].query["resourceVersion"]
    watch.fake.put(EVENT, {"metadata": {"name": "elsewhere", "namespace": "other"}})  # the server moves on
    watch.fake.bookmark()
    want = str(watch.fake.rv)
    assert want != listed_rv
    await wait_for(lambda: watch.agent.resume.get(("canaryrollouts", NS)) == want, what="the bookmark seen")
    watch.fake.end_watches()
    await wait_for(lambda: watch.watching("canaryrollouts") == 2, what="the watch resumed")
    await wait_for(lambda: watch.fake.watches(CANARYROLLOUT), what="the resumed watch open")
    resumed = [q for q in watch.fake.of("GET", "canaryrollouts") if q.query.get("watch") == "true"][-1]
    assert resumed.query["resourceVersion"] == want
    assert len([q for q in watch.fake.of("GET", "canaryrollouts") if q.query.get("watch") != "true"]) == 1


async def test_410_gone_lists_again(watch: Watch) -> None:
    await watch.start()
    watch.fake.end_watches()  # the stream drops, and the server forgets what happened meanwhile
    watch.fake.put(CANARYROLLOUT, cr("missed-1"))
    watch.fake.put(CANARYROLLOUT, cr("missed-2"))
    watch.fake.compact()
    await wait_for(lambda: watch.stored("missed-2"), what="the relist's objects in the store")
    assert await watch.stored("missed-1") is not None
    lists = [q for q in watch.fake.of("GET", "canaryrollouts") if q.query.get("watch") != "true"]
    assert len(lists) == 2


async def test_a_cr_deleted_in_the_cluster_is_deleted_from_the_store(watch: Watch) -> None:
    watch.fake.put(CANARYROLLOUT, cr("gone"))
    await watch.start()
    await wait_for(lambda: watch.stored("gone"), what="mirrored")
    watch.fake.delete(CANARYROLLOUT, NS, "gone")

    async def deleted() -> bool:
        return await watch.stored("gone") is None

    await wait_for(deleted, what="deleted from the store")


async def test_status_goes_back_once_per_change_with_a_409_retried_and_one_event(watch: Watch) -> None:
    watch.fake.put(CANARYROLLOUT, cr("web"))
    await watch.start()
    await wait_for(lambda: (watch.fake.obj(CANARYROLLOUT, NS, "web").get("status") or {}).get("phase"), what="Pending")
    patches_before = len(watch.fake.of("PATCH", "/web/status"))
    watch.fake.merge_conflicts = 1
    status = CanaryRolloutStatus(phase="Progressing", current_weight=20, message="step 1/4: weight 20")
    await watch.store.patch_status(
        CANARY_ROLLOUT, NS, "web", {"status": msgspec.to_builtins(status)}
    )  # what the canary agent does
    await wait_for(
        lambda: watch.fake.obj(CANARYROLLOUT, NS, "web")["status"]["phase"] == "Progressing", what="status written"
    )
    crs = watch.fake.obj(CANARYROLLOUT, NS, "web")
    assert crs["status"]["currentWeight"] == 20 and crs["status"]["message"] == "step 1/4: weight 20"
    patches = watch.fake.of("PATCH", "/web/status")[patches_before:]
    assert len(patches) == 2  # one 409, one written after a fresh read
    assert patches[0].content_type == "application/merge-patch+json"
    assert len(watch.fake.of("GET", f"{ROLLOUTS}/web")) == 1
    # the watch event of that write does not write again: a later object is mirrored first
    watch.fake.put(CANARYROLLOUT, cr("sentinel"))
    await wait_for(lambda: watch.stored("sentinel"), what="a later event handled")
    assert len(watch.fake.of("PATCH", "/web/status")) == patches_before + 2
    events = watch.events("Progressing")
    assert len(events) == 1 and events[0]["type"] == "Normal"
    assert events[0]["involvedObject"]["name"] == "web" and events[0]["involvedObject"]["kind"] == "CanaryRollout"

    await watch.store.patch_status(CANARY_ROLLOUT, NS, "web", {"status": {"phase": "RolledBack"}})
    await wait_for(lambda: watch.events("RolledBack"), what="the RolledBack Event")
    assert watch.events("RolledBack")[0]["type"] == "Warning" and len(watch.events("Progressing")) == 1


async def test_a_stored_rollout_not_from_the_cluster_is_not_overwritten(watch: Watch) -> None:
    mine = msgspec.convert(cr("web", canary_version="v9"), CanaryRollout)
    await watch.store.create(CANARY_ROLLOUT, mine, NS)
    watch.fake.put(CANARYROLLOUT, cr("web"))
    await watch.start()
    await wait_for(lambda: watch.events("NotMirrored"), what="the refusal Event")
    r = await watch.stored("web")
    assert r is not None and r.spec.canary_version == "v9" and MIRRORED_LABEL not in r.metadata.labels
    assert watch.events("NotMirrored")[0]["type"] == "Warning"
    assert not watch.fake.of("PATCH") and "status" not in watch.fake.obj(CANARYROLLOUT, NS, "web")


async def test_a_cr_runs_to_progressing_and_deleting_it_midway_rolls_back(watch: Watch) -> None:
    """End to end: the canary and rollback agents run a CR created in the cluster."""
    await watch.s.start_agent()
    await watch.start()
    watch.fake.put(CANARYROLLOUT, cr("checkout"))

    def phase() -> str:
        return str((watch.fake.obj(CANARYROLLOUT, NS, "checkout").get("status") or {}).get("phase", ""))

    await wait_for(lambda: phase() == "Progressing", what="Progressing in the cluster")
    await wait_for(lambda: watch.events("Progressing"), what="the Progressing Event")
    calls = watch.s.router.calls
    await wait_for(lambda: any(w > 0 for w, _, _ in calls), what="traffic on the canary clusters")
    watch.fake.delete(CANARYROLLOUT, NS, "checkout")

    async def deleted() -> bool:
        return await watch.stored("checkout") is None

    await wait_for(deleted, what="deleted from the store after its rollback")
    assert watch.s.router.calls[-1][0] == 0, watch.s.router.calls  # all traffic back on stable


def test_build_agents_adds_the_kube_agent_only_when_enabled() -> None:
    assert [a.name for a in build_agents(["metrics"], Config())] == ["metrics"]
    cfg = Config(kube=KubeConfig(enabled=True))
    assert [a.name for a in build_agents(["metrics"], cfg)] == ["metrics", "kube"]


def test_a_bad_namespaces_value_is_one_line_exit_2(tmp_path: Path) -> None:
    file = tmp_path / "tmcd.toml"
    file.write_text('[kube]\nenabled = true\nnamespaces = ["shop", "Not_A_Namespace"]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "tmcd.cli.main", "config", "show", "--config", str(file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "kube.namespaces" in proc.stderr and "DNS-1123" in proc.stderr


WATCH_RULES = {
    ("tmc.kcp.io", "canaryrollouts"): {"get", "list", "watch"},
    ("tmc.kcp.io", "analysistemplates"): {"list", "watch"},
    ("tmc.kcp.io", "canaryrollouts/status"): {"patch"},
    ("", "events"): {"create"},
}


def test_the_watch_role_grants_exactly_the_verbs_watch_mode_uses() -> None:
    doc = yaml.safe_load((ROOT / "config/kubernetes/watch-role.yaml").read_text())
    assert doc["kind"] == "ClusterRole" and doc["apiVersion"] == "rbac.authorization.k8s.io/v1"
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in doc["rules"]:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                granted.setdefault((group, res), set()).update(rule["verbs"])
    assert granted == WATCH_RULES


def test_the_mirror_decisions() -> None:
    body = store_body(cr("web"), "ctl")
    assert body["metadata"]["annotations"][MIRRORED_ANNOTATION] == "ctl/" and "status" not in body
    assert decide(body, None).action == "create"
    assert decide(body, body).action == "skip"
    assert decide(store_body(cr("web", "v3"), "ctl"), body).action == "update"
    assert decide(body, cr("web")).action == "refuse"  # stored, but not from the cluster
    cluster = {"status": {"phase": "Pending", "message": "old"}}
    assert status_patch({"phase": "Pending", "message": "old"}, cluster) is None
    assert status_patch({"phase": "Progressing"}, cluster) == {"status": {"phase": "Progressing", "message": None}}
    assert phase_event(cr("web"), {}, {"phase": "Pending"}, 0.0) is None  # no phase yet reads as Pending
    paused = phase_event(cr("web"), {"phase": "Progressing"}, {"phase": "Paused", "pauseReason": "UserPaused"}, 0.0)
    by_analysis = {"phase": "Paused", "pauseReason": "InconclusiveAnalysis"}
    assert paused is not None and paused["type"] == "Normal" and paused["reason"] == "Paused"
    warned = phase_event(cr("web"), {"phase": "Progressing"}, by_analysis, 0.0)
    assert warned is not None and warned["type"] == "Warning"
