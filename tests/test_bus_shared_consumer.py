"""Replicas share one durable pull consumer: a replica that dies holding delivered messages must
not lose them (another replica gets them after ``ack_wait``), whatever the others acknowledge."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.helpers import daemon_config, nats_connect, wait_for
from tmcd.bus import Bus, Delivery
from tmcd.contracts import subjects
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import SyncerHeartbeat
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics

STREAM = "TMC_SYNCER"


def heartbeat(i: int) -> bytes:
    return encode(SyncerHeartbeat(cluster=f"c{i:03d}", timestamp=1000.0 + i))


async def _bus(url: str, tmp: Path) -> Bus:
    cfg = daemon_config(url, tmp)
    bus = Bus(cfg.nats, SelfMetrics(), url=url)
    await bus.connect()
    await bus.provision(cfg)
    return bus


async def test_a_replica_dying_with_delivered_messages_loses_none(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    nc = await nats_connect(nats_server.url)
    a = await _bus(nats_server.url, tmp_path / "a")
    b = await _bus(nats_server.url, tmp_path / "b")
    try:
        js = nc.jetstream()
        for i in range(1, 21):
            await js.publish(subjects.syncer_heartbeat(f"c{i:03d}"), heartbeat(i))
        stuck = asyncio.Event()
        seen_by_b: list[str] = []

        async def hangs(d: Delivery[Any]) -> None:  # replica a: takes a batch, then hangs on it
            stuck.set()
            await asyncio.Event().wait()

        async def counts(d: Delivery[Any]) -> None:
            seen_by_b.append(d.msg.cluster)

        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        kw: dict[str, Any] = {"batch": 5, "fetch_timeout": 0.2, "ack_wait": 1.0}
        task_a = asyncio.create_task(a.consume(STREAM, "shared", hangs, stop_a, **kw))
        await wait_for(stuck.is_set, what="replica a holding messages 1-5")
        task_b = asyncio.create_task(b.consume(STREAM, "shared", counts, stop_b, **kw))
        await wait_for(lambda: len(seen_by_b) >= 15, what="replica b took the rest")
        await a.nc.close()  # replica a dies: its connection goes, nothing of its batch acknowledged
        task_a.cancel()
        await asyncio.gather(task_a, return_exceptions=True)
        await wait_for(lambda: len(seen_by_b) >= 20, timeout=10, what="a's messages redelivered to b")
        assert sorted(seen_by_b) == [f"c{i:03d}" for i in range(1, 21)]
        info = await js.consumer_info(STREAM, "shared")
        assert info.num_ack_pending == 0 and info.num_pending == 0
        stop_b.set()
        await asyncio.wait_for(task_b, 10)
    finally:
        await a.close()
        await b.close()
        await nc.close()


async def test_an_ack_all_consumer_of_an_older_tmcd_goes_on_from_its_ack_floor(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    from nats.js import api

    nc = await nats_connect(nats_server.url)
    bus = await _bus(nats_server.url, tmp_path)
    try:
        js = nc.jetstream()
        for i in range(1, 11):
            await js.publish(subjects.syncer_heartbeat(f"c{i:03d}"), heartbeat(i))
        old = api.ConsumerConfig(durable_name="older", ack_policy=api.AckPolicy.ALL)
        await js.add_consumer(STREAM, old)
        sub = await js.pull_subscribe_bind("older", STREAM)
        msgs = await sub.fetch(4, timeout=5)
        await msgs[-1].ack()  # the older tmcd acknowledged 1-4 at once
        await sub.unsubscribe()
        seen: list[str] = []

        async def counts(d: Delivery[Any]) -> None:
            seen.append(d.msg.cluster)

        stop = asyncio.Event()
        task = asyncio.create_task(bus.consume(STREAM, "older", counts, stop, batch=5, fetch_timeout=0.2))
        await wait_for(lambda: len(seen) >= 6, what="the rest consumed")
        stop.set()
        await asyncio.wait_for(task, 10)
        assert seen == [f"c{i:03d}" for i in range(5, 11)]  # nothing again, nothing skipped
        info = await js.consumer_info(STREAM, "older")
        assert info.config.ack_policy == api.AckPolicy.EXPLICIT

        async def all_acked() -> bool:  # the acks are sent without waiting for the server
            return int((await js.consumer_info(STREAM, "older")).num_ack_pending) == 0

        await wait_for(all_acked, what="every message acknowledged")
    finally:
        await bus.close()
        await nc.close()


async def test_a_message_delivered_again_after_it_was_handled_is_not_handled_twice(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """What a nats-server restart can do (it forgets deliveries whose acks it had not stored yet),
    played by deleting the durable consumer under the running one: everything comes again."""
    from nats.js import api

    nc = await nats_connect(nats_server.url)
    bus = await _bus(nats_server.url, tmp_path)
    try:
        js = nc.jetstream()
        for i in range(1, 11):
            await js.publish(subjects.syncer_heartbeat(f"c{i:03d}"), heartbeat(i))
        seen: list[str] = []

        async def counts(d: Delivery[Any]) -> None:
            seen.append(d.msg.cluster)

        stop = asyncio.Event()
        task = asyncio.create_task(bus.consume(STREAM, "again", counts, stop, batch=4, fetch_timeout=0.2))
        await wait_for(lambda: len(seen) >= 10, what="the first ten handled")
        await js.delete_consumer(STREAM, "again")
        await js.add_consumer(STREAM, api.ConsumerConfig(durable_name="again", ack_policy=api.AckPolicy.EXPLICIT))
        for i in range(11, 16):
            await js.publish(subjects.syncer_heartbeat(f"c{i:03d}"), heartbeat(i))
        await wait_for(lambda: len(seen) >= 15, what="the new ones handled")

        async def all_acked() -> bool:
            info = await js.consumer_info(STREAM, "again")
            return info.num_ack_pending == 0 and info.num_pending == 0

        await wait_for(all_acked, what="everything acknowledged, the old ones again")
        stop.set()
        await asyncio.wait_for(task, 10)
        assert seen == [f"c{i:03d}" for i in range(1, 16)]
    finally:
        await bus.close()
        await nc.close()


def test_seen_is_a_bounded_window() -> None:
    from tmcd.bus.consumer import Seen

    seen = Seen(3)
    assert [seen.first_time(s) for s in (1, 2, 3, 2, 4)] == [True, True, True, False, True]
    assert seen.first_time(1)  # out of the window: handled again (the server keeps fewer outstanding)
    assert not seen.first_time(4) and seen.first_time(7) and seen.first_time(5)
