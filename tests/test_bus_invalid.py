"""Malformed payloads on every subject tmcd consumes are counted, logged once per subject
per minute, dead-lettered to tmc.dead.<subject>, acked, and the consumer keeps going."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import nats
import pytest

from tests.helpers import daemon_config, nats_connect, running_daemon, sample, scrape, wait_for
from tmcd.contracts import subjects as s
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import SyncEvent
from tmcd.runtime.embedded import EmbeddedNats

CONSUMED = [
    s.syncer_heartbeat("gbg-1"),
    s.syncer_sync("gbg-1"),
    s.syncer_conn("gbg-1"),
    s.placement_decision("gbg-pl"),
    s.workload_stats("gbg-1", "shop", "cart", "canary"),
]
KIND = {
    CONSUMED[0]: "syncer_heartbeat",
    CONSUMED[1]: "sync_event",
    CONSUMED[2]: "connection_event",
    CONSUMED[3]: "placement_decision",
    CONSUMED[4]: "workload_stats",
}
GARBAGE = {
    "random": (random.Random(7).randbytes(64), "malformed_json"),
    "truncated": (b'{"cluster": "gbg-1", "timestamp": 1.0, "res', "malformed_json"),
    "wrong_types": (b'{"cluster": 12, "timestamp": "yesterday", "schema": 1}', "invalid_fields"),
    "future_schema": (b'{"schema": 99, "cluster": "gbg-1", "timestamp": 1.0}', "unsupported_schema"),
    "too_deep": (b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}", "too_deep"),  # valid JSON the decoder cannot follow
}


async def test_garbage_on_every_consumed_subject(
    nats_server: EmbeddedNats, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # exact counts of invalid messages and dead letters: a server of its own, empty at start
    caplog.set_level(logging.WARNING, logger="tmcd.bus")
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics")
    nc = await nats_connect(nats_server.url)
    dead: list[tuple[str, bytes, str]] = []

    async def on_dead(msg: nats.aio.msg.Msg) -> None:
        dead.append((msg.subject, msg.data, (msg.headers or {}).get("Tmc-Reason", "")))

    sub = await nc.subscribe("tmc.dead.>", cb=on_dead)
    await nc.flush()
    try:
        async with running_daemon(cfg) as daemon:
            base = daemon.http.base_url
            before = await scrape(base)
            js = nc.jetstream()
            for subject in CONSUMED:
                for payload, _ in GARBAGE.values():
                    await js.publish(subject, payload)
            # then a valid event: the consumer must still be alive after the garbage
            good = SyncEvent(cluster="gbg-1", timestamp=time.time(), resource="apps/v1/deployments")
            await js.publish(s.syncer_sync("gbg-1"), encode(good))

            expected_dead = len(CONSUMED) * len(GARBAGE)

            async def all_handled() -> str | None:
                # every dead letter, and the valid event (published last, maybe in a later pull)
                if len(dead) < expected_dead:
                    return None
                text = await scrape(base)
                return text if sample(text, "tmc_events_processed_total", stream="TMC_SYNCER") >= 1 else None

            after = await wait_for(all_handled, what="dead letters and the valid event")

            for subject in CONSUMED:
                for name, (payload, reason) in GARBAGE.items():
                    assert (f"tmc.dead.{subject}", payload, reason) in dead, (subject, name)
            for subject, kind in KIND.items():
                for reason in {r for _, r in GARBAGE.values()}:
                    n = sum(1 for _, r in GARBAGE.values() if r == reason)
                    got = sample(after, "tmc_events_invalid_total", kind=kind, reason=reason) - sample(
                        before, "tmc_events_invalid_total", kind=kind, reason=reason
                    )
                    assert got == n, (subject, kind, reason, got)
            assert sample(before, "tmc_events_processed_total", stream="TMC_SYNCER") == 0
            assert sample(after, "tmc_events_processed_total", stream="TMC_SYNCER") == 1  # the valid one only

            # every message was acked: nothing pending or awaiting ack on the consumers
            for stream, durable in [
                ("TMC_SYNCER", "tmcd-metrics-syncer"),
                ("TMC_PLACEMENT", "tmcd-metrics-placement"),
                ("TMC_WORKLOAD", "tmcd-metrics-workload"),
            ]:

                async def settled(stream: str = stream, durable: str = durable) -> bool:
                    info = await js.consumer_info(stream, durable)
                    return info.num_ack_pending == 0 and info.num_pending == 0

                await wait_for(settled, what=f"{durable} acked everything")
    finally:
        await sub.unsubscribe()
        await nc.close()

    # logged once per subject (five bad messages each, within a minute), naming the subject
    for subject in CONSUMED:
        lines = [r.getMessage() for r in caplog.records if f"invalid message on {subject}:" in r.getMessage()]
        assert len(lines) == 1, (subject, lines)


async def test_bad_request_on_served_subject_gets_400_and_dead_letter(nats_url: str) -> None:
    from tmcd.bus import Bus
    from tmcd.config import NatsConfig
    from tmcd.contracts.codec import decode_as
    from tmcd.contracts.messages import ControlReply
    from tmcd.runtime.selfmetrics import SelfMetrics

    metrics = SelfMetrics()
    bus = Bus(NatsConfig(), metrics, url=nats_url)
    await bus.connect(retry=False)
    nc = await nats_connect(nats_url)
    got: list[str] = []

    async def on_dead(msg: nats.aio.msg.Msg) -> None:
        got.append(msg.subject)

    dsub = await nc.subscribe("tmc.dead.>", cb=on_dead)
    await nc.flush()

    async def handler(d: object) -> ControlReply:
        return ControlReply(ok=True)

    sub = await bus.serve("tmc.ctl.sync.*.*", handler, channel=s.CTL_SYNC)
    try:
        rep = await nc.request(s.ctl_sync("bad-1", "pause"), b"\x00\xff not json", timeout=10)
        reply = decode_as(ControlReply, rep.data)
        assert not reply.ok and reply.code == 400 and "malformed_json" in reply.message

        async def dead() -> bool:
            return "tmc.dead.tmc.ctl.sync.bad-1.pause" in got

        await wait_for(dead, what="dead letter")
        assert metrics.events_invalid.labels("sync_control", "malformed_json")._value.get() == 1
    finally:
        await sub.unsubscribe()
        await dsub.unsubscribe()
        await nc.close()
        await bus.close()


DEEP = b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}"


async def test_too_deep_on_core_subscription_and_request(nats_url: str) -> None:
    from tmcd.bus import Bus
    from tmcd.config import NatsConfig
    from tmcd.contracts.codec import decode_as
    from tmcd.contracts.messages import ControlReply
    from tmcd.runtime.selfmetrics import SelfMetrics

    metrics = SelfMetrics()
    bus = Bus(NatsConfig(), metrics, url=nats_url)
    await bus.connect(retry=False)
    nc = await nats_connect(nats_url)
    dead: list[tuple[str, str]] = []
    handled: list[object] = []

    async def on_dead(msg: nats.aio.msg.Msg) -> None:
        if ".deep-1." in msg.subject:  # this test's only: the server is shared
            dead.append((msg.subject, (msg.headers or {}).get("Tmc-Reason", "")))

    async def handler(d: object) -> None:
        handled.append(d)

    async def answer(d: object) -> ControlReply:
        return ControlReply(ok=True)

    dsub = await nc.subscribe("tmc.dead.>", cb=on_dead)
    await nc.flush()
    sub = await bus.subscribe(s.syncer_sync("deep-1"), handler, channel=s.SYNCER_SYNC)
    srv = await bus.serve("tmc.ctl.sync.deep-1.*", answer, channel=s.CTL_SYNC)
    try:
        await nc.publish(s.syncer_sync("deep-1"), DEEP)
        rep = await nc.request(s.ctl_sync("deep-1", "pause"), DEEP, timeout=10)
        reply = decode_as(ControlReply, rep.data)
        assert not reply.ok and reply.code == 400 and reply.message.startswith("too_deep")

        async def both_dead() -> bool:
            return len(dead) == 2

        await wait_for(both_dead, what="two dead letters")
        assert sorted(dead) == [
            ("tmc.dead.tmc.ctl.sync.deep-1.pause", "too_deep"),
            ("tmc.dead.tmc.syncer.deep-1.sync", "too_deep"),
        ]
        assert metrics.events_invalid.labels("sync_event", "too_deep")._value.get() == 1
        assert metrics.events_invalid.labels("sync_control", "too_deep")._value.get() == 1
        assert handled == []
    finally:
        await sub.unsubscribe()
        await srv.unsubscribe()
        await dsub.unsubscribe()
        await nc.close()
        await bus.close()


async def _dead_letters_through_close(
    nats_url: str, cluster: str, count: int, max_dead_letters: int
) -> tuple[list[bytes], float]:
    """``count`` malformed messages handed to the bus's hot path, then close() at once."""
    from nats.aio.msg import Msg

    from tmcd.bus import Bus
    from tmcd.config import NatsConfig
    from tmcd.runtime.selfmetrics import SelfMetrics

    metrics = SelfMetrics()
    bus = Bus(NatsConfig(), metrics, url=nats_url, max_dead_letters=max_dead_letters)
    await bus.connect(retry=False)
    nc = await nats_connect(nats_url)
    got: list[bytes] = []

    async def on_dead(msg: nats.aio.msg.Msg) -> None:
        got.append(msg.data)

    dsub = await nc.subscribe(f"tmc.dead.tmc.syncer.{cluster}.>", cb=on_dead)
    await nc.flush()
    subject = s.syncer_sync(cluster)
    try:
        for i in range(count):  # no await in between: nothing is published before close()
            bus.handle_delivery_sync(Msg(bus.nc, subject=subject, data=b"garbage %d" % i), lambda d: None, "core")
        await bus.close()
        await nc.flush()

        async def arrived() -> bool:
            return len(got) >= min(count, max_dead_letters)

        await wait_for(arrived, what="the dead letters")
        await nc.flush()
    finally:
        await dsub.unsubscribe()
        await nc.close()
    return got, metrics.events_invalid.labels("sync_event", "malformed_json")._value.get()


async def test_dead_letters_queued_just_before_close_are_published(nats_url: str) -> None:
    got, counted = await _dead_letters_through_close(nats_url, "dl-1", 3000, 10000)
    assert counted == 3000
    assert got == [b"garbage %d" % i for i in range(3000)]


async def test_dead_letter_backlog_is_bounded(nats_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tmcd.bus")
    got, counted = await _dead_letters_through_close(nats_url, "dl-2", 150, 100)
    assert counted == 150  # every message is still counted
    assert got == [b"garbage %d" % i for i in range(100)]
    full = [r.getMessage() for r in caplog.records if "dead-letter backlog full" in r.getMessage()]
    assert len(full) == 1 and "100 messages" in full[0]
