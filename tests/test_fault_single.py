"""One tmcd on one nats-server with a file store: the server restarts under load and nothing is
lost or counted twice (published by the simulator = stored in the stream = counted by tmcd); a
burst far faster than tmcd can process waits in JetStream, not in tmcd's memory."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import pytest

from tests.faultstack import CLUSTERS, Replica, Stack, drained, last_seq, stop_sim, sync_events_by_seq, total
from tests.helpers import nats_connect, wait_for
from tmcd.contracts import subjects
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import SyncEvent, SyncEventBatch
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.sim.model import FleetModel, SimOptions

pytestmark = [pytest.mark.slow]

DURABLE = "tmcd-metrics-syncer"
SYNCED = "tmc_syncer_resources_synced_total"
ROUNDS = 10  # of the backlog before the restart: ~1.5 s of tmcd's work
ROUND = 49_500  # events in one round of the burst's payloads (a multiple of 250 x 6 clusters)


async def test_restarting_the_only_nats_server_loses_nothing(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """The server stops (SIGTERM) while tmcd works through a backlog, and starts again on the same
    port and store: tmcd reconnects and resumes from its durable consumer.  Exact: the events
    the simulators published and the backlog = what the stream holds = what tmcd counted.  (The
    simulators run before and after the restart, not across it: they publish with core NATS, as
    syncers do, and what a client writes into its socket as the server goes down is lost before
    JetStream sees it.)"""
    url = nats_server.url
    stack = Stack(tmp_path, url)
    try:
        tmcd = await stack.replica("tmcd-a", "--agents", "metrics,health")
        sim_args = ("--clusters", str(CLUSTERS), "--rate", "300", "--heartbeat-interval", "1", "--duration", "2")
        sim = await stack.sim(*sim_args, "--seed", "1")
        published = (await stop_sim(*sim, 30, interrupt=False))["sync"]
        payloads = _burst(ROUND, 250)
        want = await last_seq([url], "TMC_SYNCER") + ROUNDS * len(payloads)
        nc = await nats_connect(url)
        try:
            for _ in range(ROUNDS):
                for subject, data in payloads:
                    await nc.publish(subject, data)
                await nc.flush()
            published += ROUNDS * ROUND

            async def stored() -> bool:
                return await last_seq([url], "TMC_SYNCER") >= want

            await wait_for(stored, what="the backlog stored")
        finally:
            await nc.close()
        processed = total(await tmcd.metrics(), SYNCED)
        assert processed < published  # the server goes down with a backlog left
        await asyncio.to_thread(nats_server.stop)  # the store stays on disk
        nats_server.port = int(url.rsplit(":", 1)[1])
        await asyncio.to_thread(nats_server.start)

        async def connected_again() -> bool:
            return total(await tmcd.metrics(), "tmc_nats_connected") == 1

        await wait_for(connected_again, timeout=30, step=0.1, what="tmcd reconnected")
        sim = await stack.sim(*sim_args, "--seed", "2")
        published += (await stop_sim(*sim, 30, interrupt=False))["sync"]
        await drained([url], "TMC_SYNCER", DURABLE, timeout=120)
        stored = sum((await sync_events_by_seq([url])).values())
        processed = total(await tmcd.metrics(), SYNCED)
        assert (published, stored) == (processed, processed), (published, stored, processed)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.tails()}") from None
    finally:
        await stack.close()


def _burst(events: int, per_message: int) -> list[tuple[str, bytes]]:
    """SyncEventBatch payloads (one cluster each, about ``per_message`` events) holding ``events``
    events in all (published over and over)."""
    model = FleetModel(SimOptions(clusters=CLUSTERS, seed=5))
    model.start(1000.0)
    out = []
    for i in range(events // (per_message * CLUSTERS)):
        by_cluster: dict[str, list[SyncEvent]] = {}
        for ev in model.sync_events(per_message * CLUSTERS, 1000.0 + i):
            by_cluster.setdefault(ev.cluster, []).append(ev)
        for cluster, evs in by_cluster.items():
            batch = SyncEventBatch(cluster=cluster, timestamp=1000.0 + i, events=evs)
            out.append((subjects.syncer_batch(cluster), encode(batch)))
    return out


async def test_a_burst_waits_in_jetstream_and_drains(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """The burst is published as fast as one client can: 3-5x the rate tmcd drains it at on the
    2-core machine this was written on (the publisher is bound by bytes, ~170 MB/s of JSON; tmcd
    by events, ~200k/s; 10x is out of reach of one Python publisher there), ~1 M events in all.
    The backlog shows in ``tmc_consumer_pending_messages`` and fails ``/healthz``'s consumer-lag check;
    tmcd's memory stays bounded (it pulls 256 messages at a time: no in-process queue grows with
    the backlog), and everything is counted once the backlog drained."""
    url = nats_server.url
    stack = Stack(tmp_path, url, {"TMCD_HEALTH_MAX_CONSUMER_PENDING": "1000", "TMCD_HEALTH_CHECK_CACHE": "0"})
    rss: list[int] = []
    try:
        tmcd = await stack.replica("tmcd-a", "--agents", "metrics,health")
        await asyncio.sleep(0)
        payloads = _burst(ROUND, 250)  # 200 messages of 250 events, published over and over
        nc = await nats_connect(url)
        try:  # warm up: a first round, so the idle RSS includes the series the burst creates
            for subject, data in payloads:
                await nc.publish(subject, data)
            await nc.flush()
            await wait_for(lambda: _counted(tmcd, ROUND), timeout=60, step=0.2, what="the warm-up counted")
            idle = tmcd.rss_kb()
            sampler = asyncio.create_task(_sample(tmcd, rss))
            rounds = 20  # 1,000,000 events
            t0 = asyncio.get_running_loop().time()
            for _ in range(rounds):
                for i, (subject, data) in enumerate(payloads):
                    await nc.publish(subject, data)
                    if i % 200 == 0:
                        await nc.flush()
            await nc.flush()
            published_in = asyncio.get_running_loop().time() - t0
            at_end = total(await tmcd.metrics(), SYNCED)
        finally:
            await nc.close()

        async def lagging() -> str | None:
            code, body = await tmcd.get("/healthz?verbose")
            return str(body) if code == 503 and "consumer-lag" in str(body) else None

        lag = await wait_for(lagging, timeout=30, step=0.1, what="/healthz reporting the lag")
        assert "TMC_SYNCER has" in lag and "pending messages (max 1000)" in lag, lag
        peak_pending = total(await tmcd.metrics(), "tmc_consumer_pending_messages", stream="TMC_SYNCER")
        assert peak_pending > 1000
        await wait_for(lambda: _counted(tmcd, ROUND * (rounds + 1)), timeout=120, step=0.2, what="the burst counted")
        drained_in = asyncio.get_running_loop().time() - t0
        await drained([url], "TMC_SYNCER", DURABLE)

        async def healthy() -> bool:
            code, _ = await tmcd.get("/healthz")
            return code == 200

        await wait_for(healthy, timeout=30, step=0.1, what="/healthz recovered")
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        assert total(await tmcd.metrics(), "tmc_consumer_pending_messages", stream="TMC_SYNCER") == 0
        grew_mb = (max(rss) - idle) / 1024
        burst_rate = ROUND * rounds / published_in
        drain_rate = (ROUND * (rounds + 1) - at_end) / (drained_in - published_in)
        ratio = burst_rate / drain_rate
        print(f"burst: {burst_rate:.0f} events/s for {published_in:.2f}s, drained at {drain_rate:.0f}/s; "
              f"idle RSS {idle / 1024:.0f} MB, peak +{grew_mb:.0f} MB, peak pending {peak_pending:.0f}")  # fmt: skip
        assert grew_mb < 150, f"RSS grew {grew_mb:.0f} MB over idle during the burst"
        assert ratio > 3, f"the burst was not much faster than tmcd drains ({ratio:.1f}x)"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.tails()}") from None
    finally:
        await stack.close()


async def _counted(r: Replica, n: int) -> bool:
    return total(await r.metrics(), SYNCED) >= n


async def _sample(r: Replica, out: list[int]) -> None:
    while True:
        out.append(r.rss_kb())
        await asyncio.sleep(0.05 + random.random() * 0.01)


async def test_a_backlog_of_large_messages_does_not_cut_tmcd_off(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """A backlog of 1,000-event batches (~160 KB each): a pull of 256 of them would be ~40 MB in
    flight to tmcd at once; pull requests are bounded in bytes (``PULL_MAX_BYTES``), tmcd stays
    connected and counts every event."""
    stack = Stack(tmp_path, nats_server.url)
    try:
        tmcd = await stack.replica("tmcd-a", "--agents", "metrics")
        big = _burst(48_000, 1000)  # 48 messages of 1,000 events
        nc = await nats_connect(nats_server.url)
        try:
            for _ in range(21):  # 1,008 messages, ~160 MB, published faster than tmcd takes them
                for subject, data in big:
                    await nc.publish(subject, data)
                await nc.flush()
        finally:
            await nc.close()
        await wait_for(lambda: _counted(tmcd, 21 * 48_000), timeout=120, step=0.2, what="the backlog counted")
        text = await tmcd.metrics()
        assert total(text, "tmc_nats_connected") == 1
        assert "disconnected from NATS" not in stack.tails(), stack.tails()
    finally:
        await stack.close()
