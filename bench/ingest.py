"""Ingestion throughput and freshness of the metrics agent, against a naive consumer.

1. Starts a nats-server and preloads TMC_SYNCER with --events sync events made by the
   simulator, in SyncEventBatch messages as syncers flush them (per cluster, every
   100 ms of a fleet doing --rate events/s, or at 500 events).
2. (a) tmcd's metrics agent (a real daemon with --agents metrics, one Python thread)
   consumes the stream; (b) a consumer written the obvious way (stock ``fetch()``,
   ``json.loads``, ``.labels()`` per event, one ack per message) consumes the same
   stream through its own durable. Both must count every event exactly.
3. Freshness: a publisher process sends live batches at --live-rate events/s (default
   75,000: half of the 150,000 events/s throughput target) for --live-seconds while
   /metrics is scraped over HTTP every 15 s (the registry holding --scrape-fleet extra
   clusters x 20 resource kinds, so each scrape is large), and prints the p99 of
   tmc_event_lag_seconds over that window.  Publisher, nats-server, scraper and tmcd
   share the machine, as a sidecar would share its node.

Run: python bench/ingest.py [--events N]
Ends with: ingest tmcd_eps=<n> naive_eps=<n> ratio=<r> lost=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import nats
from prometheus_client import CollectorRegistry, Counter, Histogram

from tmcd.bus import Bus
from tmcd.config import Config, load_config
from tmcd.contracts import subjects
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import SyncEvent, SyncEventBatch
from tmcd.metrics.catalog import EVENT_LAG_BUCKETS
from tmcd.runtime import gctune
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import EmbeddedNats, find_binary
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.sim.model import FleetModel, SimOptions

STREAM = "TMC_SYNCER"


def make_batches(model: FleetModel, events: int, rate: float, t0: float) -> list[tuple[str, bytes, int]]:
    """Simulated events grouped as syncers flush them: (subject, payload, event count)."""
    out: list[tuple[str, bytes, int]] = []
    window = 0.1
    per_window = max(1, int(rate * window))
    made = 0
    now = t0
    while made < events:
        chunk = model.sync_events(min(per_window, events - made), now)
        by_cluster: dict[str, list[SyncEvent]] = defaultdict(list)
        for ev in chunk:
            by_cluster[ev.cluster].append(ev)
        for cluster, evs in by_cluster.items():
            for i in range(0, len(evs), 500):
                part = evs[i : i + 500]
                batch = SyncEventBatch(cluster=cluster, timestamp=now, events=part)
                out.append((subjects.syncer_batch(cluster), encode(batch), len(part)))
        made += len(chunk)
        now += window
    return out


async def preload(url: str, batches: list[tuple[str, bytes, int]]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    inflight: list[asyncio.Future[Any]] = []
    for subject, payload, _ in batches:
        inflight.append(asyncio.ensure_future(js.publish(subject, payload, timeout=30)))
        if len(inflight) >= 256:
            await asyncio.gather(*inflight)
            inflight.clear()
    await asyncio.gather(*inflight)
    await nc.close()


def synced_total(registry: CollectorRegistry) -> float:
    for metric in registry.collect():
        if metric.name == "tmc_syncer_resources_synced":
            return sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return 0.0


async def run_tmcd(cfg: Config, expected: int) -> tuple[float, int, Daemon]:
    daemon = Daemon(cfg)
    await daemon.start()
    processed = daemon.metrics.events_processed.labels(STREAM)
    t0 = time.perf_counter()
    deadline = t0 + 600
    while processed._value.get() < expected and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    return expected / elapsed, int(synced_total(daemon.metrics.registry)), daemon


async def run_naive(url: str, expected: int) -> tuple[float, int]:
    """The obvious consumer: stock fetch, json.loads, .labels() per event, ack per message."""
    reg = CollectorRegistry()
    synced = Counter("naive_synced", "x", ["cluster", "resource", "operation", "direction"], registry=reg)
    errors = Counter("naive_errors", "x", ["cluster", "resource", "reason"], registry=reg)
    duration = Histogram("naive_duration", "x", ["cluster", "direction"], registry=reg)
    lag = Histogram("naive_lag", "x", registry=reg, buckets=EVENT_LAG_BUCKETS)
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe("tmc.syncer.>", durable="naive", stream=STREAM)
    counted = 0
    t0 = time.perf_counter()
    deadline = t0 + 900
    while counted < expected and time.perf_counter() < deadline:
        try:
            msgs = await sub.fetch(100, timeout=1)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            batch = json.loads(msg.data)
            now = time.time()
            for ev in batch["events"]:
                synced.labels(ev["cluster"], ev["resource"], ev["op"], ev["direction"]).inc()
                duration.labels(ev["cluster"], ev["direction"]).observe(ev["latency_seconds"])
                if not ev["ok"]:
                    errors.labels(ev["cluster"], ev["resource"], ev["error_reason"]).inc()
                lag.observe(now - ev["timestamp"])
                counted += 1
            await msg.ack()
    elapsed = time.perf_counter() - t0
    await nc.close()
    return counted / elapsed, counted


def live_publisher(url: str, clusters: int, rate: float, seconds: float, seed: int, done: Any) -> None:
    """Child process: publish live batches at ``rate`` events/s, timestamps spread over each 100 ms."""
    asyncio.run(_live(url, clusters, rate, seconds, seed, done))


async def _live(url: str, clusters: int, rate: float, seconds: float, seed: int, done: Any) -> None:
    # Payloads are pre-encoded per cluster with marker timestamps; each flush replaces the
    # markers with real times spread over the last 100 ms (as events wait in a syncer's
    # buffer), so the publisher itself stays cheap and does not starve tmcd of CPU.
    rng = random.Random(seed)
    model = FleetModel(SimOptions(clusters=clusters, rate=rate, seed=seed))
    model.start(0.0)
    window = 0.1
    per_tick = max(1, int(rate * window))
    slots = 10
    markers = [repr(1234567.0 + (i + 1) / 1024).encode() for i in range(slots)]
    flush_marker = b"7654321.5"
    by_cluster: dict[str, list[SyncEvent]] = defaultdict(list)
    for ev in model.sync_events(per_tick * 4, 1.0):
        by_cluster[ev.cluster].append(ev)
    payloads: list[tuple[str, bytes, int]] = []
    for name, evs in by_cluster.items():
        for k in range(4):
            part = evs[k::4]
            if not part:
                continue
            body = encode(
                SyncEventBatch(
                    cluster=name,
                    timestamp=7654321.5,
                    events=[
                        SyncEvent(**{**_fields(ev), "timestamp": float(markers[i % slots])})
                        for i, ev in enumerate(part)
                    ],
                )
            )
            payloads.append((subjects.syncer_batch(name), body, len(part)))
    nc = await nats.connect(url)
    start = time.time()
    tick = 0
    sent = 0
    while time.time() - start < seconds:
        tick += 1
        target = start + tick * window
        flush = time.time()
        budget = per_tick
        i = rng.randrange(len(payloads))
        while budget > 0:
            subject, body, n = payloads[i % len(payloads)]
            i += 1
            for k, m in enumerate(markers):
                body = body.replace(m, repr(flush - window * (slots - k) / slots).encode())
            await nc.publish(subject, body.replace(flush_marker, repr(flush).encode()))
            budget -= n
            sent += n
        delay = target - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
    await nc.flush()
    await nc.close()
    done.value = sent


def scrape_every(url: str, seconds: float, every: float, durations: Any) -> None:
    """Child process: GET ``url`` (gzip) every ``every`` seconds for ``seconds``; record durations."""
    import urllib.request

    start = time.time()
    i = 0
    while time.time() - start < seconds and i < len(durations):
        t0 = time.perf_counter()
        req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
        durations[i] = time.perf_counter() - t0
        i += 1
        time.sleep(max(0.0, start + i * every - time.time()))


def _fields(ev: SyncEvent) -> dict[str, Any]:
    return {f: getattr(ev, f) for f in ev.__struct_fields__}


def lag_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """histogram_quantile over cumulative (upper bound, count) pairs."""
    total = buckets[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_bound, prev_count = bound, count
    return prev_bound


def lag_buckets(daemon: Daemon) -> list[tuple[float, float]]:
    h = daemon.metrics.event_lag
    acc = 0.0
    out = []
    for bound, b in zip(h._upper_bounds, h._buckets, strict=True):
        acc += b.get()
        out.append((bound, acc))
    return out


def aggregation(daemon: Daemon) -> str:
    """Which per-event path the metrics agent ran: "c" (tmcd.metrics._fastagg) or "python"."""
    agent = next(a for a in daemon.supervisor._agents if a.name == "metrics")  # type: ignore[union-attr]
    return str(agent.fleet.aggregation)  # type: ignore[attr-defined]


def inflate(daemon: Daemon, clusters: int) -> None:
    """Give the registry a large fleet (clusters x 20 resource kinds) so scrapes are heavy."""
    from bench.scrape import fill

    agent = next(a for a in daemon.supervisor._agents if a.name == "metrics")  # type: ignore[union-attr]
    # times near now: with the simulator's small ones the agent's sweeper would find the
    # whole inflated fleet silent for a day and forget it in the middle of the run
    fill(agent.fleet, clusters, 20, random.Random(2), t0=time.time() - 25.0)  # type: ignore[attr-defined]


async def freshness(daemon: Daemon, url: str, args: argparse.Namespace, rate: float) -> tuple[float, float, int]:
    before = lag_buckets(daemon)
    done = multiprocessing.get_context("spawn").Value("q", 0)
    proc = multiprocessing.get_context("spawn").Process(
        target=live_publisher, args=(url, args.clusters, rate, args.live_seconds, args.seed + 1, done)
    )
    # Prometheus scrapes from another process, as it would: a scraper in this process
    # would charge the response's decompression to tmcd's event loop.
    scrapes = multiprocessing.get_context("spawn").Array("d", 8)
    scraper = multiprocessing.get_context("spawn").Process(
        target=scrape_every, args=(f"{daemon.http.base_url}/metrics", args.live_seconds, 15.0, scrapes)
    )
    proc.start()
    scraper.start()
    await asyncio.to_thread(proc.join)
    await asyncio.to_thread(scraper.join)
    processed = daemon.metrics.events_processed.labels(STREAM)
    target = processed._value.get()
    for _ in range(200):  # let the last batches land
        await asyncio.sleep(0.05)
        if processed._value.get() == target:
            break
        target = processed._value.get()
    after = lag_buckets(daemon)
    window = [(b, a - c) for (b, a), (_, c) in zip(after, before, strict=True)]
    if args.lag_buckets:
        print("lag buckets over the window (le, cumulative count):", window)
    return lag_quantile(window, 0.99), max(scrapes[:]), int(done.value)


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tmcd-ingest-"))
    server = EmbeddedNats(find_binary(), tmp / "nats")
    url = server.start()
    try:
        cfg = load_config(
            None,
            env={},
            overrides={
                "nats.url": url,
                "http.listen": "127.0.0.1:0",
                "data_dir": str(tmp),
                "agents": "metrics",
                "streams.syncer.max_bytes": 8 << 30,
                "consumer.batch": 1000,
            },
        )
        bus = Bus(cfg.nats, SelfMetrics(), url=url)
        await bus.connect(retry=False)
        await bus.provision(cfg)
        await bus.close()

        t0 = time.perf_counter()
        model = FleetModel(SimOptions(clusters=args.clusters, rate=args.rate, seed=args.seed))
        model.start(0.0)
        batches = make_batches(model, args.events, args.rate, 1.0)
        events = sum(n for _, _, n in batches)
        await preload(url, batches)
        print(
            f"preloaded events={events} messages={len(batches)} avg_batch={events / len(batches):.0f} "
            f"clusters={args.clusters} in {time.perf_counter() - t0:.1f}s"
        )
        del batches
        # let the server's writes reach the disk first, so neither consumer competes with
        # the preload's writeback
        await asyncio.to_thread(os.sync)

        tmcd_eps, tmcd_counted, daemon = await run_tmcd(cfg, events)
        agg = aggregation(daemon)
        print(f"tmcd metrics agent: {tmcd_eps:,.0f} events/s, counted {tmcd_counted} (aggregation: {agg})")
        try:
            naive_eps, naive_counted = await run_naive(url, events)
            print(f"naive consumer: {naive_eps:,.0f} events/s, counted {naive_counted}")
            lost = abs(events - tmcd_counted) + abs(events - naive_counted)
            if not args.skip_live:
                inflate(daemon, args.scrape_fleet)
                # the inflated fleet stands for one that existed when the daemon froze its heap
                # at start-up (tmcd run freezes once, after the agents started)
                gctune.freeze_long_lived()
                live_rate = args.live_rate
                p99, worst_scrape, sent = await freshness(daemon, url, args, live_rate)
                print(
                    f"freshness rate={live_rate:,.0f}/s sent={sent} seconds={args.live_seconds} "
                    f"scrape_every=15s max_scrape_s={worst_scrape:.2f} lag_p99_s={p99:.3f} target_s=0.250"
                )
        finally:
            await daemon.stop()
        print(f"ingest tmcd_eps={tmcd_eps:.0f} naive_eps={naive_eps:.0f} ratio={tmcd_eps / naive_eps:.1f} lost={lost}")
    finally:
        server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--rate", type=float, default=200_000.0, help="notional fleet rate that sets the batch sizes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--live-seconds", type=float, default=35.0)
    ap.add_argument(
        "--live-rate", type=float, default=75_000.0, help="freshness phase rate: half the 150k events/s target"
    )
    ap.add_argument("--scrape-fleet", type=int, default=1000)
    ap.add_argument("--skip-live", action="store_true")
    ap.add_argument("--lag-buckets", action="store_true", help="also print the freshness window's lag buckets")
    asyncio.run(main(ap.parse_args()))
