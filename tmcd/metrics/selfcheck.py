"""The C aggregation's start-up self-check: on a few small batches through every branch of the
C pass, it must give the Python path's series (:func:`self_check`, run once per process by
:func:`tmcd.metrics.model.speedups_mode`)."""

from __future__ import annotations

from math import isclose
from typing import cast

from prometheus_client import CollectorRegistry, Histogram

from tmcd.contracts.messages import SyncEvent
from tmcd.metrics import catalog
from tmcd.metrics import model as _model
from tmcd.metrics.model import FleetMetrics, _describe

_CHECK_NOW = 1000.0


def _check_batches() -> list[tuple[str, list[SyncEvent]]]:
    """Batches through every branch of the C pass: more resources than the cap (two keys
    share the 'other' child), both directions, failures, latencies and lags on bucket bounds
    and past the last one, clock skew; a cluster's second batch adds to known keys."""
    now = _CHECK_NOW
    resources = ("apps/v1/deployments", "v1/configmaps", "v1/secrets", "example.io/v1/widgets")
    latencies = (0.0, 0.005, 0.1, 0.3, 10.0, 12.0, 0.25)
    # lags exactly on bounds need exact differences: 0.25, 0.5, 1.0, 60.0 (and 0, and past 60)
    timestamps = (now - 0.25, now - 0.5, now + 0.5, now - 1.0, now - 90.0, now, now - 60.0, now - 0.1)
    events = [
        SyncEvent(
            cluster="check",
            timestamp=timestamps[i % 8],
            resource=resources[i % 4],
            op=("create", "update", "delete")[i % 3],
            direction="up" if i % 5 in (1, 4) else "down",
            latency_seconds=latencies[i % 7],
            ok=i % 6 != 2,
            error_reason="" if i % 6 != 2 else ("Conflict", "NotFound", "odd reason")[i % 3],
        )
        for i in range(30)
    ]
    return [("check", events[:12]), ("check", events), ("other", events[3:4])]


def self_check() -> str | None:
    """Why the C path's series differ from the Python path's on :func:`_check_batches`
    (sums may differ in the last bits), or None when they agree (or C is not built)."""
    if not _model.SPEEDUPS_AVAILABLE:
        return None
    try:
        got: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]] = []
        for speedups in (True, False):
            reg = CollectorRegistry(auto_describe=False)
            lag = cast(Histogram, catalog.create("tmc_event_lag_seconds", reg))
            fm = FleetMetrics(reg, lag, max_resources_per_cluster=2, speedups=speedups)
            for cluster, events in _check_batches():
                if speedups:  # strict: an exception is a failed check, not a fallback
                    fm._aggregate_c(fm._cluster(cluster, _CHECK_NOW), events, _CHECK_NOW, strict=True)
                else:
                    fm.on_sync_events(cluster, events, _CHECK_NOW)
            samples = (s for m in reg.collect() for s in m.samples if not s.name.endswith("_created"))
            got.append({(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples})
    except Exception as exc:
        return _describe(exc)
    c, py = got
    for key in sorted(c.keys() | py.keys()):
        a, b = c.get(key), py.get(key)
        sums_close = a is not None and b is not None and key[0].endswith("_sum") and isclose(a, b, abs_tol=1e-9)
        if a != b and not sums_close:
            labels = ",".join(f'{k}="{v}"' for k, v in key[1])
            return f"{key[0]}{{{labels}}} is {a} in C but {b} in Python"
    return None
