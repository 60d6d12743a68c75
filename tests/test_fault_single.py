"""One tmcd on one nats-server with a file store: the server restarts under load and nothing is
lost or counted twice (published by the simulator = stored in the stream = counted by tmcd); a
burst of 10x the rate tmcd sustains waits in JetStream, not in tmcd's memory."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from pathlib import Path

import pytest
import yaml

from tests.faultstack import (
    CLUSTERS,
    Replica,
    Stack,
    drained,
    last_seq,
    stop_sim,
    stream_info,
    sync_events_by_seq,
    total,
)
from tests.helpers import nats_connect, wait_for
from tests.rawpub import pub_file
from tmcd.contracts import subjects
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import SyncEvent, SyncEventBatch
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.sim.model import FleetModel, SimOptions

pytestmark = [pytest.mark.slow]

HERE = Path(__file__).resolve().parent

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
    """A burst of at least 10x the rate tmcd sustains, ~2 M events: JetStream holds the backlog,
    ``tmc_consumer_pending_messages`` shows it, ``/healthz``'s consumer-lag check fails and
    recovers, tmcd's memory stays bounded (it pulls at most 256 messages at a time: no
    in-process queue grows with the backlog), and everything is counted once it drained.

    tmcd runs with the CPU the Deployment manifest requests (250m: ``tests/cpulimit.py`` lets it
    run a quarter of every 20 ms), as on a node where it gets no more than its request; its
    sustainable rate is measured under the same limit in the same run (the drain after the
    burst).  The burst comes from two processes of their own (``tests/rawpub.py``), as syncers
    publish from their own machines, with JetStream publishes and at most 128 unacknowledged
    each: core-NATS publishes that fast are dropped by nats-server once the stream's ingest queue
    is full.  TMC_SYNCER is kept in memory (see below).  Without the limit, on two cores that the
    publishers, nats-server and tmcd share, a burst reaches 3-6x tmcd's full rate."""
    url = nats_server.url
    # TMC_SYNCER in memory: on this VM the file store's ingest rate swings 2-3x with the disk's
    # writeback of earlier tests, which is not what the ratio is about (the restart test above
    # covers the file store)
    env = {"TMCD_STREAMS_SYNCER_STORAGE": "memory"}
    stack = Stack(tmp_path, url, {"TMCD_HEALTH_MAX_CONSUMER_PENDING": "1000", "TMCD_HEALTH_CHECK_CACHE": "0", **env})
    rss: list[int] = []
    procs: list[asyncio.subprocess.Process] = []
    try:
        tmcd = await stack.replica("tmcd-a", "--agents", "metrics,health")
        payloads = _burst(ROUND, 250)  # 198 messages of 250 events, published over and over
        nc = await nats_connect(url)
        try:  # warm up: a first round, so the idle RSS includes the series the burst creates
            for subject, data in payloads:
                await nc.publish(subject, data)
            await nc.flush()
        finally:
            await nc.close()
        await wait_for(lambda: _counted(tmcd, ROUND), timeout=60, step=0.2, what="the warm-up counted")
        idle = tmcd.rss_kb()
        rounds = 40  # 1,980,000 events: half a second or more, so a hiccup of the machine does not decide
        commands = tmp_path / "burst.pub"
        commands.write_bytes(pub_file(payloads))
        host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
        publishers = [
            await _helper(procs, "rawpub.py", host, port, str(commands), str(rounds // PUBLISHERS))
            for _ in range(PUBLISHERS)
        ]
        want = await last_seq([url], "TMC_SYNCER") + rounds * len(payloads)
        await _helper(procs, "cpulimit.py", str(tmcd.pid), str(CPU_SHARE))  # from here on
        sampler = asyncio.create_task(_sample(tmcd, rss))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for publisher in publishers:
            assert publisher.stdin is not None
            publisher.stdin.write(b"go\n")
            await publisher.stdin.drain()
        resent = 0
        for publisher in publishers:  # each prints its time until the last ack, then what it sent again
            assert publisher.stdout is not None
            await asyncio.wait_for(publisher.stdout.readline(), 60)
            resent += int(await publisher.stdout.readline())
        published_in = loop.time() - t0  # JetStream stored and acknowledged every message
        info = await stream_info([url], "TMC_SYNCER")
        assert (info.state.last_seq, str(info.config.storage)) == (want, "memory")
        at_end = total(await tmcd.metrics(), SYNCED)
        published_at = t0 + published_in

        async def lagging() -> str | None:
            code, body = await tmcd.get("/healthz?verbose")
            return str(body) if code == 503 and "consumer-lag" in str(body) else None

        lag = await wait_for(lagging, timeout=30, step=0.1, what="/healthz reporting the lag")
        assert "TMC_SYNCER has" in lag and "pending messages (max 1000)" in lag, lag
        peak_pending = total(await tmcd.metrics(), "tmc_consumer_pending_messages", stream="TMC_SYNCER")
        assert peak_pending > 1000
        await wait_for(lambda: _counted(tmcd, ROUND * (rounds + 1)), timeout=80, step=0.1, what="the burst counted")
        drained_in = loop.time() - published_at
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
        drain_rate = (ROUND * (rounds + 1) - at_end) / drained_in
        ratio = burst_rate / drain_rate
        print(f"burst: {burst_rate:.0f} events/s for {published_in:.2f}s, drained at {drain_rate:.0f}/s "
              f"with {CPU_SHARE:g} CPU ({ratio:.1f}x); idle RSS {idle / 1024:.0f} MB, peak +{grew_mb:.0f} MB, "
              f"peak pending {peak_pending:.0f}, {resent} sent again")  # fmt: skip
        assert grew_mb < 150, f"RSS grew {grew_mb:.0f} MB over idle during the burst"
        assert ratio >= 10, f"the burst was not 10x the rate tmcd sustains ({ratio:.1f}x)"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.tails()}") from None
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()
        await stack.close()


async def _helper(procs: list[asyncio.subprocess.Process], script: str, *args: str) -> asyncio.subprocess.Process:
    """Start ``tests/<script>`` and wait for its ``ready`` line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / script), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    procs.append(proc)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    return proc


def _cpu_request() -> float:
    """The CPU the Deployment manifest requests for tmcd, in cores."""
    docs = yaml.safe_load_all((HERE.parent / "config" / "kubernetes" / "tmcd-deployment.yaml").read_text())
    (deploy,) = [d for d in docs if d and d.get("kind") == "Deployment"]
    (c,) = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "tmcd"]
    cpu = str(c["resources"]["requests"]["cpu"])
    return int(cpu.removesuffix("m")) / 1000 if cpu.endswith("m") else float(cpu)


CPU_SHARE = _cpu_request()
PUBLISHERS = 2


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
