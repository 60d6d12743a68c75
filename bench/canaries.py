"""Many canary rollouts at once in one tmcd, against the mock service mesh.

Starts a nats-server, ``tmcd sim`` (the clusters' heartbeats) and ``tmcd sim mesh`` as
processes, and a tmcd daemon (every agent) in this process, so that a sampler on the same
event loop measures how late the loop runs.  It saves one AnalysisTemplate and N
CanaryRollouts through the HTTP API, lets them run for a fixed time, and counts the canary
controller's decisions -- every CanaryEvent it publishes (phase and step changes, applied
actions, measurements, promote/rollback decisions).  The last line is::

    canaries rollouts=<n> decisions_per_s=<x> loop_lag_p99_ms=<y>

(target on the 2-core development machine: 1,000 rollouts with loop lag p99 under 100 ms)

    python bench/canaries.py [--rollouts 1000] [--seconds 60] [--clusters 10] [--window 5]

Loop lag is sampled every 20 ms: how much later than asked a ``sleep(0.02)`` returns.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats

from tmcd.config import load_config
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import EmbeddedNats, find_binary

SAMPLE = 0.02


def template() -> dict[str, Any]:
    return {
        "apiVersion": "tmc.kcp.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "errors", "namespace": "bench"},
        "spec": {
            "metrics": [
                {
                    "name": "error-ratio",
                    "interval": 10.0,
                    "count": 3,
                    "inconclusiveLimit": 2,
                    "provider": {"nats": {"metric": "error_ratio"}},
                    "condition": {"comparison": {"test": "proportion", "maxIncrease": 1.0, "maxDifference": 0.005}},
                }
            ]
        },
    }


def rollout(i: int) -> dict[str, Any]:
    name = f"app-{i:05d}"
    return {
        "apiVersion": "tmc.kcp.io/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "workloadRef": {"name": name},
            "stableVersion": "v1",
            "canaryVersion": "v2",
            "clusterSelector": {"matchLabels": {}},
            "trafficRouting": {"router": "nats", "route": name},
            "steps": [
                {"setClusters": {"count": 2}},
                {"setWeight": 10},
                {"analysis": {"templates": ["errors"]}},
                {"setWeight": 50},
                {"analysis": {"templates": ["errors"]}},
            ],
        },
    }


async def lag_sampler(samples: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t0 = loop.time()
        await asyncio.sleep(SAMPLE)
        samples.append(max(0.0, loop.time() - t0 - SAMPLE))


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def post_all(base: str, objects: list[dict[str, Any]], concurrency: int = 16) -> None:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for o in objects:
        queue.put_nowait(o)

    async def worker(s: aiohttp.ClientSession) -> None:
        while not queue.empty():
            o = queue.get_nowait()
            plural = "canaryrollouts" if o["kind"] == "CanaryRollout" else "analysistemplates"
            async with s.post(f"{base}/api/v1/namespaces/bench/{plural}", json=o) as r:
                if r.status != 201:
                    raise SystemExit(f"POST {plural}: {r.status} {await r.text()}")

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))


def spawn(data: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("TMCD_NATS_URL", "TMCD_DATA_DIR")}
    log = open(data / f"{args[0]}-{args[-1]}.log", "wb")  # noqa: SIM115 (the process owns it)
    return subprocess.Popen([sys.executable, "-m", "tmcd.cli.main", *args], stdout=log, stderr=log, env=env)


async def run(args: argparse.Namespace, data: Path, url: str) -> None:
    (data / "nats.url").write_text(url + "\n")
    cfg = load_config(
        env={},
        overrides={
            "nats.url": url,
            "http.listen": "127.0.0.1:0",
            "data_dir": str(data),
            "health.startup_grace": 0.0,
            "health.success_threshold": 0.0,
            "health.interval": 1.0,
        },
    )
    daemon = Daemon(cfg)
    await daemon.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        assert daemon.http is not None
        base = daemon.http.base_url
        procs.append(spawn(data, "sim", "--data-dir", str(data), "--clusters", str(args.clusters), "--rate", "20"))
        mesh = ["sim", "mesh", "--data-dir", str(data), "--clusters", str(args.clusters), "--rps", "5000"]
        procs.append(spawn(data, *mesh, "--seed", "1", "--window", str(args.window), "--stable-error-ratio", "0.005"))
        await asyncio.sleep(3.0)  # heartbeats: the clusters become Healthy
        t0 = time.perf_counter()
        await post_all(base, [template()])
        await post_all(base, [rollout(i) for i in range(args.rollouts)])
        print(f"saved {args.rollouts} rollouts in {time.perf_counter() - t0:.1f}s", flush=True)
        nc = await nats.connect(url)
        events = 0
        phases: dict[str, str] = {}

        async def count(msg: Any) -> None:
            nonlocal events
            events += 1
            if b'"type":"phase"' in msg.data:
                phases[msg.subject] = msg.data.split(b'"phase":"')[1].split(b'"')[0].decode()

        sub = await nc.subscribe("tmc.canary.>", cb=count)
        samples: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(lag_sampler(samples, stop))
        t0 = time.perf_counter()
        await asyncio.sleep(args.seconds)
        elapsed = time.perf_counter() - t0
        stop.set()
        await sampler
        await sub.unsubscribe()
        await nc.close()
        by_phase: dict[str, int] = {}
        for p in phases.values():
            by_phase[p] = by_phase.get(p, 0) + 1
        print(f"{events} canary events in {elapsed:.0f}s; latest phase per rollout: {by_phase}")
        print(
            f"loop lag p50 {quantile(samples, 0.5) * 1000:.1f} ms, p99 {quantile(samples, 0.99) * 1000:.1f} ms, "
            f"max {max(samples, default=0.0) * 1000:.1f} ms over {len(samples)} samples"
        )
        print(
            f"canaries rollouts={args.rollouts} decisions_per_s={events / elapsed:.0f} "
            f"loop_lag_p99_ms={quantile(samples, 0.99) * 1000:.1f}"
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        await daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="How long the rollouts are measured.")
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--window", type=float, default=5.0, help="The mesh's stats window (seconds).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        server = EmbeddedNats(find_binary(), data / "nats")
        url = server.start()
        try:
            asyncio.run(run(args, data, url))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
