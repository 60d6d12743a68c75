"""Scale and reliability of tmcd replicas on a three-node NATS cluster (R3 streams and KV).

Starts three nats-servers (one JetStream cluster, loopback) and ``tmcd run`` processes, and
measures:

``events_per_s_<n>``      the metrics agent's throughput with n = 1, 2, 3 replicas sharing the
                          durable consumer: a fixed backlog of sync events (``--events``, in
                          SyncEventBatch messages of 250 events) is published at full speed
                          into the (purged) TMC_SYNCER stream once the replicas are ready;
                          events / the time from the first publish until the replicas together
                          have counted every event (``tmc_syncer_resources_synced_total`` summed
                          over their /metrics).
``failover_s``            two replicas; ``kill -9`` of the one leading every leader-only agent
                          until the other acts: its ``tmc_leader{agent="canary"}`` is 1 and its
                          ``/readyz`` is 200 (the canary agent started).  Bounded by the lease:
                          between ``lease_ttl - renew_interval`` and ``lease_ttl`` plus the
                          agents' start.
``rollback_after_kill_s`` two replicas, the simulator's heartbeats and the mock mesh; a canary
                          at 50 % on two clusters is aborted (``tmc.ctl.canary...abort``) and
                          the leader is killed right after the abort was accepted: time from the
                          abort to the rollout's phase RolledBack, as the survivor serves it.

Medians over ``--runs``; the leases are tmcd's defaults unless ``--lease-ttl``/``--renew`` say
otherwise.  The last line::

    replicas events_per_s_1=<n> events_per_s_2=<n> events_per_s_3=<n> failover_s=<x> rollback_after_kill_s=<y>

Run: python bench/replicas.py [--events 1000000] [--runs 3] [--lease-ttl 15] [--renew 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # python bench/replicas.py: the repository root, for tests.*
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nats.js.errors import NotFoundError

from tests.faultstack import CLUSTERS, Replica, Stack, replicated, rollout, total
from tests.helpers import nats_connect, wait_for
from tests.natscluster import NatsCluster
from tmcd.contracts import subjects
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import SyncEvent, SyncEventBatch
from tmcd.runtime.embedded import find_binary
from tmcd.sim.model import FleetModel, SimOptions

SYNCED = "tmc_syncer_resources_synced_total"
_runs = itertools.count()
PER_MESSAGE = 250


def backlog(events: int) -> tuple[list[tuple[str, bytes]], int]:
    """SyncEventBatch payloads (one cluster each) and the events they hold."""
    model = FleetModel(SimOptions(clusters=CLUSTERS, seed=9))
    model.start(1000.0)
    out: list[tuple[str, bytes]] = []
    made = 0
    i = 0
    while made < events:
        by_cluster: dict[str, list[SyncEvent]] = {}
        for ev in model.sync_events(min(PER_MESSAGE * CLUSTERS, events - made), 1000.0 + i):
            by_cluster.setdefault(ev.cluster, []).append(ev)
        for cluster, evs in by_cluster.items():
            out.append(
                (
                    subjects.syncer_batch(cluster),
                    encode(SyncEventBatch(cluster=cluster, timestamp=1000.0 + i, events=evs)),
                )
            )
            made += len(evs)
        i += 1
    return out, made


async def counted(replicas: list[Replica]) -> float:
    """Sync events counted by the replicas together."""
    return sum([total(await r.metrics(), SYNCED) for r in replicas])


async def throughput(
    cluster: NatsCluster, stack: Stack, n: int, payloads: list[tuple[str, bytes]], events: int
) -> float:
    """Events/s of ``n`` replicas working through the backlog."""
    nc = await nats_connect(cluster.urls)
    try:
        with contextlib.suppress(NotFoundError):  # absent before the first replica provisions it
            await nc.jetstream().purge_stream("TMC_SYNCER")
        prefix = f"tput{n}-{next(_runs)}"
        env = {"TMCD_CONSUMER_DURABLE_PREFIX": prefix}
        replicas = list(
            await asyncio.gather(*(stack.replica(f"{prefix}-{i}", "--agents", "metrics", env=env) for i in range(n)))
        )
        t0 = time.perf_counter()
        for k, (subject, data) in enumerate(payloads):
            await nc.publish(subject, data)
            if k % 100 == 0:
                await nc.flush()
        await nc.flush()

        async def done() -> bool:
            return await counted(replicas) >= events

        await wait_for(done, timeout=600, step=0.05, what=f"{events} events counted by {n} replicas")
        elapsed = time.perf_counter() - t0
        got = await counted(replicas)
        assert got == events, f"{n} replicas counted {got:.0f} of {events} events"
        for r in replicas:
            await stack.stop(r.proc)
        return events / elapsed
    finally:
        await nc.close()


async def acting(r: Replica) -> bool:
    """``r`` leads the canary and its agents are started."""
    code, _ = await r.get("/readyz")
    return code == 200 and await r.leader("canary") == 1


async def pair(stack: Stack, tag: str) -> tuple[Replica, Replica]:
    """Two replicas of a deployment of their own (prefix ``tag``); the first leads."""
    env = {"TMCD_CONSUMER_DURABLE_PREFIX": tag}
    a = await stack.replica(f"{tag}-a", env=env)
    b = await stack.replica(f"{tag}-b", env=env)
    assert await a.leader("canary") == 1, "the first replica does not lead"
    return a, b


async def failover(stack: Stack, tag: str) -> float:
    """Seconds from kill -9 of the leader to the other replica acting."""
    a, b = await pair(stack, tag)
    a.proc.kill()
    t0 = time.perf_counter()
    await a.proc.wait()
    await wait_for(lambda: acting(b), timeout=120, step=0.02, what="the new leader acting")
    elapsed = time.perf_counter() - t0
    await stack.stop(b.proc)
    return elapsed


async def rollback_after_kill(stack: Stack, urls: list[str], tag: str) -> float:
    """Seconds from an abort (the leader killed right after accepting it) to RolledBack."""
    a, b = await pair(stack, tag)
    name = f"rb-{tag}"
    steps = [{"setClusters": {"count": 2}}, {"setWeight": 50}, {"pause": {}}]
    await b.apply(rollout(name, steps))

    async def paused() -> bool:
        return (await b.status(name)).get("phase") == "Paused"

    await wait_for(paused, timeout=60, step=0.05, what=f"{name} paused at 50 %")
    nc = await nats_connect(urls)
    try:
        body = {"namespace": "shop", "name": name, "action": "abort", "timestamp": time.time()}
        t0 = time.perf_counter()
        msg = await nc.request(subjects.ctl_canary("shop", name, "abort"), json.dumps(body).encode(), timeout=10)
        assert json.loads(msg.data).get("ok"), msg.data
    finally:
        await nc.close()
    a.proc.kill()
    await a.proc.wait()

    async def rolled_back() -> bool:
        return (await b.status(name)).get("phase") == "RolledBack"

    await wait_for(rolled_back, timeout=120, step=0.02, what=f"{name} RolledBack")
    elapsed = time.perf_counter() - t0
    await stack.stop(b.proc)
    return elapsed


async def run(args: argparse.Namespace, tmp: Path) -> str:
    cluster = NatsCluster(find_binary(), tmp / "cluster")
    await cluster.start()
    env = {
        **replicated(3),
        "TMCD_LEADER_LEASE_TTL": str(args.lease_ttl),
        "TMCD_LEADER_RENEW_INTERVAL": str(args.renew),
        "TMCD_CONSUMER_ACK_WAIT": "30",
    }
    stack = Stack(tmp, cluster.url, env)
    try:
        payloads, events = backlog(args.events)
        eps = {}
        for n in (1, 2, 3):
            runs = [await throughput(cluster, stack, n, payloads, events) for _ in range(args.runs)]
            eps[n] = statistics.median(runs)
            print(f"{n} replica(s): {' '.join(f'{x:.0f}' for x in runs)} events/s", flush=True)
        fo = [await failover(stack, f"fo{i}") for i in range(args.runs)]
        print(f"failover: {' '.join(f'{x:.2f}' for x in fo)} s", flush=True)
        await stack.sim("--clusters", str(CLUSTERS), "--rate", "0", "--heartbeat-interval", "2")
        await stack.mesh("--clusters", str(CLUSTERS), "--rps", "1000", "--window", "0.5", "--seed", "3")
        rb = [await rollback_after_kill(stack, cluster.urls, f"rb{i}") for i in range(args.runs)]
        print(f"rollback after a leader kill: {' '.join(f'{x:.2f}' for x in rb)} s", flush=True)
        return (
            f"replicas events_per_s_1={eps[1]:.0f} events_per_s_2={eps[2]:.0f} events_per_s_3={eps[3]:.0f} "
            f"failover_s={statistics.median(fo):.2f} rollback_after_kill_s={statistics.median(rb):.2f}"
        )
    except AssertionError as exc:
        raise SystemExit(f"{exc}\n{stack.tails()}") from None
    finally:
        await stack.close()
        await asyncio.to_thread(cluster.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="sync events in the backlog")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (medians)")
    parser.add_argument("--lease-ttl", type=float, default=15.0, help="leader.lease_ttl (tmcd's default)")
    parser.add_argument("--renew", type=float, default=5.0, help="leader.renew_interval (tmcd's default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tmcd-replicas-") as tmp:
        print(asyncio.run(run(args, Path(tmp))))


if __name__ == "__main__":
    main()
