"""OTLP metrics push with a large fleet: how long the event loop stalls during one push.

Fills a registry as bench/scrape.py does (1,000 clusters x 20 resource kinds, ~136k
exposition lines), then runs one ``MetricsPusher.push()`` on an asyncio loop while a
ticker task (wakes every 1 ms) records the longest gap between its wake-ups beyond the
1 ms it asked for: the loop stall that ingestion would see.  The exporter encodes the
data as OTLP protobuf (what the OTLP exporters do before sending) and sends nothing.

Run: python bench/otlp_bridge.py [--clusters N] [--resources N] [--repeat N] [--sync]
(``--sync`` produces on the loop in one go, as before the bridge was sliced).
Ends with: otlp_bridge series=<n> points=<n> produce_s=<x> push_s=<x> max_stall_s=<x>
(max_stall_s: the longest stall while reading the registry; the export's is printed above it)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from bench.scrape import fill
from tmcd.metrics.exposition import FastExposition
from tmcd.metrics.model import FleetMetrics
from tmcd.runtime import gctune
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.telemetry import MetricsPusher, PrometheusBridge

TICK = 0.001


class EncodingExporter(MetricExporter):
    """Encodes to OTLP protobuf bytes like the OTLP exporters, sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.points = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.bytes = len(encode_metrics(metrics_data).SerializeToString())
        self.points = sum(
            len(m.data.data_points)
            for rm in metrics_data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        )
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


async def one_push(pusher: MetricsPusher, sync: bool) -> tuple[float, float, float, float]:
    """(produce seconds, whole push seconds, longest loop stall while producing, and while exporting)."""
    done = False
    stall = 0.0

    async def ticker() -> None:
        nonlocal stall
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(TICK)
            stall = max(stall, time.perf_counter() - t - TICK)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(TICK * 5)
    stall = 0.0
    t0 = time.perf_counter()
    if sync:  # the old way: the whole registry in one go on the loop, then export in a thread
        data = pusher.bridge.produce()
    else:
        data = await pusher.bridge.produce_async()
    produced = time.perf_counter() - t0
    await asyncio.sleep(TICK * 5)  # let the ticker see the end of producing
    produce_stall, stall = stall, 0.0
    t1 = time.perf_counter()
    await asyncio.to_thread(pusher._export, data)
    total = produced + time.perf_counter() - t1
    done = True
    await task
    return produced, total, produce_stall, stall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--resources", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sync", action="store_true", help="produce in one go on the loop (the old way)")
    args = ap.parse_args()

    sm = SelfMetrics()
    fm = FleetMetrics(sm.registry, sm.event_lag, max_resources_per_cluster=args.resources)
    fill(fm, args.clusters, args.resources, random.Random(1))
    gctune.tune()  # as the daemon does: a long-lived heap kept out of full collections
    gctune.freeze_long_lived()
    body = FastExposition(sm.registry).render()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    exporter = EncodingExporter()
    pusher = MetricsPusher(PrometheusBridge(sm.registry), exporter, interval=60.0)
    runs = [asyncio.run(one_push(pusher, args.sync)) for _ in range(args.repeat)]
    produce = statistics.median(r[0] for r in runs)
    push = statistics.median(r[1] for r in runs)
    stall = max(r[2] for r in runs)
    export_stall = max(r[3] for r in runs)
    print(f"otlp_bytes={exporter.bytes} produce_stalls_s={','.join(f'{r[2]:.3f}' for r in runs)}")
    print(f"export_max_stall_s={export_stall:.3f} (encoding in the worker thread)")
    print(
        f"otlp_bridge series={series} points={exporter.points} produce_s={produce:.3f} "
        f"push_s={push:.3f} max_stall_s={stall:.3f}{' mode=sync' if args.sync else ''}"
    )


if __name__ == "__main__":
    main()
