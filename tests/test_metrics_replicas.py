"""Two tmcd replicas (same NATS, same consumer.durable_prefix) running the metrics agent: they
split the sync events and placement decisions (each counted once, summed over replicas) and
each observe every heartbeat, connection event and decision's selected clusters (the same
cluster state on both); a replica started later has the state at once, from the stream."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from tests.helpers import daemon_config, nats_connect, running_daemon, sample, scrape, wait_for
from tmcd.contracts import subjects as s
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import (
    ConnectionEvent,
    PlacementDecision,
    ResourceQuantities,
    SyncerHeartbeat,
    SyncEvent,
    SyncEventBatch,
)
from tmcd.metrics import catalog, replicas
from tmcd.runtime.embedded import EmbeddedNats

CLUSTERS = ("r-1", "r-2", "r-3")
HEARTBEATS = 6
SAME = {n for spec in catalog.SPECS if replicas.across(spec) == "same" for n in spec.series_names}
SAME -= {"tmc_consumer_pending_messages"}  # the consumer's backlog, as each replica last read it


def state_lines(text: str) -> list[str]:
    """The series every replica must export alike (cluster state, heartbeat gaps, selected clusters)."""
    return sorted(
        line
        for line in text.splitlines()
        if not line.startswith("#") and line.partition("{")[0].partition(" ")[0] in SAME
    )


def heartbeat(cluster: str, i: int, start: float) -> SyncerHeartbeat:
    q = ResourceQuantities
    return SyncerHeartbeat(
        cluster=cluster,
        timestamp=start + 20.0 * i,
        sequence=i,
        labels={"region": "eu-west-1", "zone": f"eu-west-1{'abc'[i % 3]}"},
        capacity=q(cpu=16 + i, memory=64 << 30, pods=110),
        allocatable=q(cpu=15, memory=60 << 30, pods=110),
        used=q(cpu=i, memory=1 << 30, pods=10 + i),
        queue_depth=100 * i + len(cluster),
    )


def config(url: str, path: Path, **kw: object) -> object:
    # one message per fetch: the two replicas' pull requests take turns, so both get work
    return daemon_config(url, path, agents="metrics", **{"consumer.batch": 1, **kw})


async def test_two_replicas_split_events_and_export_the_same_state(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    nc = await nats_connect(nats_server.url)
    js = nc.jetstream()
    start = time.time() - 200.0
    try:
        async with contextlib.AsyncExitStack() as stack:
            a = await stack.enter_async_context(running_daemon(config(nats_server.url, tmp_path / "a")))  # type: ignore[arg-type]
            b = await stack.enter_async_context(running_daemon(config(nats_server.url, tmp_path / "b")))  # type: ignore[arg-type]
            published = {"events": 0, "messages": 0, "decisions": 0}
            for i in range(HEARTBEATS):
                for c in CLUSTERS:
                    await js.publish(s.syncer_heartbeat(c), encode(heartbeat(c, i, start)))
                    events = [
                        SyncEvent(
                            cluster=c,
                            timestamp=start + 20.0 * i,
                            resource="v1/pods",
                            ok=j % 4 != 0,
                            error_reason="" if j % 4 else "Conflict",
                        )
                        for j in range(5 + i)
                    ]
                    await js.publish(
                        s.syncer_batch(c), encode(SyncEventBatch(cluster=c, timestamp=start, events=events))
                    )
                    published["events"] += len(events)
                    published["messages"] += 1 + len(events)  # a batch counts each of its events
                    if i in (1, 3):  # a disconnect and a reconnect
                        state = "disconnected" if i == 1 else "connected"
                        ev = ConnectionEvent(cluster=c, timestamp=start + 20.0 * i + 1, state=state)
                        await js.publish(s.syncer_conn(c), encode(ev))
                        published["messages"] += 1
                dec = PlacementDecision(
                    placement="web",
                    timestamp=start + 20.0 * i,
                    selected=list(CLUSTERS[: 1 + i % 3]),
                    latency_seconds=0.001,
                )
                await js.publish(s.placement_decision("web"), encode(dec))
                published["decisions"] += 1

            async def both_done() -> list[str] | None:
                texts = [await scrape(d.http.base_url) for d in (a, b)]
                processed = sum(sample(t, "tmc_events_processed_total", stream="TMC_SYNCER") for t in texts)
                decisions = sum(sample(t, "tmc_placement_decisions_total", placement="web") for t in texts)
                states = [state_lines(t) for t in texts]
                done = (
                    processed == published["messages"]
                    and decisions == published["decisions"]
                    and states[0] == states[1]
                    and all(sample(t, "tmc_syncer_heartbeat_interval_seconds_count", cluster="r-3") for t in texts)
                )
                return texts if done else None

            ta, tb = await wait_for(both_done, what="both replicas caught up")
            # the work was split, each event counted once over the two
            synced = "tmc_syncer_resources_synced_total"
            per_replica = [sum(sample(t, synced, cluster=c) for c in CLUSTERS) for t in (ta, tb)]
            assert sum(per_replica) == published["events"]
            assert all(n > 0 for n in per_replica), per_replica
            errors = sum(sample(t, "tmc_syncer_errors_total", cluster=c) for t in (ta, tb) for c in CLUSTERS)
            assert errors == sum((5 + i + 3) // 4 for i in range(HEARTBEATS)) * len(CLUSTERS)
            # the state: identical, and right
            assert state_lines(ta) == state_lines(tb)
            last = heartbeat("r-2", HEARTBEATS - 1, start)
            for t in (ta, tb):
                assert sample(t, "tmc_syncer_queue_depth", cluster="r-2") == last.queue_depth
                assert sample(t, "tmc_cluster_capacity", cluster="r-2", resource="cpu") == last.capacity.cpu
                assert sample(t, "tmc_connection_up", cluster="r-2") == 1
                assert sample(t, "tmc_connection_reconnects_total", cluster="r-2") == 1
                # every gap observed once on each replica: not halved by the split, not doubled
                assert sample(t, "tmc_syncer_heartbeat_interval_seconds_count", cluster="r-2") == HEARTBEATS - 1
                assert sample(t, "tmc_placement_selected_clusters", placement="web") == 1 + (HEARTBEATS - 1) % 3
    finally:
        await nc.close()


async def test_a_replica_started_later_has_the_state_from_the_stream(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    nc = await nats_connect(nats_server.url)
    js = nc.jetstream()
    start = time.time() - 100.0
    try:
        async with running_daemon(config(nats_server.url, tmp_path / "a")) as a:  # type: ignore[arg-type]
            for i in range(3):
                await js.publish(s.syncer_heartbeat("r-1"), encode(heartbeat("r-1", i, start)))
            ev = ConnectionEvent(cluster="r-1", timestamp=start + 50.0, state="disconnected")
            await js.publish(s.syncer_conn("r-1"), encode(ev))
            dec = PlacementDecision(placement="web", timestamp=start, selected=["r-1", "r-2"])
            await js.publish(s.placement_decision("web"), encode(dec))
            old = SyncerHeartbeat(cluster="gone", timestamp=start - 2 * 86400.0)  # past metrics.forget_after
            await js.publish(s.syncer_heartbeat("gone"), encode(old))

            async def consumed() -> str | None:
                t = await scrape(a.http.base_url)
                return t if sample(t, "tmc_events_processed_total", stream="TMC_SYNCER") == 5 else None

            ta = await wait_for(consumed, what="replica a consumed everything")
        # b starts when the durable consumers have nothing left for it: its state comes from
        # the last message of every subject in the streams
        async with running_daemon(config(nats_server.url, tmp_path / "b")) as b:
            tb = await scrape(b.http.base_url)
            assert sample(tb, "tmc_events_processed_total", stream="TMC_SYNCER") == 0
            assert sample(tb, "tmc_syncer_queue_depth", cluster="r-1") == heartbeat("r-1", 2, start).queue_depth
            assert sample(tb, "tmc_connection_up", cluster="r-1") == 0
            assert sample(tb, "tmc_placement_selected_clusters", placement="web") == 2
            assert 'cluster="gone"' not in tb
            # the same cluster state as a, except the gaps a saw and b did not
            gaps = "tmc_syncer_heartbeat_interval_seconds"
            assert [x for x in state_lines(tb) if gaps not in x] == [
                x for x in state_lines(ta) if gaps not in x and 'cluster="gone"' not in x
            ]
            assert sample(tb, f"{gaps}_count", cluster="r-1") == 0
    finally:
        await nc.close()
