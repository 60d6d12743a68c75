"""Health evaluation cost with a large fleet: 10,000 clusters heartbeating every 20 s.

Builds the registry through the model's real functions (a heartbeat per cluster, sync counts
with ~0.5 % failures), then runs sweeps every ``interval`` seconds of simulated time: between
sweeps (untimed) the clusters whose heartbeat is due heartbeat and every cluster reports a sync
batch; the sweep itself (timed) calls ``evaluate`` on every cluster.  Reports the steady state
(nothing changes) and the sweep where 5 % of the clusters (disconnected 30 s earlier) turn
Unhealthy, plus the registry's memory: RSS growth while building it and tracemalloc's count.

Run: python bench/health_sweep.py [--clusters N] [--sweeps N]
Ends with: health clusters=<n> sweep_ms=<x> rss_mb=<y>
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
import tracemalloc

from tmcd.config import HealthConfig
from tmcd.contracts.messages import ConnectionEvent, ResourceQuantities, SyncerHeartbeat
from tmcd.health import model

T0 = 1_795_687_200.0
PERIOD = 20.0
CAPACITY = ResourceQuantities(cpu=64, memory=256 << 30, pods=250)
RESOURCES = ["apps/v1/deployments", "v1/services", "v1/configmaps", "v1/secrets", "networking.k8s.io/v1/ingresses"]


def rss_bytes() -> int:
    """Resident set size now (/proc/self/statm; ru_maxrss where there is no /proc)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Fleet:
    """N clusters, their heartbeat phases and a simulated clock."""

    def __init__(self, n: int, cfg: HealthConfig, rng: random.Random) -> None:
        self.cfg, self.rng = cfg, rng
        self.names = [f"sim-{c + 1:05d}" for c in range(n)]
        self.phase = [PERIOD * c / n for c in range(n)]  # heartbeat times are T0 + phase + k * PERIOD
        self.labels = [{"region": f"region-{c % 5}", "zone": f"zone-{c % 15}"} for c in range(n)]
        self.seq = [0] * n
        self.clusters: dict[str, model.ClusterHealth] = {}
        self.t = T0

    def heartbeat(self, c: int, at: float, connected: bool = True) -> None:
        self.seq[c] += 1
        hb = SyncerHeartbeat(
            cluster=self.names[c],
            timestamp=at,
            sequence=self.seq[c],
            labels=self.labels[c],
            capacity=CAPACITY,
            allocatable=CAPACITY,
            used=ResourceQuantities(cpu=self.rng.randint(1, 60), memory=64 << 30, pods=self.rng.randint(1, 200)),
            queue_depth=self.rng.randint(0, 50),
            synced_resources=RESOURCES,
            connected=connected,
            syncer_version="v0.11.0",
        )
        model.observe_heartbeat(self.clusters[self.names[c]], hb, at)

    def build(self) -> None:
        """Every cluster: first seen, one heartbeat and a sync batch in the 20 s before T0."""
        for c, name in enumerate(self.names):
            at = T0 - PERIOD + self.phase[c]
            self.clusters[name] = model.new_cluster(name, at)
            self.heartbeat(c, at)
            model.observe_sync(self.clusters[name], 100, 1, at, self.cfg.error_window, self.cfg.interval)

    def feed(self, t0: float, t1: float, disconnected: set[int]) -> None:
        """Heartbeats due in (t0, t1] and one sync batch per cluster (untimed)."""
        cfg, rng = self.cfg, self.rng
        for c, name in enumerate(self.names):
            k = (t1 - T0 - self.phase[c]) // PERIOD
            at = T0 + self.phase[c] + k * PERIOD
            if at > t0:
                self.heartbeat(c, at, c not in disconnected)
            model.observe_sync(self.clusters[name], 50, int(rng.random() < 0.5), t1, cfg.error_window, cfg.interval)

    def sweep(self, started_at: float) -> tuple[float, int]:
        """Evaluate every cluster at the current time: (seconds taken, transitions)."""
        cfg, now, evaluate = self.cfg, self.t, model.evaluate
        t = time.perf_counter()
        changed = 0
        for st in self.clusters.values():
            if evaluate(st, now, cfg, started_at) is not None:
                changed += 1
        return time.perf_counter() - t, changed

    def step(self, started_at: float, disconnected: set[int]) -> tuple[float, int]:
        self.feed(self.t, self.t + self.cfg.interval, disconnected)
        self.t += self.cfg.interval
        return self.sweep(started_at)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--clusters", type=int, default=10_000)
    ap.add_argument("--sweeps", type=int, default=200)
    args = ap.parse_args()
    n = args.clusters
    cfg = HealthConfig()
    started_at = T0 - 3600.0

    gc.collect()
    rss0 = rss_bytes()
    t = time.perf_counter()
    fleet = Fleet(n, cfg, random.Random(1))
    fleet.build()
    gc.collect()
    rss_mb = (rss_bytes() - rss0) / 2**20
    print(f"built {n} clusters in {time.perf_counter() - t:.2f}s; registry RSS growth {rss_mb:.1f} MB")

    first, changed = fleet.sweep(started_at)
    print(f"first sweep (Unknown -> Healthy): {first * 1e3:.1f} ms, {changed} transitions")
    assert changed == n, changed

    steady: list[float] = []
    for _ in range(args.sweeps):
        took, changed = fleet.step(started_at, set())
        assert changed == 0, changed
        steady.append(took)
    med, p99 = statistics.median(steady) * 1e3, pct(steady, 99) * 1e3
    print(f"steady sweeps: {len(steady)}  median {med:.2f} ms  p99 {p99:.2f} ms  max {max(steady) * 1e3:.2f} ms")
    print(f"per cluster: {med * 1e3 / n:.2f} us")

    # 5 % of the clusters disconnect; they turn Unhealthy failure_threshold later
    bad = set(fleet.rng.sample(range(n), n // 20))
    for c in bad:
        model.observe_connection(
            fleet.clusters[fleet.names[c]],
            ConnectionEvent(cluster=fleet.names[c], timestamp=fleet.t, state="disconnected", reason="bench"),
            fleet.t,
        )
    change_ms, changed_total, sweeps = 0.0, 0, 0
    while changed_total < len(bad) and sweeps < 20:
        took, changed = fleet.step(started_at, bad)
        sweeps += 1
        changed_total += changed
        if changed:
            change_ms = took * 1e3
            print(f"change sweep: {changed} transitions ({changed / n:.1%}) in {change_ms:.2f} ms")
    assert changed_total == len(bad), changed_total

    t = time.perf_counter()
    calls = 0
    st = fleet.clusters[fleet.names[0]]
    for i in range(200_000):
        model.observe_sync(st, 50, 0, fleet.t + i * 0.001, cfg.error_window, cfg.interval)
        calls += 1
    print(f"observe_sync: {(time.perf_counter() - t) / calls * 1e6:.2f} us per call")

    del fleet
    gc.collect()
    tracemalloc.start()
    again = Fleet(n, cfg, random.Random(1))
    before = tracemalloc.get_traced_memory()[0]
    again.build()
    gc.collect()
    traced = (tracemalloc.get_traced_memory()[0] - before) / 2**20
    tracemalloc.stop()
    print(f"tracemalloc: registry {traced:.1f} MB ({traced * 2**20 / n:.0f} bytes per cluster)")

    ok = med < 50 and rss_mb < 150
    print(f"targets: sweep < 50 ms, rss < 150 MB: {'met' if ok else 'MISSED'}")
    print(f"health clusters={n} sweep_ms={med:.2f} rss_mb={rss_mb:.1f}")


if __name__ == "__main__":
    main()
