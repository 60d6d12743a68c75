"""Scrape cost with a large fleet: 1,000 clusters x 20 resource kinds.

Fills the metrics agent's registry through its real handlers (sync events as the
simulator makes them: down = create/update/delete, up = status; errors on some
clusters; heartbeats; connection events; placements), then renders /metrics with
tmcd's renderer and, as the baseline in the same run, prometheus-client's
generate_latest.

Run: python bench/scrape.py [--clusters N] [--resources N]
Ends with: scrape series=<n> render_s=<x>
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from prometheus_client import generate_latest

from tmcd.contracts.messages import (
    ConnectionEvent,
    PlacementDecision,
    ResourceQuantities,
    SyncerHeartbeat,
    SyncEvent,
)
from tmcd.metrics.exposition import FastExposition
from tmcd.metrics.model import FleetMetrics
from tmcd.runtime.selfmetrics import SelfMetrics

REASONS = ("Conflict", "NotFound", "Timeout", "WebhookDenied", "Forbidden")
OPS = (("create", "down"), ("update", "down"), ("delete", "down"), ("status", "up"))


def fill(fm: FleetMetrics, clusters: int, resources: int, rng: random.Random, t0: float = 0.0) -> None:
    """Every cluster syncs every resource kind with every op; 10 % of clusters have errors.

    Times are ``t0`` plus a few seconds (pass the current time to keep the fleet from
    looking silent to the metrics agent's sweeper).
    """
    kinds = [f"example.io/v1/kind{i:02d}" for i in range(resources)]
    for c in range(clusters):
        name = f"sim-{c + 1:04d}"
        events = [
            SyncEvent(
                cluster=name,
                timestamp=t0 + 1.0,
                resource=kind,
                op=op,  # type: ignore[arg-type]
                direction=direction,  # type: ignore[arg-type]
                latency_seconds=rng.lognormvariate(-3.0, 1.0),
            )
            for kind in kinds
            for op, direction in OPS
        ]
        if c % 10 == 0:
            events += [
                SyncEvent(
                    cluster=name, timestamp=t0 + 1.0, resource=kinds[i % resources], ok=False, error_reason=reason
                )
                for i, reason in enumerate(REASONS)
            ]
        fm.on_sync_events(name, events, t0 + 2.0)
        q = ResourceQuantities(cpu=64, memory=256 << 30, pods=250)
        labels = {"region": f"region-{c % 5}", "zone": f"zone-{c % 15}", "provider": ("aws", "gcp", "azure")[c % 3]}
        hb = SyncerHeartbeat(cluster=name, timestamp=t0 + 1.0, labels=labels, capacity=q, allocatable=q)
        fm.on_heartbeat(hb, t0 + 1.0)
        fm.on_heartbeat(SyncerHeartbeat(cluster=name, timestamp=t0 + 21.0, sequence=1, labels=labels), t0 + 21.0)
        fm.on_connection(ConnectionEvent(cluster=name, timestamp=t0 + 1.0, state="connected"), t0 + 1.0)
    for p in range(50):
        fm.on_placement(PlacementDecision(placement=f"app-{p}", timestamp=1.0, selected=["sim-0001"]))


def timed(fn: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--resources", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    sm = SelfMetrics()
    fm = FleetMetrics(sm.registry, sm.event_lag, max_resources_per_cluster=args.resources)
    t0 = time.perf_counter()
    fill(fm, args.clusters, args.resources, random.Random(1))
    print(f"filled {args.clusters} clusters x {args.resources} resources in {time.perf_counter() - t0:.1f}s")

    fx = FastExposition(sm.registry)
    first = timed(fx.render, 1)[0]
    body = fx.render()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    steady = statistics.median(timed(fx.render, args.repeat))
    om = statistics.median(timed(lambda: fx.render(openmetrics=True), args.repeat))
    stock = statistics.median(timed(lambda: generate_latest(sm.registry), max(1, args.repeat // 2)))
    lines = body.count(b"\n")
    print(f"body_bytes={len(body)} lines={lines}")
    print(f"first_render_s={first:.3f} (builds the label-string cache)")
    print(f"openmetrics_render_s={om:.3f}")
    print(f"baseline prometheus_client_generate_latest_s={stock:.3f} speedup={stock / steady:.1f}x")
    print(f"scrape series={series} render_s={steady:.3f}")


if __name__ == "__main__":
    main()
