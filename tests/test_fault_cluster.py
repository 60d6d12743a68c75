"""tmcd on a three-node NATS cluster: its streams and KV buckets are R3 (and a changed replica
count is applied in place), and losing one node mid-run stops nothing; the node rejoins and
catches up when it comes back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faultstack import (
    CLUSTERS,
    Stack,
    applied,
    canary_events,
    drained,
    jetstream_report,
    replicated,
    rollout,
    stop_sim,
    template,
    total,
)
from tests.helpers import nats_connect, wait_for
from tests.natscluster import NatsCluster, stream_infos
from tmcd.bus import Bus
from tmcd.bus.provision import KV_BUCKETS
from tmcd.config import load_config
from tmcd.contracts.subjects import STREAM_SUBJECTS
from tmcd.runtime.selfmetrics import SelfMetrics

pytestmark = [pytest.mark.slow]

ALL = [*STREAM_SUBJECTS, *(f"KV_{b}" for b in KV_BUCKETS.values())]


async def test_streams_and_kv_are_r3_and_change_in_place(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    async def provision(replicas: int) -> dict[str, str]:
        # the settings as an operator sets them: TMCD_STREAMS_<NAME>_REPLICAS, TMCD_KV_REPLICAS
        cfg = load_config(None, env={"TMCD_NATS_URL": nats_cluster.url, **replicated(replicas)})
        bus = Bus(cfg.nats, SelfMetrics(), url=nats_cluster.url)
        await bus.connect()
        try:
            return await bus.provision(cfg)
        finally:
            await bus.close()

    assert set((await provision(1)).values()) == {"created"}
    nc = await nats_connect(nats_cluster.urls)
    try:
        js = nc.jetstream()
        await js.publish("tmc.syncer.c1.heartbeat", b'{"cluster":"c1","timestamp":1}')
        kv = await js.key_value("tmc-canaries")
        await kv.put("shop.kept", b"{}")
    finally:
        await nc.close()
    infos = await stream_infos(nats_cluster.urls[0])
    assert {n: i.config.num_replicas for n, i in infos.items() if n in ALL} == dict.fromkeys(ALL, 1)

    assert set((await provision(3)).values()) == {"updated"}
    assert set((await provision(3)).values()) == {"unchanged"}

    async def r3_everywhere() -> bool:
        infos = await stream_infos(nats_cluster.urls[1])
        return all(
            infos[n].config.num_replicas == 3
            and len(infos[n].cluster.replicas or []) == 2
            and all(p.current for p in infos[n].cluster.replicas or [])
            for n in ALL
        )

    await wait_for(r3_everywhere, timeout=30, step=0.2, what="every stream and bucket with 3 current replicas")
    infos = await stream_infos(nats_cluster.urls[2])
    assert infos["TMC_SYNCER"].state.messages == 1 and infos["KV_tmc-canaries"].state.messages == 1  # in place
    for i in range(3):  # each node holds its own copy
        local = await nats_cluster.local_streams(i)
        assert set(ALL) <= set(local), (i, sorted(local))


async def test_losing_one_nats_node_stops_nothing_and_it_catches_up(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    urls = nats_cluster.urls
    stack = Stack(tmp_path, nats_cluster.url, replicated(3))
    gone = -1
    try:
        tmcd = await stack.replica("tmcd-a")
        sim = await stack.sim("--clusters", str(CLUSTERS), "--rate", "300", "--heartbeat-interval", "1")
        mesh = await stack.mesh(
            "--clusters", str(CLUSTERS), "--rps", "20000", "--seed", "11", "--window", "0.5",
            "--stable-error-ratio", "0.005",
        )  # fmt: skip
        await tmcd.apply(template("errors", interval=3, count=2, inconclusive=5))  # rides out a leader election

        async def all_healthy() -> bool:
            return await tmcd.healthy() == CLUSTERS

        await wait_for(all_healthy, timeout=60, step=0.2, what=f"{CLUSTERS} Healthy clusters")
        steps = [
            {"setClusters": {"count": 2}},
            {"setWeight": 20},
            {"analysis": {"templates": ["errors"]}},
            {"setWeight": 50},
            {"analysis": {"templates": ["errors"]}},
        ]
        await tmcd.apply(rollout("survivor", steps))

        async def at(step: int) -> bool:
            status = await tmcd.status("survivor")
            assert status.get("phase") in (None, "Pending", "Progressing"), status
            return int(status.get("currentStepIndex", 0)) >= step

        await wait_for(lambda: at(1), timeout=60, step=0.05, what="the rollout under way")
        # the node leading TMC_SYNCER goes: the stream elects another leader, clients move over
        leader = (await stream_infos(urls[0])).get("TMC_SYNCER")
        assert leader is not None and leader.cluster is not None
        gone = int(str(leader.cluster.leader).removeprefix("n")) - 1
        before = total(await tmcd.metrics(), "tmc_syncer_resources_synced_total")
        nats_cluster.kill(gone)

        async def counting() -> bool:
            return total(await tmcd.metrics(), "tmc_syncer_resources_synced_total") >= before + 1000

        await wait_for(counting, timeout=30, step=0.2, what="syncer events still counted")

        async def finished() -> dict[str, object] | None:
            status = await tmcd.status("survivor")
            return status if status.get("phase") in ("Succeeded", "RolledBack", "Degraded") else None

        status = await wait_for(finished, timeout=90, step=0.2, what="the rollout to finish")
        assert status["phase"] == "Succeeded", status
        acts = applied(await canary_events(urls, "survivor"))
        assert [x["action"] for x in acts] == ["clusters", "weight", "weight", "promote", "finalize"], acts

        await nats_cluster.restart(gone)
        await stop_sim(*sim)  # the streams stop growing: the copies can be compared
        await stack.stop(mesh[0])
        await drained(urls, "TMC_SYNCER", "tmcd-metrics-syncer")

        async def caught_up() -> bool:
            infos = await stream_infos(urls[gone])
            local = await nats_cluster.local_streams(gone)
            for name in ALL:
                info = infos[name]
                if not all(p.current for p in info.cluster.replicas or []):
                    return False
                if name == "KV_tmc-leases":
                    continue  # renewed every 0.5 s: never still
                mine = local.get(name, {})
                if (mine.get("messages"), mine.get("last_seq")) != (info.state.messages, info.state.last_seq):
                    return False
            return True

        await wait_for(caught_up, timeout=60, step=0.5, what=f"node n{gone + 1} caught up on every stream")
    except AssertionError as exc:
        report = await jetstream_report([u for i, u in enumerate(urls) if i != gone])
        raise AssertionError(f"{exc}\nkilled n{gone + 1}\n{report}\n{stack.tails()}") from None
    finally:
        await stack.close()
