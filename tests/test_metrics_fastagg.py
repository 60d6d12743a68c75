"""The C speedups (tmcd.metrics._fastagg) against the pure-Python path: same series; and
the C path's own safety (all or nothing, strong references) when it meets odd input."""

from __future__ import annotations

import gc
import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests import tools
from tmcd.contracts.messages import SyncEvent
from tmcd.metrics import model as fleet
from tmcd.metrics import selfcheck
from tmcd.metrics.exposition import FastExposition
from tmcd.metrics.model import FleetMetrics
from tmcd.runtime.selfmetrics import SelfMetrics

INF = float("inf")
RESOURCES = [f"example.io/v1/kind{i}" for i in range(30)] + ["apps/v1/deployments", "v1/configmaps"]


@pytest.fixture
def fastagg() -> Any:
    """The C extension module (the test skips without it, and fails under CI)."""
    tools.require_c_extension()
    return fleet._fastagg


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process in which the C path has not been self-checked nor given up yet."""
    monkeypatch.setattr(fleet, "_SPEEDUPS", fleet._Speedups())
    monkeypatch.delenv("TMCD_NO_SPEEDUPS", raising=False)


def test_extension_is_built(fresh: None) -> None:
    """make test / .ci/run install with a C compiler, so the C path is what runs."""
    tools.require_c_extension()
    assert fleet.SPEEDUPS_AVAILABLE
    assert selfcheck.self_check() is None
    sm = SelfMetrics()
    assert FleetMetrics(sm.registry, sm.event_lag).aggregation == "c"
    assert build_info(sm.registry) == {"version": "0.1.0", "speedups": "c"}


def build_info(reg: CollectorRegistry) -> dict[str, str]:
    (s,) = (s for m in reg.collect() for s in m.samples if s.name == "tmc_build_info")
    return dict(s.labels)


def batch(rng: random.Random, cluster: str, n: int, now: float) -> list[SyncEvent]:
    out = []
    t = now - rng.choice([0.05, 0.3, 2.0, 90.0])
    for _ in range(n):
        t += rng.random() * 0.002
        ok = rng.random() > 0.1
        out.append(
            SyncEvent(
                cluster=cluster,
                # some in the future (clock skew), some exactly on a bucket bound
                timestamp=rng.choice([t, t, t, now + 0.5, now - 0.1, now - 0.25]),
                resource=rng.choice(RESOURCES),
                op=rng.choice(["create", "update", "delete", "status"]),
                direction=rng.choice(["down", "up", "down"]),
                latency_seconds=rng.choice([rng.lognormvariate(-3, 1.5), 0.1, 0.005, 0.0, 12.0]),
                ok=ok,
                error_reason="" if ok else rng.choice(["Conflict", "NotFound", "weird reason"]),
            )
        )
    return out


def render(m: FleetMetrics, reg: CollectorRegistry) -> dict[str, float]:
    out = {}
    for line in FastExposition(reg).render().decode().splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_c_and_python_paths_give_the_same_series(seed: int) -> None:
    tools.require_c_extension()
    rng = random.Random(seed)
    paths = []
    for speedups in (True, False):
        sm = SelfMetrics()
        paths.append((FleetMetrics(sm.registry, sm.event_lag, max_resources_per_cluster=12, speedups=speedups), sm))
    now = 1000.0
    for _ in range(40):
        cluster = f"c-{rng.randrange(5)}"
        n = rng.choice([1, 2, 7, 180, 500])
        events = batch(rng, cluster, n, now)
        for m, _ in paths:
            assert m.on_sync_events(cluster, events, now) == n
        now += 0.1
    c_series, py_series = (render(m, sm.registry) for m, sm in paths)
    assert c_series.keys() == py_series.keys()
    for key, value in c_series.items():
        if "_sum{" in key or key.startswith("tmc_event_lag_seconds_sum"):
            assert value == pytest.approx(py_series[key], rel=1e-9, abs=1e-9), key
        elif key.startswith(("process_", "python_")):
            continue
        else:
            assert value == py_series[key], key


def test_aggregate_layout_and_buckets(fastagg: Any) -> None:
    evs = [
        SyncEvent(cluster="a", timestamp=1.0, resource="r", op="create", direction="up", latency_seconds=0.3, ok=False),
        SyncEvent(cluster="a", timestamp=1.5, resource="r", latency_seconds=0.1),
        SyncEvent(cluster="a", timestamp=3.0, resource="r", latency_seconds=7.0),
    ]
    counts, down, up, down_sum, up_sum, lag, lag_sum, failed = fastagg.aggregate(
        evs, 2.0, (0.1, 0.5, INF), (0.5, 1.0, INF)
    )
    assert counts == {("r", "create", "up"): 1, ("r", "update", "down"): 2}
    assert list(counts) == [("r", "create", "up"), ("r", "update", "down")]  # first seen first
    assert down == [1, 0, 1]  # 0.1 is in le=0.1, as observe() puts it
    assert up == [0, 1, 0]
    assert (down_sum, up_sum) == (pytest.approx(7.1), pytest.approx(0.3))
    assert lag == [2, 1, 0]  # lags 1.0, 0.5, -1.0 (future: first bucket, adds 0 to the sum)
    assert lag_sum == pytest.approx(1.5)
    assert failed == [evs[0]]
    assert fastagg.aggregate([], 2.0, (INF,), (INF,)) == ({}, [0], [0], 0.0, 0.0, [0], 0.0, [])


def test_aggregate_adds_known_keys_to_their_values(fastagg: Any) -> None:
    class Value:
        def __init__(self) -> None:
            self._value = 1.0

    evs = [SyncEvent(cluster="a", timestamp=1.0, resource="r", op=op) for op in ("create", "create", "update")]
    known = {("r", "create", "down"): Value()}
    counts = fastagg.aggregate(evs, 2.0, (INF,), (INF,), known)[0]
    assert counts == {("r", "update", "down"): 1}  # only the unknown key comes back
    assert known["r", "create", "down"]._value == 3.0
    with pytest.raises(TypeError, match="known"):
        fastagg.aggregate(evs, 2.0, (INF,), (INF,), [])
    with pytest.raises(AttributeError):
        fastagg.aggregate(evs, 2.0, (INF,), (INF,), {("r", "create", "down"): object()})


def test_aggregate_rejects_bad_input(fastagg: Any) -> None:
    ok = SyncEvent(cluster="a", timestamp=1.0, resource="r")
    with pytest.raises(AttributeError):
        fastagg.aggregate([1], 2.0, (INF,), (INF,))
    with pytest.raises(TypeError, match="must all be"):
        fastagg.aggregate([ok, "x"], 2.0, (INF,), (INF,))
    with pytest.raises(TypeError):
        fastagg.aggregate(5, 2.0, (INF,), (INF,))
    with pytest.raises(ValueError, match="bounds"):
        fastagg.aggregate([ok], 2.0, (), (INF,))
    with pytest.raises(ValueError, match="bounds"):
        fastagg.aggregate([ok], 2.0, (INF,), tuple(range(65)))
    with pytest.raises(TypeError):
        fastagg.aggregate([ok], 2.0, ("x",), (INF,))


class Value:
    """Stands for a prometheus-client value: the C path adds to ``_value``."""

    def __init__(self, value: float = 1.0) -> None:
        self._value = value


class ReadOnly:
    """A value whose ``_value`` reads but cannot be written."""

    @property
    def _value(self) -> float:
        return 5.0

    @_value.setter
    def _value(self, v: float) -> None:
        raise TypeError("read-only value")


def sync(op: str, resource: str = "r", **kw: Any) -> SyncEvent:
    return SyncEvent(cluster="a", timestamp=1.0, resource=resource, op=op, **kw)  # type: ignore[arg-type]


def test_aggregate_is_all_or_nothing_when_a_known_value_cannot_be_written(fastagg: Any) -> None:
    """A failure while adding to the known values undoes the ones already added, so the
    caller can count the batch again in Python without counting any of it twice."""
    shared = Value(1.0)  # two raw keys can share a child (resources over the cap -> 'other')
    known: dict[tuple[str, str, str], Any] = {
        ("r", "create", "down"): shared,
        ("r", "update", "down"): shared,
        ("r", "delete", "down"): ReadOnly(),
    }
    evs = [sync("create"), sync("update"), sync("update"), sync("delete")]
    with pytest.raises(TypeError, match="read-only"):
        fastagg.aggregate(evs, 2.0, (INF,), (INF,), known)
    assert shared._value == 1.0
    # a value that cannot even be read: nothing before it was applied either
    known["r", "delete", "down"] = object()
    with pytest.raises(AttributeError):
        fastagg.aggregate(evs, 2.0, (INF,), (INF,), known)
    assert shared._value == 1.0
    # and with good values, the shared one gets both keys' counts
    known["r", "delete", "down"] = Value(0.0)
    assert fastagg.aggregate(evs, 2.0, (INF,), (INF,), known)[0] == {}
    assert (shared._value, known["r", "delete", "down"]._value) == (4.0, 1.0)


def fresh_str(text: str) -> str:
    """A str that is not interned: freed with its last reference."""
    return "".join(list(text))


def test_aggregate_holds_what_python_code_could_free(fastagg: Any) -> None:
    """Python code that runs inside the call (a __float__, a property) may drop the last
    other reference to an event, its fields or a known value: the C pass holds its own, so
    it neither crashes nor miscounts (the events as they were when read)."""
    events: list[SyncEvent] = []
    known: dict[tuple[str, str, str], Any] = {}
    written: list[float] = []
    filler = sync("filler")

    class Replacing:
        def __float__(self) -> float:
            events[0] = events[1] = filler  # the events' only other references
            gc.collect()
            return 0.2

    class SelfRemoving:
        """Drops the dict's (its only) reference when read; records what is written."""

        @property
        def _value(self) -> float:
            del known[key]
            gc.collect()
            return 1.0

        @_value.setter
        def _value(self, v: float) -> None:
            written.append(v)

    def event(resource: str, op: str, direction: str, **kw: Any) -> SyncEvent:
        r, o, d = fresh_str(resource), fresh_str(op), fresh_str(direction)
        return SyncEvent(cluster="a", timestamp=1.0, resource=r, op=o, direction=d, ok=False, **kw)  # type: ignore[arg-type]

    key = ("apps/v1/deployments", "update", "down")
    known[key] = SelfRemoving()
    events += [
        event(*key),
        event("v1/pods", "create", "up", latency_seconds=Replacing()),
        event("v1/pods", "create", "up"),
    ]
    counts, down, up, _, _, lag, _, failed = fastagg.aggregate(events, 2.0, (0.1, 0.5, INF), (INF,), known)
    assert counts == {("v1/pods", "create", "up"): 2}
    assert (down, up, lag) == ([1, 0, 0], [1, 1, 0], [3])
    assert [e.op for e in failed] == ["update", "create", "create"]  # all ok=False, as they were read
    assert failed[0].resource == "apps/v1/deployments"
    assert written == [2.0] and known == {} and events[:2] == [filler, filler]


def test_aggregate_refuses_a_batch_that_changes_size_under_it(fastagg: Any) -> None:
    """Python code that empties the list mid-call: an error, and nothing counted."""
    events: list[SyncEvent] = []

    class Clearing:
        def __float__(self) -> float:
            events.clear()
            gc.collect()
            return 0.2

    value = Value(1.0)
    events += [sync("update"), sync("create", latency_seconds=Clearing()), sync("update")]
    with pytest.raises(RuntimeError, match="events changed size"):
        fastagg.aggregate(events, 2.0, (INF,), (INF,), {("r", "update", "down"): value})
    assert value._value == 1.0 and events == []
