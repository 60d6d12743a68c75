"""The mock service mesh counts the requests it could not route: 0 whatever the weights do, as long
as every cluster's weights sum to 100; more than 0 for a state that drops traffic."""

from __future__ import annotations

import msgspec
import pytest

from tests.helpers import nats_connect, wait_for
from tests.test_sim_mesh import T0, weights
from tests.test_sim_mesh_runner import connected
from tmcd.contracts import subjects
from tmcd.contracts.codec import decode_as
from tmcd.contracts.messages import TrafficApplied
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.sim.mesh import MeshModel, MeshOptions, Weights, shares
from tmcd.sim.mesh_runner import MeshStats, _unrouted_reports


def model(clusters: int = 3, rps: float = 1000.0, **kw: object) -> MeshModel:
    return MeshModel(MeshOptions(clusters=clusters, rps=rps, seed=1, **kw), T0)  # type: ignore[arg-type]


def test_weights_that_sum_to_100_route_every_request_through_any_changes() -> None:
    m = model(clusters=4, no_stats=frozenset({"quiet"}))
    m.apply(weights(route="quiet", canary=30), T0)
    m.apply(weights(canary=0), T0)
    reports = []
    t, generation = T0, 1
    # changes at odd instants, on some clusters and on all, at window edges and between them
    for step, (canary, clusters) in enumerate([
        (50, ("sim-001", "sim-003")), (100, ()), (0, ()), (7, ("sim-004",)), (50, ()), (33, ("sim-002",)), (0, ()),
    ]):  # fmt: skip
        for dt in (0.37, 2.63, 7.0, 10.0 - (t - T0) % 10.0, 1e-6):
            t += dt
            generation += 1
            report = m.apply(weights(canary=canary, clusters=clusters, generation=generation), t)
            assert report is not None and report.unrouted_requests == 0
            reports.append(report)
        if step % 2:
            m.window(T0 + 10.0 * (1 + int((t - T0) // 10.0)))
    m.apply(weights(route="late", canary=40), t + 0.5)  # a route that appears inside a window
    stats = m.window(t + 20.0)
    assert sum(s.requests for s in stats) > 0
    assert m.unrouted("shop", "web") == m.unrouted("shop", "quiet") == m.unrouted("shop", "late") == 0
    assert m.unrouted_total == 0 and m.take_unrouted_reports(t + 20.0) == []
    assert m.unrouted("shop", "nothing") is None


@pytest.mark.parametrize(
    ("state", "lost_share"),
    [
        ((60, 30), 0.1),  # a split half-way through an update: 10 % finds no route
        ((0, 0), 1.0),  # stable removed before the canary was added
        (None, 1.0),  # no weights apply on the cluster at all
        ((70, 50), 1.0),  # above 100: no proxy can apply it
        ((110, -10), 1.0),
    ],
)
def test_a_cluster_whose_weights_do_not_sum_to_100_drops_requests(state: Weights, lost_share: float) -> None:
    m = model()
    m.apply(weights(canary=50, clusters=("sim-002",)), T0)
    m.force_weights("shop", "web", "sim-002", state, T0 + 5.0)
    first = m.apply(weights(canary=50, clusters=("sim-002",), generation=2), T0 + 7.5)  # fixed after 2.5 s
    assert first is not None and first.unrouted_requests == 0  # counted when the window closes
    stats = m.window(T0 + 10.0)
    expected = round(1000 * 2.5 * lost_share)
    assert m.unrouted("shop", "web") == expected
    # the requests drawn are the routed ones only
    on_2 = sum(s.requests for s in stats if s.cluster == "sim-002")
    assert on_2 == pytest.approx(10_000 - expected, rel=0.05)
    [report] = m.take_unrouted_reports(T0 + 10.0)
    assert report.unrouted_requests == expected and report.generation == 2
    assert report.weights == {"sim-002": {"stable": 50, "canary": 50}}
    assert m.take_unrouted_reports(T0 + 10.0) == []  # reported once
    m.window(T0 + 20.0)  # correct again: the count stays
    assert m.unrouted("shop", "web") == expected and m.take_unrouted_reports(T0 + 20.0) == []
    later = m.apply(weights(canary=0, generation=3), T0 + 21.0)
    assert later is not None and later.unrouted_requests == expected  # cumulative on every report


def test_any_instant_without_a_route_counts_at_least_one_request() -> None:
    m = model(clusters=1, rps=1.0)
    m.apply(weights(), T0)
    m.force_weights("shop", "web", "sim-001", (99, 0), T0 + 1.0)
    m.force_weights("shop", "web", "sim-001", (100, 0), T0 + 1.001)
    m.window(T0 + 10.0)
    assert m.unrouted("shop", "web") == 1


def test_time_the_window_accounting_loses_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    m = model(clusters=2)
    m.apply(weights(canary=0), T0)

    def forget(self: MeshModel, r: object, until: float) -> None:  # a bug: the time before a change vanishes
        r.since = until  # type: ignore[attr-defined]

    with monkeypatch.context() as patched:
        patched.setattr(MeshModel, "_accumulate", forget)
        m.apply(weights(canary=100, generation=2), T0 + 7.5)
    m.window(T0 + 10.0)
    assert m.unrouted("shop", "web") == 2 * 7500  # 7.5 s on each cluster


def test_shares() -> None:
    assert shares((100, 0)) == (1.0, 0.0, 0.0) and shares((0, 100)) == (0.0, 1.0, 0.0)
    assert shares((37, 63))[2] == 0.0
    assert shares((50, 25)) == (0.5, 0.25, 0.25)
    assert shares(None) == shares((101, 0)) == shares((-1, 50)) == (0.0, 0.0, 1.0)


def test_a_report_without_the_count_decodes_as_zero() -> None:
    old = b'{"namespace":"shop","route":"web","timestamp":1.0,"generation":3,"weights":{}}'
    assert decode_as(TrafficApplied, old).unrouted_requests == 0
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(old[:-1] + b',"unrouted_requests":-1}', type=TrafficApplied)


async def test_the_runner_reports_a_route_again_when_its_count_grows(nats_server: EmbeddedNats) -> None:
    m = model()
    m.apply(weights(canary=20, clusters=("sim-001",)), T0)
    m.force_weights("shop", "web", "sim-001", None, T0 + 9.0)
    m.window(T0 + 10.0)
    bus = await connected(nats_server.url)
    nc = await nats_connect(nats_server.url)
    seen: list[TrafficApplied] = []

    async def on(msg: object) -> None:
        seen.append(decode_as(TrafficApplied, msg.data))  # type: ignore[attr-defined]

    try:
        await nc.subscribe(subjects.traffic_applied("shop", "web"), cb=on)
        await nc.flush()
        result = MeshStats()
        await _unrouted_reports(bus, m, T0 + 10.0, result)
        await _unrouted_reports(bus, m, T0 + 10.0, result)  # nothing new: nothing sent
        await bus.flush()
        await wait_for(lambda: len(seen) == 1, what="the report")
        assert seen[0].unrouted_requests == 1000 and result.unrouted == 1000
        assert "unrouted=1000" in result.summary()
    finally:
        await nc.close()
        await bus.close()


def test_a_change_applied_after_a_windows_scheduled_end_loses_nothing() -> None:
    # the runner closes each window at its scheduled end, possibly after it has applied a change
    # that arrived later (a late wake-up under load): that time is accounted once, not lost
    m = model()
    m.apply(weights(canary=0), T0)
    m.apply(weights(canary=20, clusters=("sim-001",), generation=2), T0 + 10.4)  # after the end at T0+10
    m.window(T0 + 10.0)
    m.apply(weights(canary=50, clusters=("sim-001",), generation=3), T0 + 21.0)
    m.window(T0 + 20.0)
    m.window(T0 + 30.0)
    assert m.unrouted("shop", "web") == 0 and m.unrouted_total == 0
