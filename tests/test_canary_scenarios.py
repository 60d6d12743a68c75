"""Canary rollouts on the real stack: `tmcd run` (embedded NATS), `tmcd sim`, `tmcd sim mesh` and
`kubectl tmc` as processes; short intervals, so each scenario takes seconds.

One stack serves the module; every scenario has its own route, so they run side by side.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.faultstack import applied
from tests.faultstack import rollout as nats_rollout
from tests.helpers import free_port, kill, nats_connect, wait_for, wait_ready
from tmcd.contracts.codec import decode_as
from tmcd.contracts.messages import CanaryEvent, RollbackEvent

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CLUSTERS = 6
BASE = "/api/v1/namespaces/shop"
ENV = {
    "TMCD_CONSUMER_FETCH_TIMEOUT": "0.2",
    "TMCD_HEALTH_INTERVAL": "0.2",
    "TMCD_HEALTH_STARTUP_GRACE": "0",
    "TMCD_HEALTH_SUCCESS_THRESHOLD": "0",
}
MESH_FAULTS = ("--canary-error-ratio", "bad=0.05", "--canary-latency-factor", "slow=1.5")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TMCD_NATS_URL", "TMCD_DATA_DIR")}
    return {**env, **ENV}


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.tmcd: asyncio.subprocess.Process | None = None
        self.sim: asyncio.subprocess.Process | None = None
        self.mesh: asyncio.subprocess.Process | None = None
        self.url = ""
        self._logs = 0

    def _log(self, name: str) -> Any:
        self._logs += 1
        return open(self.tmp / f"{name}-{self._logs}.log", "wb")

    async def _spawn(self, name: str, *args: str) -> asyncio.subprocess.Process:
        log = self._log(name)
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tmcd.cli.main", *args, stdout=log, stderr=log, env=_env()
            )
        finally:
            log.close()

    async def start_tmcd(self, *extra: str) -> None:
        self.tmcd = await self._spawn(
            "tmcd", "run", "--data-dir", str(self.data), "--http-listen", f"127.0.0.1:{self.port}", *extra
        )
        await wait_ready(self.base, self.tmcd, 60)
        url = (self.data / "nats.url").read_text().strip()
        assert url == self.url or not self.url, f"the embedded NATS moved from {self.url} to {url}: sim and mesh lost"
        self.url = url

    async def start_sim(self) -> None:
        self.sim = await self._spawn(
            "sim", "sim", "--data-dir", str(self.data), "--clusters", str(CLUSTERS), "--rate", "20",
            "--heartbeat-interval", "1",
        )  # fmt: skip

    async def start_mesh(self, *extra: str) -> None:
        self.mesh = await self._spawn(
            "mesh", "sim", "mesh", "--data-dir", str(self.data), "--clusters", str(CLUSTERS), "--rps", "20000",
            "--seed", "11", "--window", "0.5", "--stable-error-ratio", "0.005", *MESH_FAULTS, *extra,
        )  # fmt: skip

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.base + path, json=body) as r,
        ):
            return r.status, await r.json(content_type=None)

    async def apply(self, obj: dict[str, Any]) -> None:
        plural = "canaryrollouts" if obj["kind"] == "CanaryRollout" else "analysistemplates"
        code, body = await self.request("POST", f"{BASE}/{plural}", obj)
        assert code == 201, body

    async def rollout(self, name: str) -> dict[str, Any]:
        code, body = await self.request("GET", f"{BASE}/canaryrollouts/{name}")
        assert code == 200, body
        return dict(body)

    async def phase(self, name: str, *phases: str, timeout: float = 60.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            assert self.tmcd is not None and self.tmcd.returncode is None, "tmcd exited"
            r = await self.rollout(name)
            return r if r["status"]["phase"] in phases else None

        try:
            return await wait_for(check, timeout=timeout, step=0.2, what=f"{name} to be {'/'.join(phases)}")
        except AssertionError as exc:  # say where it stood and what the processes said (a CI run keeps no files)
            status = (await self.rollout(name)).get("status", {})
            raise AssertionError(f"{exc}\nstatus: {json.dumps(status)[:2000]}\n{self.log_tails()}") from None

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of the newest tmcd and mesh logs."""
        out = []
        for who in ("tmcd", "mesh"):
            logs = sorted(self.tmp.glob(f"{who}-*.log"), key=lambda f: int(f.stem.split("-")[1]))
            if logs:
                tail = logs[-1].read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {logs[-1].name}\n" + "\n".join(tail))
        return "\n".join(out)

    async def events(self, name: str) -> list[CanaryEvent]:
        nc = await nats_connect(self.url)
        try:
            sub = await nc.jetstream().subscribe(f"tmc.canary.shop.{name}", ordered_consumer=True)
            out: list[CanaryEvent] = []
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except TimeoutError:
                    return out
                out.append(decode_as(CanaryEvent, msg.data))
        finally:
            await nc.close()

    async def rollback_events(self, name: str) -> list[RollbackEvent]:
        nc = await nats_connect(self.url)
        try:
            sub = await nc.jetstream().subscribe(f"tmc.rollback.shop.{name}", ordered_consumer=True)
            out: list[RollbackEvent] = []
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except TimeoutError:
                    return out
                out.append(decode_as(RollbackEvent, msg.data))
        finally:
            await nc.close()

    async def unrouted(self, route: str) -> int:
        """Requests the mesh could not route on ``route`` (its last TrafficApplied report)."""
        nc = await nats_connect(self.url)
        try:
            msg = await nc.jetstream().get_last_msg("TMC_TRAFFIC", f"tmc.traffic.applied.shop.{route}")
            return int(json.loads(msg.data).get("unrouted_requests", 0))
        finally:
            await nc.close()

    async def kubectl(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tmcd.kubectl.main", *args, "--nats-url", self.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=_env(),
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode()


def template(name: str, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "tmc.kcp.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"metrics": metrics},
    }


ERRORS = template(
    "errors",
    [
        {
            "name": "error-ratio",
            "interval": 1.0,
            "count": 4,
            "inconclusiveLimit": 2,
            "provider": {"nats": {"metric": "error_ratio"}},
            "condition": {
                "comparison": {"test": "proportion", "maxIncrease": 1.0, "maxDifference": 0.005, "confidence": 0.95}
            },
        }
    ],
)
ERRORS_PATIENT = template(
    "errors-patient",
    [
        {
            "name": "error-ratio",
            "interval": 3.0,
            "count": 2,
            "inconclusiveLimit": 3,
            "provider": {"nats": {"metric": "error_ratio"}},
            "condition": {
                "comparison": {"test": "proportion", "maxIncrease": 1.0, "maxDifference": 0.005, "confidence": 0.95}
            },
        }
    ],
)
"""For the kill -9 scenario: the embedded NATS dies with tmcd, so the mesh's stats pause for a
reconnect (about 2 s); measurements 3 s apart never judge that gap alone."""
LATENCY = template(
    "latency",
    [
        {
            "name": "p99-threshold",
            "interval": 1.0,
            "count": 4,
            "inconclusiveLimit": 2,
            "provider": {"nats": {"metric": "latency_p99"}},
            "condition": {"threshold": {"max": 1.0}},
        },
        {
            "name": "p99-vs-stable",
            "interval": 1.0,
            "count": 4,
            "inconclusiveLimit": 2,
            "provider": {"nats": {"metric": "latency_p99"}},
            "condition": {"comparison": {"test": "ratio", "maxIncrease": 0.2}},
        },
    ],
)


def rollout(name: str, steps: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    default_steps = [
        {"setClusters": {"count": 2}},
        {"setWeight": 20},
        {"analysis": {"templates": ["errors"]}},
        {"setWeight": 50},
        {"analysis": {"templates": ["errors"], "intervals": 2}},
    ]
    return nats_rollout(name, default_steps if steps is None else steps, **spec)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("canary-stack"))
    try:
        await s.start_tmcd()
        await s.start_sim()
        await s.start_mesh("--no-stats", "nodata")
        await s.apply(ERRORS)
        await s.apply(ERRORS_PATIENT)
        await s.apply(LATENCY)

        async def healthy() -> bool:
            code, body = await s.request("GET", "/api/v1/synctargets")
            items = body.get("items", []) if code == 200 else []
            return len([i for i in items if i.get("status", {}).get("health") == "Healthy"]) == CLUSTERS

        await wait_for(healthy, timeout=60, step=0.2, what="every simulated cluster Healthy")
        yield s
    finally:
        for p in (s.mesh, s.sim, s.tmcd):
            await kill(p)


async def test_twenty_healthy_canaries_all_succeed(stack: Stack) -> None:
    names = [f"healthy-{i:02d}" for i in range(20)]
    for n in names:
        await stack.apply(rollout(n))
    for n in names:
        r = await stack.phase(n, "Succeeded", "RolledBack", "Degraded", timeout=120)
        assert r["status"]["phase"] == "Succeeded", (n, r["status"]["message"])
    events = await stack.events(names[0])
    assert [a["action"] for a in applied(events)] == ["clusters", "weight", "weight", "promote", "finalize"]


async def test_an_erroring_canary_is_rolled_back_within_two_measurements(stack: Stack) -> None:
    await stack.apply(rollout("bad"))
    r = await stack.phase("bad", "RolledBack", "Succeeded", timeout=60)
    assert r["status"]["phase"] == "RolledBack" and r["status"]["abortReason"] == "AnalysisFailed"
    assert r["status"]["currentWeight"] == 0 and r["status"]["canaryClusters"] == []
    events = await stack.events("bad")
    measured = [e for e in events if e.type == "analysis" and e.evidence.get("metric") == "error-ratio"]
    assert 1 <= len(measured) <= 2 and measured[-1].evidence["phase"] == "Failed"
    rb = r["status"]["rollback"]
    assert rb["phase"] == "Completed" and rb["trigger"] == "AnalysisFailed"
    assert [c["canaryWeight"] for c in rb["clusters"]] == [0, 0]  # acknowledged by the mesh
    stages = [e.stage for e in await stack.rollback_events("bad")]
    assert stages == ["started", "traffic", "placement", "cleanup", "completed"]
    assert await stack.unrouted("bad") == 0  # no request dropped while the traffic moved

    async def history() -> dict[int, tuple[str, str]] | None:
        code, out = await stack.kubectl("history", "bad", "-n", "shop", "-o", "json")
        assert code == 0, out
        got = {i["spec"]["revision"]: (i["status"]["phase"], i["spec"]["trigger"]) for i in json.loads(out)["items"]}
        return got if got.get(2, ("",))[0] == "Failed" else None

    revisions = await wait_for(history, timeout=30, step=0.2, what="the revision history")
    assert revisions[1][0] == "Active" and revisions[2] == ("Failed", "AnalysisFailed")


async def test_a_latency_regression_is_caught_by_the_comparison_not_the_threshold(stack: Stack) -> None:
    steps = [{"setClusters": {"count": 2}}, {"setWeight": 50}, {"analysis": {"templates": ["latency"]}}]
    await stack.apply(rollout("slow", steps))
    r = await stack.phase("slow", "RolledBack", "Succeeded", timeout=60)
    assert r["status"]["phase"] == "RolledBack", r["status"]["message"]
    run = r["status"]["analysisRuns"][-1]
    by_name = {m["name"]: m for m in run["metrics"]}
    assert by_name["p99-vs-stable"]["phase"] == "Failed"
    assert by_name.get("p99-threshold", {}).get("failed", 0) == 0


async def test_the_control_verbs_through_kubectl(stack: Stack) -> None:
    steps = [
        {"setClusters": {"count": 2}},
        {"setWeight": 10},
        {"pause": {}},
        {"setWeight": 30},
        {"pause": {}},
        {"setWeight": 60},
    ]
    await stack.apply(rollout("ctl", steps))
    await stack.phase("ctl", "Paused")
    code, out = await stack.kubectl("canary", "retry", "ctl", "-n", "shop")
    assert code == 1 and "only RolledBack" in out
    code, out = await stack.kubectl("canary", "promote", "ctl", "-n", "shop")
    assert code == 0, out
    r = await stack.phase("ctl", "Paused")
    assert r["status"]["currentStepIndex"] == 4 and r["status"]["currentWeight"] == 30
    code, out = await stack.kubectl("canary", "resume", "ctl", "-n", "shop")
    assert code == 0, out
    r = await stack.phase("ctl", "Succeeded")
    code, out = await stack.kubectl("canary", "abort", "ctl", "-n", "shop")
    assert code == 1 and "Succeeded" in out

    await stack.apply(rollout("ctl2", steps))
    await stack.phase("ctl2", "Paused")
    assert (await stack.kubectl("canary", "abort", "ctl2", "-n", "shop"))[0] == 0
    await stack.phase("ctl2", "RolledBack")
    assert (await stack.kubectl("canary", "retry", "ctl2", "-n", "shop"))[0] == 0
    await stack.phase("ctl2", "Paused")
    assert (await stack.kubectl("canary", "promote", "ctl2", "-n", "shop", "--full"))[0] == 0
    code, out = await stack.kubectl("canary", "status", "ctl2", "-n", "shop", "--watch", "--timeout", "60s")
    assert code == 0 and "Succeeded" in out, out


async def test_no_progress_until_the_deadline_rolls_back(stack: Stack) -> None:
    obj = rollout("stuck", progressDeadlineSeconds=2)
    obj["spec"]["clusterSelector"] = {"matchLabels": {"region": "nowhere"}}
    await stack.apply(obj)
    r = await stack.phase("stuck", "RolledBack", timeout=30)
    assert r["status"]["abortReason"] == "ProgressDeadlineExceeded"


async def test_kill_9_mid_step_and_the_rollout_ends_as_it_would_have(stack: Stack) -> None:
    steps = [
        {"setClusters": {"count": 2}},
        {"setWeight": 20},
        {"analysis": {"templates": ["errors-patient"]}},
        {"setWeight": 50},
        {"analysis": {"templates": ["errors-patient"]}},
    ]
    await stack.apply(rollout("crash", steps))
    for step in (1, 2, 4):  # after the clusters, at the first analysis, at the second one

        async def reached(step: int = step) -> bool:
            status = (await stack.rollout("crash"))["status"]
            assert status.get("phase") in ("Pending", "Progressing"), status  # never paused or rolled back
            return int(status.get("currentStepIndex", 0)) >= step

        await wait_for(reached, timeout=60, step=0.05, what=f"crash at step {step + 1}")
        assert stack.tmcd is not None
        stack.tmcd.kill()  # kill -9: no shutdown at all
        await stack.tmcd.wait()
        await stack.start_tmcd()
    r = await stack.phase("crash", "Succeeded", "RolledBack", timeout=120)
    assert r["status"]["phase"] == "Succeeded", r["status"]["message"]
    acts = applied(await stack.events("crash"))
    assert [a["action"] for a in acts] == ["clusters", "weight", "weight", "promote", "finalize"]
    assert len({a["generation"] for a in acts}) == len(acts)


async def test_a_rollback_resumes_after_kill_9_at_each_stage(stack: Stack) -> None:
    import msgspec

    from tmcd.resources.canary import CanaryRollout

    # Reversing, for real: the mesh is down, so the reversal is sent but never acknowledged
    await stack.apply(rollout("rbk"))
    await stack.phase("rbk", "Progressing")

    async def at_analysis() -> bool:
        return int((await stack.rollout("rbk"))["status"].get("currentStepIndex", 0)) >= 2

    await wait_for(at_analysis, timeout=60, step=0.05, what="rbk at its analysis")
    assert stack.mesh is not None and stack.tmcd is not None
    await kill(stack.mesh)
    assert (await stack.kubectl("canary", "abort", "rbk", "-n", "shop"))[0] == 0

    async def reversing() -> bool:
        rb = (await stack.rollout("rbk"))["status"].get("rollback") or {}
        return rb.get("phase") == "Reversing" and rb.get("stageState") == "Applied"

    await wait_for(reversing, timeout=30, step=0.05, what="the reversal sent")
    stack.tmcd.kill()
    await stack.tmcd.wait()
    await stack.start_tmcd()
    await stack.start_mesh("--no-stats", "nodata")
    r = await stack.phase("rbk", "RolledBack", timeout=60)
    assert r["status"]["rollback"]["phase"] == "Completed"
    stages = [e.stage for e in await stack.rollback_events("rbk")]
    assert stages == ["started", "traffic", "placement", "cleanup", "completed"]

    # Restoring and CleaningUp are instant: tmcd is killed, and the rollout left as a tmcd killed
    # while applying that stage would have left it
    for stage in ("Restoring", "CleaningUp"):
        name = f"rbk-{stage.lower()}"
        await stack.apply(rollout(name))
        await stack.phase(name, "Progressing")

        async def weighted(name: str = name) -> bool:
            return int((await stack.rollout(name))["status"].get("currentWeight", 0)) > 0

        await wait_for(weighted, timeout=60, step=0.05, what=f"{name} with traffic")
        assert (await stack.kubectl("canary", "abort", name, "-n", "shop"))[0] == 0
        await stack.phase(name, "RolledBack", timeout=60)
        assert stack.tmcd is not None
        stack.tmcd.kill()
        await stack.tmcd.wait()
        # the embedded NATS died with it: a tmcd without the rollback engine serves it meanwhile
        await stack.start_tmcd("--agents", "metrics,health,placement,canary")
        nc = await nats_connect(stack.url)
        try:
            kv = await nc.jetstream().key_value("tmc-canaries")
            entry = await kv.get(f"shop.{name}")
            assert entry.value is not None
            done = msgspec.json.decode(entry.value, type=CanaryRollout)
            rb = done.status.rollback
            assert rb is not None
            # back to the moment ``stage`` was recorded: RollingBack, that stage Applying
            times = {k: v for k, v in rb.stage_times.items() if k in ("Reversing", "Restoring", "CleaningUp")}
            keep = list(times)[: list(times).index(stage) + 1]
            back = msgspec.structs.replace(
                rb, phase=stage, stage_state="Applying", end_time="", stage_times={k: times[k] for k in keep}
            )
            st = msgspec.structs.replace(done.status, phase="RollingBack", rollback=back)
            await kv.put(f"shop.{name}", msgspec.json.encode(msgspec.structs.replace(done, status=st)))
        finally:
            await nc.close()
        assert stack.tmcd is not None
        stack.tmcd.kill()  # and the whole tmcd again, as it was mid-stage
        await stack.tmcd.wait()
        await stack.start_tmcd()
        r = await stack.phase(name, "RolledBack", timeout=60)
        assert r["status"]["rollback"]["phase"] == "Completed"
        stages = [e.stage for e in await stack.rollback_events(name)]
        assert stages == ["started", "traffic", "placement", "cleanup", "completed"]  # nothing twice


async def test_no_data_is_inconclusive_and_pauses_until_resumed(stack: Stack) -> None:
    await stack.apply(rollout("nodata"))
    r = await stack.phase("nodata", "Paused", "RolledBack", "Succeeded", timeout=60)
    assert r["status"]["phase"] == "Paused" and r["status"]["pauseReason"] == "InconclusiveAnalysis", r["status"]
    assert stack.mesh is not None
    await kill(stack.mesh)
    await stack.start_mesh()  # the stats are back
    code, out = await stack.kubectl("canary", "resume", "nodata", "-n", "shop")
    assert code == 0, out
    r = await stack.phase("nodata", "Succeeded", "RolledBack", timeout=90)
    assert r["status"]["phase"] == "Succeeded", r["status"]["message"]
