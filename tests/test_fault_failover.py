"""Two tmcd replicas on a three-node NATS cluster (R3 streams and KV), the simulator and the mock
mesh running a canary: ``kill -9`` the replica leading ``canary`` mid-step.

What is asserted, and how exactly:

- **Failover**: the other replica's ``tmc_leader{agent="canary"}`` becomes 1 and
  ``/api/v1/replicas`` names it as the canary's leader; the rollout reaches Succeeded with every
  step applied once, in order (the step events of its event log, each with its own generation).
- **Syncer events, while both run** (phase 1): a simulator publishes for a fixed time and ends;
  once the shared durable consumer has acknowledged the whole stream, the two replicas'
  ``tmc_syncer_resources_synced_total`` sum to exactly the events the simulator published.
- **Syncer events across the kill** (phase 2, the simulator publishing throughout): a killed
  replica's counters die with it, so its final count cannot be read.  The test watches the
  consumer's acknowledgements from outside (:class:`~tests.faultstack.AckTap`) and asserts, once
  the simulator stopped and the consumer acknowledged the whole stream: the stream holds every
  event the simulator published (nothing lost before JetStream); every stream message was
  acknowledged exactly once (nothing lost by the replicas, nothing processed to the end twice;
  what the killed replica held unacknowledged was redelivered to the survivor).  A replica
  acknowledges only what it has counted, so the survivor's count plus what the killed replica
  acknowledged is exactly what was published.  Checked from the counters: the survivor counted
  at least every event acknowledged after the kill and at most what was published, and the
  killed replica's last scrape plus the survivor's count exceeds what was published by no more
  than the redelivered events: a message the killed replica counted but had not acknowledged
  yet (at most one pull batch) is counted once more by the survivor, the at-least-once window
  of any consumer that acknowledges after processing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from tests.faultstack import (
    CLUSTERS,
    AckTap,
    Stack,
    applied,
    canary_events,
    drained,
    last_seq,
    replicated,
    rollout,
    stop_sim,
    sync_events_by_seq,
    template,
    total,
)
from tests.helpers import wait_for
from tests.natscluster import NatsCluster

pytestmark = [pytest.mark.slow]

DURABLE = "tmcd-metrics-syncer"
SYNCED = "tmc_syncer_resources_synced_total"
STEPS = [
    {"setClusters": {"count": 2}},
    {"setWeight": 20},
    {"analysis": {"templates": ["errors"]}},
    {"setWeight": 50},
    {"analysis": {"templates": ["errors"]}},
]


async def test_leader_killed_mid_canary(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    urls = nats_cluster.urls
    stack = Stack(tmp_path, nats_cluster.url, replicated(3))
    tap = AckTap(urls, "TMC_SYNCER", DURABLE)
    try:
        a = await stack.replica("tmcd-a")  # first up: leads every leader-only agent
        b = await stack.replica("tmcd-b")
        code, report = await b.get("/api/v1/replicas")
        assert code == 200 and report["leaders"]["canary"] == "tmcd-a", report
        heartbeats, hb_log = await stack.sim("--clusters", str(CLUSTERS), "--rate", "0", "--heartbeat-interval", "1")
        await stack.mesh(
            "--clusters", str(CLUSTERS), "--rps", "20000", "--seed", "11", "--window", "0.5",
            "--stable-error-ratio", "0.005",
        )  # fmt: skip
        await b.apply(template("errors"))  # a write on the follower: shared KV, no forwarding

        async def all_healthy() -> bool:
            return await b.healthy() == CLUSTERS

        await wait_for(all_healthy, timeout=60, step=0.2, what=f"{CLUSTERS} Healthy clusters")

        # phase 1: both replicas split a fixed batch of syncer events
        sim_args = ("--clusters", str(CLUSTERS), "--rate", "300", "--heartbeat-interval", "1")
        proc, log = await stack.sim(*sim_args, "--seed", "3", "--duration", "3")
        n1 = (await stop_sim(proc, log, 30, interrupt=False))["sync"]
        await drained(urls, "TMC_SYNCER", DURABLE)
        a1, b1 = total(await a.metrics(), SYNCED), total(await b.metrics(), SYNCED)
        assert n1 > 0 and a1 + b1 == n1, (a1, b1, n1)

        # phase 2: events flow, the canary runs, and its leader dies mid-step
        await tap.start()
        phase2 = await last_seq(urls, "TMC_SYNCER")  # the tap sees every ack after this (heartbeats before)
        proc, log = await stack.sim(*sim_args, "--seed", "4")
        await wait_for(lambda: len(tap.acks) > 50, timeout=30, what="syncer events flowing")
        await b.apply(rollout("failover", STEPS))

        async def analysing() -> bool:
            status = await b.status("failover")
            assert status.get("phase") in (None, "Pending", "Progressing"), status
            return int(status.get("currentStepIndex", 0)) >= 2

        await wait_for(analysing, timeout=60, step=0.05, what="the first analysis step")
        a_last = total(await a.metrics(), SYNCED)
        a.proc.kill()
        await a.proc.wait()
        killed = asyncio.get_running_loop().time()

        async def b_leads() -> bool:
            code, report = await b.get("/api/v1/replicas")
            return await b.leader("canary") == 1 and code == 200 and report["leaders"].get("canary") == "tmcd-b"

        await wait_for(b_leads, timeout=15, step=0.1, what="tmcd-b leading the canary")

        async def finished() -> dict[str, object] | None:
            status = await b.status("failover")
            return status if status.get("phase") in ("Succeeded", "RolledBack", "Degraded") else None

        status = await wait_for(finished, timeout=90, step=0.2, what="the rollout to finish")
        assert status["phase"] == "Succeeded", status
        acts = applied(await canary_events(urls, "failover"))
        assert [x["action"] for x in acts] == ["clusters", "weight", "weight", "promote", "finalize"], acts
        assert len({x["generation"] for x in acts}) == len(acts)

        n2 = (await stop_sim(proc, log))["sync"]
        await stop_sim(heartbeats, hb_log)  # nothing more on the stream: the ledgers can be compared
        await drained(urls, "TMC_SYNCER", DURABLE)
        events = await sync_events_by_seq(urls)
        assert sum(events.values()) == n1 + n2  # every published event is in the stream
        b2 = total(await b.metrics(), SYNCED) - b1
        acks = [(seq, dc, t) for seq, dc, t in tap.acks if seq > phase2]
        times = Counter(seq for seq, _, _ in acks)
        assert set(times) == {s for s in events if s > phase2}, "a stream message was never acknowledged"
        assert max(times.values()) == 1, [s for s, n in times.items() if n > 1]
        after_kill = sum(events[s] for s, _, t in acks if t > killed + 0.5)  # only b is left to ack them
        redelivered = sum(events[s] for s, dc, _ in acks if dc > 1)  # handed to a, not acked before it died
        # b counted every event acknowledged after the kill and no more than was published; a's
        # last scrape plus b's count exceeds what was published by at most the redeliveries
        assert after_kill <= b2 <= n2, (after_kill, b2, n2)
        assert (a_last - a1) + b2 <= n2 + redelivered, (a_last, a1, b2, n2, redelivered)
        print(
            f"phase 1: a={a1:.0f} b={b1:.0f}; phase 2: n={n2} b={b2:.0f} a_last={a_last - a1:.0f} "
            f"after_kill={after_kill} redelivered={redelivered}"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.tails()}") from None
    finally:
        await tap.close()
        await stack.close()
