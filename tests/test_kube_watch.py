"""Watch mode: the kube agent lists and watches CanaryRollouts and AnalysisTemplates in a fake
Kubernetes API server (real sockets, kubernetes-asyncio), mirrors them into tmcd's store (a real
nats-server), writes status back through the status subresource and records Events.

The tests that take ``watch`` also run against a real cluster when ``TMCD_TEST_KUBECONFIG`` is set
(tests/kubetarget.py; skipped otherwise); those on ``fwatch`` read the fake's request log or make
it misbehave, and run on the fake only."""

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

from tests.fakekube import ANALYSISTEMPLATE, CANARYROLLOUT, EVENT, KINDS, FakeKube
from tests.helpers import wait_for
from tests.kubetarget import TARGETS, TMC_CRDS, FakeTarget, Target, open_target
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
WATCH_KINDS = (*KINDS, ANALYSISTEMPLATE, EVENT)


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
    """A provisioned tmcd store, a cluster (the fake or a real one) and the kube agent (started by :meth:`start`)."""

    def __init__(self, stack: Stack, target: Target, agent: KubeAgent | None = None) -> None:
        self.s, self.k, self.ns = stack, target, target.namespace
        stack.cfg.kube = target.settings(enabled=True, namespaces=[self.ns])
        self.store = ResourceStore(stack.bus, clock=stack.clock)
        self.agent = agent or KubeAgent()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def fake(self) -> FakeKube:
        assert isinstance(self.k, FakeTarget), "a fake-only assertion"
        return self.k.fake

    def launch(self) -> None:
        """Start the agent without waiting for anything."""
        ctx = AgentContext(
            bus=self.s.bus, config=self.s.cfg, metrics=self.s.metrics, stop=self._stop, clock=self.s.clock
        )
        self._task = asyncio.create_task(self.agent.run(ctx))

    async def start(self) -> None:
        """Start the agent; return once both kinds are listed (and, on the fake, watched)."""
        self.launch()
        await wait_for(lambda: self.agent.health.ready() is None, timeout=self.k.timeout, what="both kinds listed")
        if not self.k.real:
            await wait_for(
                lambda: self.fake.watches(CANARYROLLOUT) and self.fake.watches(ANALYSISTEMPLATE), what="watched"
            )

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def watching(self, plural: str) -> int:
        return sum(1 for q in self.fake.of("GET") if q.path.endswith(plural) and q.query.get("watch") == "true")

    async def stored(self, name: str) -> CanaryRollout | None:
        try:
            r: CanaryRollout = await self.store.get(CANARY_ROLLOUT, self.ns, name)
            return r
        except ApiError:
            return None

    async def gone(self, name: str) -> bool:
        return await self.stored(name) is None

    async def phase(self, name: str) -> str:
        """The CR's status.phase in the cluster."""
        return str((await self.k.status(CANARYROLLOUT, name)).get("phase", ""))

    def metric(self, name: str, **labels: str) -> float:
        """One series of the agent's metrics (0 when absent)."""
        return self.s.metrics.registry.get_sample_value(name, labels) or 0.0

    async def wait(self, cond: Any, what: str) -> Any:
        return await wait_for(cond, timeout=self.k.timeout, what=what, step=0.02 if not self.k.real else 0.2)


@contextlib.asynccontextmanager
async def watching(
    which: str, nats: EmbeddedNats, tmp_path: Path, agent: KubeAgent | None = None
) -> AsyncIterator[Watch]:
    """The stack of test_canary_agent, a cluster and the kube agent (not started)."""
    async with open_target(which, tmp_path, namespace=NS, kinds=WATCH_KINDS, crds=TMC_CRDS) as target:
        s = Stack(nats.url, tmp_path)
        await s.start()
        if target.namespace != NS:  # the analysis template the rollouts' steps name, in their namespace
            await s.templates.put(f"{target.namespace}.err", template(interval=10.0))
        w = Watch(s, target, agent)
        try:
            yield w
        finally:
            with contextlib.suppress(Exception):
                if s._task is not None and not s._task.done():
                    await s.stop_agent()
            await w.stop()
            await s.bus.close()


@pytest.fixture(params=TARGETS)
async def watch(request: pytest.FixtureRequest, nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Watch]:
    """Watch mode on the fake API server, and on the real cluster of TMCD_TEST_KUBECONFIG if set."""
    async with watching(request.param, nats_server, tmp_path) as w:
        yield w


@pytest.fixture
async def fwatch(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Watch]:
    """Watch mode on the fake API server only (the tests that read its request log or make it misbehave)."""
    async with watching("fake", nats_server, tmp_path) as w:
        yield w


async def test_list_and_watch_mirror_crs_and_their_spec_changes(watch: Watch) -> None:
    await watch.k.put(CANARYROLLOUT, cr("listed"))
    at: dict[str, Any] = msgspec.to_builtins(template())
    at["metadata"] = {"name": "errors", "namespace": watch.ns}
    await watch.k.put(ANALYSISTEMPLATE, at)
    await watch.start()
    r = await watch.wait(lambda: watch.stored("listed"), what="the listed CR in the store")
    assert r.metadata.labels[MIRRORED_LABEL] == "true" and r.metadata.annotations[MIRRORED_ANNOTATION]
    assert r.spec.canary_version == "v2" and r.status.phase == "Pending"

    await watch.k.put(CANARYROLLOUT, cr("watched"))  # after the list: arrives through the watch
    await watch.wait(lambda: watch.stored("watched"), what="the watched CR in the store")
    await watch.k.put(CANARYROLLOUT, cr("watched", canary_version="v3"))

    async def v3() -> bool:
        r = await watch.stored("watched")
        return r is not None and r.spec.canary_version == "v3" and r.metadata.generation == 2

    await watch.wait(v3, what="the spec change mirrored")
    t = await watch.store.get(ANALYSIS_TEMPLATE, watch.ns, "errors")
    assert t.metadata.labels[MIRRORED_LABEL] == "true"
    # the status of the new objects (Pending) went back to the cluster
    await watch.wait(lambda: watch.phase("listed"), what="the listed CR's status written")
    if not watch.k.real:
        lists = [q for q in watch.fake.of("GET", "canaryrollouts") if q.query.get("watch") != "true"]
        watches = [q for q in watch.fake.of("GET", "canaryrollouts") if q.query.get("watch") == "true"]
        assert len(lists) == 1 and watches[0].query["allowWatchBookmarks"] == "true"


async def test_no_namespaces_watches_all_of_them(fwatch: Watch) -> None:
    fwatch.s.cfg.kube.namespaces = []
    fwatch.fake.put(CANARYROLLOUT, cr("listed"))
    await fwatch.start()
    await wait_for(lambda: fwatch.stored("listed"), what="the listed CR in the store")
    paths = {q.path for q in fwatch.fake.of("GET", "canaryrollouts")}
    assert paths == {"/apis/tmc.kcp.io/v1alpha1/canaryrollouts"}  # the cluster-wide collection
    fwatch.fake.put(CANARYROLLOUT, cr("watched"))
    await wait_for(lambda: fwatch.stored("watched"), what="the watched CR in the store")


async def test_a_bookmark_moves_the_resume_point_and_a_dropped_stream_resumes_there(fwatch: Watch) -> None:
    await fwatch.start()
    fake = fwatch.fake
    listed_rv = fake.of("GET", "canaryrollouts")[-1].query["resourceVersion"]
    fake.put(EVENT, {"metadata": {"name": "elsewhere", "namespace": "other"}})  # the server moves on
    fake.bookmark()
    want = str(fake.rv)
    assert want != listed_rv
    await wait_for(lambda: fwatch.agent.resume.get(("canaryrollouts", NS)) == want, what="the bookmark seen")
    fake.end_watches()
    await wait_for(lambda: fwatch.watching("canaryrollouts") == 2, what="the watch resumed")
    await wait_for(lambda: fake.watches(CANARYROLLOUT), what="the resumed watch open")
    resumed = [q for q in fake.of("GET", "canaryrollouts") if q.query.get("watch") == "true"][-1]
    assert resumed.query["resourceVersion"] == want
    assert len([q for q in fake.of("GET", "canaryrollouts") if q.query.get("watch") != "true"]) == 1


async def test_410_gone_lists_again(fwatch: Watch) -> None:
    await fwatch.start()
    fwatch.fake.end_watches()  # the stream drops, and the server forgets what happened meanwhile
    fwatch.fake.put(CANARYROLLOUT, cr("missed-1"))
    fwatch.fake.put(CANARYROLLOUT, cr("missed-2"))
    fwatch.fake.compact()
    await wait_for(lambda: fwatch.stored("missed-2"), what="the relist's objects in the store")
    assert await fwatch.stored("missed-1") is not None
    lists = [q for q in fwatch.fake.of("GET", "canaryrollouts") if q.query.get("watch") != "true"]
    assert len(lists) == 2
    await wait_for(  # counted once the relist has ended, after storing the objects
        lambda: fwatch.metric("tmc_kube_relists_total", kind="CanaryRollout", reason="expired") == 1, what="counted"
    )


async def test_a_cr_deleted_in_the_cluster_is_deleted_from_the_store(watch: Watch) -> None:
    await watch.k.put(CANARYROLLOUT, cr("gone"))
    await watch.start()
    await watch.wait(lambda: watch.stored("gone"), what="mirrored")
    await watch.k.delete(CANARYROLLOUT, "gone")
    await watch.wait(lambda: watch.gone("gone"), what="deleted from the store")


async def test_status_goes_back_once_per_change_with_one_event(watch: Watch) -> None:
    """On the fake, the first write also meets a 409 (someone wrote the CR first) and is retried
    after one fresh read."""
    await watch.k.put(CANARYROLLOUT, cr("web"))
    await watch.start()
    await watch.wait(lambda: watch.phase("web"), what="Pending written")
    fake = None if watch.k.real else watch.fake
    patches_before = len(fake.of("PATCH", "/web/status")) if fake else 0
    if fake:
        fake.merge_conflicts = 1
    status = CanaryRolloutStatus(phase="Progressing", current_weight=20, message="step 1/4: weight 20")
    await watch.store.patch_status(
        CANARY_ROLLOUT, watch.ns, "web", {"status": msgspec.to_builtins(status)}
    )  # what the canary agent does

    async def progressing() -> bool:
        return await watch.phase("web") == "Progressing"

    await watch.wait(progressing, what="status written")
    crs = await watch.k.status(CANARYROLLOUT, "web")
    assert crs["currentWeight"] == 20 and crs["message"] == "step 1/4: weight 20"
    if fake:
        patches = fake.of("PATCH", "/web/status")[patches_before:]
        assert len(patches) == 2  # one 409, one written after a fresh read
        assert patches[0].content_type == "application/merge-patch+json"
        assert len(fake.of("GET", f"{ROLLOUTS}/web")) == 1
    # the watch event of that write does not write again: a later object is mirrored first
    await watch.k.put(CANARYROLLOUT, cr("sentinel"))
    await watch.wait(lambda: watch.stored("sentinel"), what="a later event handled")
    if fake:
        assert len(fake.of("PATCH", "/web/status")) == patches_before + 2
    events = await watch.wait(lambda: watch.k.events("Progressing"), what="the Progressing Event")
    assert len(events) == 1 and events[0]["type"] == "Normal"
    assert events[0]["involvedObject"]["name"] == "web" and events[0]["involvedObject"]["kind"] == "CanaryRollout"

    await watch.store.patch_status(CANARY_ROLLOUT, watch.ns, "web", {"status": {"phase": "RolledBack"}})
    rolled = await watch.wait(lambda: watch.k.events("RolledBack"), what="the RolledBack Event")
    assert rolled[0]["type"] == "Warning" and len(await watch.k.events("Progressing")) == 1
    await watch.wait(lambda: watch.metric("tmc_kube_event_writes_total", result="created") == 2, what="counted")
    assert watch.metric("tmc_kube_status_writes_total", result="written") >= 3
    assert watch.metric("tmc_kube_status_writes_total", result="conflict") == (0 if watch.k.real else 1)


async def test_a_stored_rollout_not_from_the_cluster_is_not_overwritten(watch: Watch) -> None:
    mine = msgspec.convert(cr("web", canary_version="v9"), CanaryRollout)
    mine.metadata.namespace = watch.ns
    await watch.store.create(CANARY_ROLLOUT, mine, watch.ns)
    await watch.k.put(CANARYROLLOUT, cr("web"))
    await watch.start()
    refusals = await watch.wait(lambda: watch.k.events("NotMirrored"), what="the refusal Event")
    r = await watch.stored("web")
    assert r is not None and r.spec.canary_version == "v9" and MIRRORED_LABEL not in r.metadata.labels
    assert refusals[0]["type"] == "Warning"
    assert await watch.k.status(CANARYROLLOUT, "web") == {}  # tmcd wrote nothing to it
    if not watch.k.real:
        assert not watch.fake.of("PATCH")


async def test_a_cr_runs_to_progressing_and_deleting_it_midway_rolls_back(watch: Watch) -> None:
    """End to end: the canary and rollback agents run a CR created in the cluster."""
    await watch.s.start_agent()
    await watch.start()
    await watch.k.put(CANARYROLLOUT, cr("checkout"))

    async def progressing() -> bool:
        return await watch.phase("checkout") == "Progressing"

    await watch.wait(progressing, what="Progressing in the cluster")
    await watch.wait(lambda: watch.k.events("Progressing"), what="the Progressing Event")
    calls = watch.s.router.calls
    await watch.wait(lambda: any(w > 0 for w, _, _ in calls), what="traffic on the canary clusters")
    await watch.k.delete(CANARYROLLOUT, "checkout")
    await watch.wait(lambda: watch.gone("checkout"), what="deleted from the store after its rollback")
    # all traffic back on stable: the newest generation is 0 % (a router ignores an older generation
    # sent after it, as the gateway-api and smi routers do; the canary agent may still re-send one)
    newest = max(watch.s.router.calls, key=lambda c: c[2])
    assert newest[0] == 0, watch.s.router.calls


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
