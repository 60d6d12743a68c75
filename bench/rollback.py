"""Rollback speed: how soon an aborted canary's traffic is back on stable on every cluster.

Runs ``tmcd run`` (embedded NATS in a temporary data dir), ``tmcd sim`` (the clusters'
heartbeats) and ``tmcd sim mesh`` as processes.  Each run creates a CanaryRollout (no
analysis) whose steps put the canary on every cluster at 50 % and pause, waits until the mesh
reports 50 % applied on all of them, then aborts it with a ``tmc.ctl.canary.<ns>.<name>.abort``
request once the canary served requests on every cluster, and measures, from sending the abort:

``reversal_s``  to the first TrafficApplied on ``tmc.traffic.applied.<ns>.<route>`` that shows
                canary 0 on every cluster (the mesh acknowledged 100 % stable everywhere);
``total_s``     to the rollout's phase RolledBack (an HTTP watch of the rollout).

It relies only on the control request, the mesh's reports and the rollout's phase, not on how
tmcd reverses traffic (the canary controller's ``stable`` action today, the rollback engine
later).  Each run also reads the route's ``unrouted_requests`` from the mesh's last report once
the window the reversal fell in has closed: requests the mesh could not route, which must be 0.
The last line gives the medians::

    rollback clusters=<n> reversal_s=<x> total_s=<y>

(target: reversal under 1 s for 50 clusters)

    python bench/rollback.py [--clusters 50] [--runs 3] [--rps 1000] [--window 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import nats

from tmcd.contracts.codec import decode_as
from tmcd.contracts.messages import TrafficApplied, WorkloadStats

NAMESPACE = "bench"
ENV = {  # health decided quickly, so the simulated clusters are eligible soon after start
    "TMCD_HEALTH_INTERVAL": "0.5",
    "TMCD_HEALTH_STARTUP_GRACE": "0",
    "TMCD_HEALTH_SUCCESS_THRESHOLD": "0",
}
T = TypeVar("T")


async def wait_for(cond: Callable[[], Awaitable[T | None]], timeout: float, what: str, step: float = 0.05) -> T:
    """Poll ``cond`` until it returns a value (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rollout(name: str) -> dict[str, Any]:
    """A rollout with no analysis that puts the canary at 50 % on every cluster and waits."""
    return {
        "apiVersion": "tmc.kcp.io/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "workloadRef": {"name": name},
            "stableVersion": "v1",
            "canaryVersion": "v2",
            "clusterSelector": {"matchLabels": {}},
            "trafficRouting": {"router": "nats", "route": name},
            "steps": [{"setClusters": {"percent": 100}}, {"setWeight": 50}, {"pause": {}}],
        },
    }


@dataclass
class Stack:
    """tmcd, the simulated fleet and the mock mesh, as processes on a temporary data dir."""

    data: Path
    clusters: int
    rps: float = 1000.0
    window: float = 1.0
    port: int = field(default_factory=free_port)
    url: str = ""
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _log(self, name: str) -> Any:
        return open(self.data / f"{name}.log", "ab")

    async def _spawn(self, name: str, *args: str) -> asyncio.subprocess.Process:
        env = {k: v for k, v in os.environ.items() if k not in ("TMCD_NATS_URL", "TMCD_DATA_DIR")}
        log = self._log(name)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tmcd.cli.main", *args, stdout=log, stderr=log, env={**env, **ENV}
            )
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    async def start(self) -> None:
        """Start tmcd, then the fleet and the mesh; return once every cluster is Healthy."""
        tmcd = await self._spawn("tmcd", "run", "--data-dir", str(self.data), "--http-listen", f"127.0.0.1:{self.port}")

        async def ready() -> bool:
            if tmcd.returncode is not None:
                raise RuntimeError(f"tmcd exited ({tmcd.returncode}); see {self.data / 'tmcd.log'}")
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as s, s.get(self.base + "/readyz") as r:
                    return r.status == 200
            return False

        await wait_for(ready, 60, "tmcd to be ready")
        self.url = (self.data / "nats.url").read_text().strip()
        n, d = str(self.clusters), str(self.data)
        await self._spawn("sim", "sim", "--data-dir", d, "--clusters", n, "--rate", "20", "--heartbeat-interval", "1")
        await self._spawn(
            "mesh", "sim", "mesh", "--data-dir", d, "--clusters", n, "--rps", f"{self.rps:g}", "--seed", "1",
            "--window", f"{self.window:g}",
        )  # fmt: skip

        async def healthy() -> bool:
            code, body = await self.get("/api/v1/synctargets")
            items = body.get("items", []) if code == 200 else []
            return sum(1 for i in items if i.get("status", {}).get("health") == "Healthy") == self.clusters

        await wait_for(healthy, 120, f"{self.clusters} simulated clusters to be Healthy", step=0.2)

    async def stop(self) -> None:
        """Stop the processes: SIGTERM, then SIGKILL after 10 s."""
        for p in reversed(self.procs):
            if p.returncode is None:
                p.terminate()
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                p.kill()
                await p.wait()

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.get(self.base + path) as r:
            return r.status, await r.json(content_type=None)

    async def create(self, obj: dict[str, Any]) -> None:
        path = f"/api/v1/namespaces/{NAMESPACE}/canaryrollouts"
        async with aiohttp.ClientSession() as s, s.post(self.base + path, json=obj) as r:
            if r.status != 201:
                raise RuntimeError(f"POST {path}: {r.status} {await r.text()}")


@contextlib.asynccontextmanager
async def running_stack(clusters: int, data: Path, rps: float = 1000.0, window: float = 1.0) -> AsyncIterator[Stack]:
    """A started :class:`Stack`, stopped on exit."""
    stack = Stack(data, clusters, rps, window)
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()


@dataclass
class Result:
    """One aborted rollout, as the bench saw it."""

    reversal_s: float
    total_s: float
    unrouted: int
    """The route's unrouted_requests in the mesh's last report."""
    canary_after: dict[str, int]
    """Cluster -> canary percent in the mesh's last report (0 everywhere after the rollback)."""


class Seen:
    """TrafficApplied reports of one route and the WorkloadStats of its workload, as received."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, TrafficApplied]] = []
        self.stats: list[WorkloadStats] = []

    async def on_report(self, msg: Any) -> None:
        self.reports.append((time.perf_counter(), decode_as(TrafficApplied, msg.data)))

    async def on_stats(self, msg: Any) -> None:
        self.stats.append(decode_as(WorkloadStats, msg.data))

    def first(self, want: Callable[[TrafficApplied], bool], after: float = 0.0) -> tuple[float, TrafficApplied] | None:
        """The first report received from ``after`` (perf_counter) on that ``want`` accepts."""
        return next(((t, r) for t, r in self.reports if t >= after and want(r)), None)


def canary_on(report: TrafficApplied, clusters: list[str]) -> set[int]:
    """The canary percents the report shows on ``clusters`` (a cluster it does not list is 100 % stable)."""
    return {report.weights.get(c, {}).get("canary", 0) for c in clusters}


async def watch_phase(stack: Stack, name: str, phase: str, started: asyncio.Event) -> float:
    """The time (perf_counter) the rollout is first seen in ``phase``, over an HTTP watch."""
    path = f"/api/v1/namespaces/{NAMESPACE}/canaryrollouts"
    params = {"watch": "1", "fieldSelector": f"metadata.name={name}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.get(stack.base + path, params=params) as r:
        if r.status != 200:
            raise RuntimeError(f"watch {path}: {r.status} {await r.text()}")
        async for raw in r.content:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            started.set()  # the first event is the rollout as it is now
            obj = json.loads(line[6:]).get("object", {})
            if obj.get("status", {}).get("phase") == phase:
                return time.perf_counter()
    raise RuntimeError(f"the watch of {name} ended before it was {phase}")


async def abort_once(stack: Stack, nc: Any, name: str, timeout: float = 60.0) -> Result:
    """Create ``name`` at 50 % on every cluster, abort it once the canary served requests, and
    measure the way back to stable."""
    clusters = [f"sim-{i:03d}" for i in range(1, stack.clusters + 1)]
    seen = Seen()
    subs = [
        await nc.subscribe(f"tmc.traffic.applied.{NAMESPACE}.{name}", cb=seen.on_report),
        await nc.subscribe(f"tmc.workload.*.{NAMESPACE}.{name}.*", cb=seen.on_stats),
    ]
    watch: asyncio.Task[float] | None = None
    try:
        await nc.flush()
        await stack.create(rollout(name))

        async def at_half() -> tuple[float, TrafficApplied] | None:
            return seen.first(lambda r: canary_on(r, clusters) == {50})

        _, half = await wait_for(at_half, timeout, f"the mesh to report {name} at 50 % on {len(clusters)} clusters")

        async def served() -> bool:  # a window closed with the canary at 50 %: it had traffic everywhere
            return {s.cluster for s in seen.stats if s.track == "canary" and s.timestamp > half.timestamp} == set(
                clusters
            )

        await wait_for(served, timeout, f"{name}'s canary to serve requests on every cluster")

        async def paused() -> bool:
            code, body = await stack.get(f"/api/v1/namespaces/{NAMESPACE}/canaryrollouts/{name}")
            return code == 200 and body.get("status", {}).get("phase") == "Paused"

        await wait_for(paused, timeout, f"{name} to pause")
        started = asyncio.Event()
        watch = asyncio.create_task(watch_phase(stack, name, "RolledBack", started))
        await asyncio.wait_for(started.wait(), timeout)

        body = {"namespace": NAMESPACE, "name": name, "action": "abort", "timestamp": time.time()}
        t0 = time.perf_counter()
        msg = await nc.request(f"tmc.ctl.canary.{NAMESPACE}.{name}.abort", json.dumps(body).encode(), timeout=10)
        reply = json.loads(msg.data)
        if not reply.get("ok"):
            raise RuntimeError(f"abort {name} refused: {reply.get('message')}")

        async def back() -> tuple[float, TrafficApplied] | None:
            return seen.first(lambda r: r.generation > half.generation and canary_on(r, clusters) == {0}, t0)

        t_back, stable = await wait_for(back, timeout, f"the mesh to report {name} at 0 % everywhere", step=0.005)
        t_done = await asyncio.wait_for(watch, timeout)

        async def counted() -> bool:  # the window the reversal fell in has closed, its count reported
            return any(s.timestamp > stable.timestamp for s in seen.stats)

        await wait_for(counted, timeout, f"the mesh to close the window {name} was reversed in")
        _, last = seen.reports[-1]
        return Result(
            reversal_s=t_back - t0,
            total_s=t_done - t0,
            unrouted=last.unrouted_requests,
            canary_after={c: last.weights.get(c, {}).get("canary", 0) for c in clusters},
        )
    finally:
        if watch is not None and not watch.done():
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
        for sub in subs:
            await sub.unsubscribe()


async def run(args: argparse.Namespace, data: Path) -> None:
    async with running_stack(args.clusters, data, args.rps, args.window) as stack:
        nc = await nats.connect(stack.url)
        results: list[Result] = []
        try:
            for i in range(1, args.runs + 1):
                r = await abort_once(stack, nc, f"rollback-{i:02d}")
                results.append(r)
                on = sum(1 for v in r.canary_after.values() if v)
                print(
                    f"run {i}: reversal {r.reversal_s:.3f}s, RolledBack {r.total_s:.3f}s, unrouted requests "
                    f"{r.unrouted}, clusters with canary traffic after: {on}",
                    flush=True,
                )
        finally:
            await nc.close()
    unrouted = sum(r.unrouted for r in results)
    print(f"unrouted requests over {len(results)} runs: {unrouted}")
    print(
        f"rollback clusters={args.clusters} reversal_s={statistics.median(r.reversal_s for r in results):.3f} "
        f"total_s={statistics.median(r.total_s for r in results):.3f}"
    )
    if unrouted:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3, help="Rollouts aborted one after the other (a new one each).")
    parser.add_argument("--rps", type=float, default=1000.0, help="The mesh's requests/s per cluster and route.")
    parser.add_argument("--window", type=float, default=1.0, help="The mesh's stats window (seconds).")
    parser.add_argument("--keep", action="store_true", help="Keep the data dir (logs) and print where it is.")
    args = parser.parse_args()
    if args.clusters < 1 or args.runs < 1:
        parser.error("--clusters and --runs must be at least 1")
    if args.keep:
        data = Path(tempfile.mkdtemp(prefix="tmcd-rollback-"))
        print(f"data dir: {data}")
        asyncio.run(run(args, data))
        return
    with tempfile.TemporaryDirectory(prefix="tmcd-rollback-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
