"""The cluster and sync views: the per-kind/per-cluster aggregation (pure), and the views through Pilot."""

from __future__ import annotations

import math
from typing import Any

import pytest
from textual.widgets import Static

from tests.helpers import nats_connect, wait_for
from tmcd.contracts.codec import decode, encode
from tmcd.contracts.messages import (
    ConnectionEvent,
    ControlReply,
    HealthChange,
    ResourceQuantities,
    SyncControl,
    SyncerHeartbeat,
    SyncEvent,
    SyncEventBatch,
)
from tmcd.contracts.subjects import CTL_SYNC
from tmcd.resources.meta import Condition, ObjectMeta
from tmcd.resources.synctarget import SyncTarget, SyncTargetStatus
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.tui.app import DashboardApp
from tmcd.tui.feed import Feed
from tmcd.tui.kinds import GROWTH, OTHER, SyncStats, bucket_bound, latency_bucket, percentiles
from tmcd.tui.rowtable import RowTable
from tmcd.tui.screens.cluster import ClusterScreen
from tmcd.tui.screens.cluster import latency as fmt_latency
from tmcd.tui.screens.confirm import ConfirmDialog
from tmcd.tui.screens.fleet import FleetScreen
from tmcd.tui.screens.sync import SyncScreen
from tmcd.tui.state import DashboardState

NOW = 1_700_000_000.0


def ev(cluster: str, resource: str, latency: float = 0.01, ok: bool = True, at: float = NOW) -> SyncEvent:
    return SyncEvent(
        cluster=cluster,
        timestamp=at,
        resource=resource,
        namespace="shop",
        name="web",
        latency_seconds=latency,
        ok=ok,
        error_reason="" if ok else "Conflict",
    )


def batch(cluster: str, events: list[SyncEvent], at: float = NOW) -> SyncEventBatch:
    return SyncEventBatch(cluster=cluster, timestamp=at, events=events)


# --- the aggregation (pure) -----------------------------------------------------------------------------------


def test_rates_and_error_ratios_per_kind_and_per_cluster() -> None:
    stats = SyncStats(window=60)
    for s in reversed(range(30)):  # 30 s of traffic: sim-1 4 deployments/s (1 failing) + 2 pods/s; sim-2 2 pods/s
        at = NOW - s
        deps = [ev("sim-1", "apps/v1/deployments", ok=i != 0, at=at) for i in range(4)]
        stats.sync_batch(batch("sim-1", deps + [ev("sim-1", "v1/pods", at=at)] * 2, at))
        stats.sync_batch(batch("sim-2", [ev("sim-2", "v1/pods", at=at)] * 2, at))
    kinds = stats.kinds(NOW)
    assert [k.name for k in kinds] == ["apps/v1/deployments", "v1/pods"]
    deps, pods = kinds
    assert (deps.events, deps.errors, deps.rate, deps.error_ratio) == (120, 30, 2.0, 0.25)
    assert (pods.events, pods.errors, pods.rate, pods.error_ratio) == (120, 0, 2.0, 0.0)
    one = stats.cluster("sim-1", NOW)
    assert (one.events, one.errors, one.rate) == (180, 30, 3.0)
    assert [(k.name, k.events, k.errors) for k in stats.cluster_kinds("sim-1", NOW)] == [
        ("apps/v1/deployments", 120, 30),
        ("v1/pods", 60, 0),
    ]
    assert [e.reason for e in stats.recent_errors("sim-1")][:1] == ["Conflict"]
    assert stats.recent_errors("sim-1")[0].timestamp == NOW  # newest first
    assert stats.cluster("nowhere", NOW).events == 0 and stats.cluster("nowhere", NOW).error_ratio is None


def test_latency_percentiles_are_within_one_bucket() -> None:
    stats = SyncStats()
    # 1..100 ms, one event each: p50 = 50 ms, p90 = 90 ms, p99 = 99 ms
    stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods", latency=(i + 1) / 1000) for i in range(100)]))
    fig = stats.cluster("sim-1", NOW)
    for got, want in ((fig.p50, 0.050), (fig.p90, 0.090), (fig.p99, 0.099)):
        assert got is not None and want <= got <= want * GROWTH + 1e-12
    assert stats.kinds(NOW)[0].p99 == fig.p99
    counts = stats.cluster("sim-1", NOW, latency=False)  # the cheap form, for a list of every cluster
    assert (counts.events, counts.p50, counts.p99) == (100, None, None)
    assert percentiles({}, (0.5,)) == [None]
    # the bucket of a value has the value at or under its bound and above the previous bound
    for v in (1e-5, 1e-4, 0.0123, 1.0, 42.0):
        b = latency_bucket(v)
        assert v <= bucket_bound(b) + 1e-15 and (b == 0 or v > bucket_bound(b - 1))
    assert latency_bucket(math.nan) == 0 and latency_bucket(-1.0) == 0


def test_window_expiry_and_late_events() -> None:
    stats = SyncStats(window=60)
    stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods", ok=False)], NOW - 59))
    stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods")], NOW))
    assert stats.cluster("sim-1", NOW).events == 2
    assert stats.cluster("sim-1", NOW + 1).events == 1  # the first one left the window
    assert stats.kinds(NOW + 1)[0].errors == 0
    assert stats.kinds(NOW + 61) == []  # nothing recent: an idle kind is not listed
    before = stats.version
    stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods")], NOW - 120))  # older than the window
    assert stats.cluster("sim-1", NOW).events == 2 and stats.version == before
    # slots are reused, not piled up: an hour of traffic keeps one window of slots
    for s in range(3_600):
        stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods")], NOW + s))
    assert stats.cluster("sim-1", NOW + 3_599).events == 60


def test_kinds_clusters_and_errors_are_capped() -> None:
    stats = SyncStats(max_kinds=3, max_clusters=2)
    for i in range(5):
        stats.sync_batch(batch(f"sim-{i}", [ev(f"sim-{i}", f"g/v1/kind{i}", ok=False)] * 100))
    names = {k.name for k in stats.kinds(NOW)}
    assert names == {"g/v1/kind0", "g/v1/kind1", "g/v1/kind2", OTHER}
    assert next(k for k in stats.kinds(NOW) if k.name == OTHER).events == 200  # kind3 and kind4
    assert stats.cluster("sim-4", NOW).events == 0  # beyond the cluster cap: only the kind figures count it
    assert len(stats.recent_errors("sim-0")) == 50 and stats.recent_errors("sim-4") == []
    stats.forget("sim-0")
    assert stats.cluster("sim-0", NOW).events == 0 and stats.recent_errors("sim-0") == []


def test_the_state_feeds_the_aggregation() -> None:
    state = DashboardState()
    v = state.version
    state.apply(batch("sim-1", [ev("sim-1", "v1/pods", ok=False)]))
    state.apply(ev("sim-1", "v1/secrets"))
    assert state.version > v
    assert [k.name for k in state.sync.kinds(NOW)] == ["v1/pods", "v1/secrets"]
    assert state.fleet.row("sim-1", NOW) is not None and state.fleet.row("sim-1", NOW).error_ratio == 0.5  # type: ignore[union-attr]


@pytest.mark.parametrize("n", [0, 1])
def test_nothing_counted_in_an_empty_batch(n: int) -> None:
    stats = SyncStats()
    stats.sync_batch(batch("sim-1", [ev("sim-1", "v1/pods")] * n))
    assert stats.cluster("sim-1", NOW).events == n


# --- the views through Pilot ----------------------------------------------------------------------------------


SIZE = (80, 24)
GI = 2**30


def fleet(n: int = 3) -> DashboardState:
    """``n`` clusters; sim-002 has traffic, failures, a capacity, conditions, health and connection events."""
    state = DashboardState()
    state.set_connection("connected")
    for i in range(n):
        name = f"sim-{i + 1:03d}"
        conditions = [Condition(type="Ready", status="True"), Condition(type="SyncerReady", status="True")]
        if name == "sim-002":
            conditions.append(Condition(type="HeartbeatHealthy", status="False", reason="HeartbeatLate"))
        state.set_target(
            name,
            SyncTarget(
                metadata=ObjectMeta(name=name, labels={"region": "eu-west-1"}),
                status=SyncTargetStatus(
                    health="Degraded" if name == "sim-002" else "Healthy",  # type: ignore[arg-type]
                    conditions=conditions,
                    allocatable={"cpu": "8", "memory": "32Gi", "pods": "110"},
                    used={"cpu": "2", "memory": "8Gi", "pods": "11"},
                ),
            ),
        )
    state.apply(
        SyncerHeartbeat(
            cluster="sim-002",
            timestamp=NOW - 2,
            queue_depth=7,
            paused=True,
            allocatable=ResourceQuantities(cpu=4.0, memory=16 * GI, pods=100),
            used=ResourceQuantities(cpu=3.8, memory=4 * GI, pods=25),
        )
    )
    for s in reversed(range(10)):  # 10 s: sim-002 6 deployments/s (1 failing, 100 ms) + 4 pods/s (10 ms)
        at = NOW - s
        deps = [ev("sim-002", "apps/v1/deployments", latency=0.1, ok=i != 0, at=at) for i in range(6)]
        pods = [ev("sim-002", "v1/pods", latency=0.01, at=at)] * 4
        state.apply(batch("sim-002", deps + pods, at))
        state.apply(batch("sim-001", [ev("sim-001", "v1/pods", latency=0.01, at=at)] * 3, at))
    state.apply(
        HealthChange(kind="cluster", name="sim-002", timestamp=NOW - 30, to_status="Degraded", reason="HeartbeatLate")
    )
    state.apply(ConnectionEvent(cluster="sim-002", timestamp=NOW - 20, state="reconnecting", reason="EOF"))
    state.apply(ConnectionEvent(cluster="sim-001", timestamp=NOW - 20, state="disconnected", reason="elsewhere"))
    return state


def text(app: DashboardApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def cells(app: DashboardApp, selector: str = "#table") -> list[list[str]]:
    table = app.screen.query_one(selector, RowTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_enter_on_a_fleet_row_opens_its_cluster_view_and_esc_goes_back() -> None:
    app = DashboardApp(fleet(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("down", "enter")
        await wait_for(lambda: isinstance(app.screen, ClusterScreen), what="the cluster view")
        assert app.view == "cluster"
        await wait_for(lambda: "sim-002" in text(app, "#summary"), what="the cluster's numbers")
        summary = text(app, "#summary")
        assert "Degraded" in summary and "queue 7" in summary and "paused yes" in summary
        assert "Ready=True" in summary and "HeartbeatHealthy=False (HeartbeatLate)" in summary
        cap = text(app, "#capacity")
        # the heartbeat's capacity (newer than the SyncTarget's): 3.8 of 4 cores, 4 of 16 Gi, 25 of 100 pods
        assert " 95% 3.8/4.0" in cap and " 25% 4.0Gi/16.0Gi" in cap and " 25% 25/100" in cap
        # 60 of 100 events took 100 ms: the median is in its bucket (shown as the bucket's bound, 102 ms)
        assert f"p50 {latency(0.1)} p90 {latency(0.1)}" in cap and latency(0.1) == "102ms"
        assert "sync 1.7/s  errors 10 (10.0%) /60s" in cap  # 100 events, 10 failed, over the 60 s window
        kinds = text(app, "#kinds")
        assert "apps/v1/deployments" in kinds and "1.0/s" in kinds and "v1/pods" in kinds
        lines = cells(app)
        # newest first: the sync errors (one per second), then the connection event, then the health change
        assert lines[0][1:] == ["sync", "Conflict", "apps/v1/deployments shop/web"]
        assert [ln[1] for ln in lines[-2:]] == ["connection", "health"]
        assert all("elsewhere" not in ln[3] for ln in lines)  # another cluster's events are not listed
        assert lines[-1][0] == "30s"
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, FleetScreen), what="back to the fleet")


async def test_the_cluster_view_follows_new_events() -> None:
    state = fleet()
    now = [NOW]
    app = DashboardApp(state, clock=lambda: now[0])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter")  # sim-001
        await wait_for(lambda: "sim-001" in text(app, "#summary"), what="sim-001")
        assert f"p99 {latency(0.01)}" in text(app, "#capacity")
        now[0] = NOW + 1
        state.apply(batch("sim-001", [ev("sim-001", "v1/secrets", latency=2.0, ok=False, at=NOW + 1)], NOW + 1))
        await wait_for(lambda: cells(app) and cells(app)[0][1] == "sync", what="the new error streams in")
        assert "v1/secrets" in text(app, "#kinds")


async def test_view_2_without_a_selection_shows_the_highlighted_fleet_row() -> None:
    app = DashboardApp(fleet(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("down", "down", "2")
        await wait_for(lambda: "sim-003" in text(app, "#summary"), what="sim-003")
        assert "conditions" not in text(app, "#summary")
        assert "no sync events" in text(app, "#kinds")


async def test_sync_view_rows_per_kind_and_cluster() -> None:
    app = DashboardApp(fleet(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await wait_for(lambda: isinstance(app.screen, SyncScreen) and cells(app, "#kinds"), what="the sync view")
        assert cells(app, "#kinds") == [
            # 70 pods: 40 from sim-002, 30 from sim-001; 60 deployments, 10 failed; rates over 60 s
            ["v1/pods", "1.2", "0", "0.0%", latency(0.01), latency(0.01)],
            ["apps/v1/deployments", "1.0", "10", "16.7%", latency(0.1), latency(0.1)],
        ]
        rows = cells(app, "#clusters")
        assert [r[1:4] for r in rows] == [
            ["sim-001", "Healthy", "no"],
            ["sim-002", "Degraded", "yes"],
            ["sim-003", "Healthy", "no"],
        ]
        assert rows[1][4:7] == ["1.7", "10", "10.0%"]
        assert "acknowledgements appear here" in text(app, "#acks")


def latency(seconds: float) -> str:
    """The view's text for a latency in the bucket of ``seconds``."""
    return fmt_latency(bucket_bound(latency_bucket(seconds)))


async def test_p_r_f_open_the_confirmation_for_the_selected_clusters() -> None:
    app = DashboardApp(fleet(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await wait_for(lambda: isinstance(app.screen, SyncScreen) and cells(app, "#clusters"), what="the sync view")
        for key, words in (("p", "Pause syncing on"), ("r", "Resume syncing on"), ("f", "Force a full re-sync of")):
            await pilot.press(key)
            await wait_for(lambda: isinstance(app.screen, ConfirmDialog), what="the confirmation")
            assert text(app, "#question") == f"{words} cluster sim-001?"
            await pilot.press("n")
            await wait_for(lambda: isinstance(app.screen, SyncScreen), what="declined")
        await pilot.press("space", "space")  # marks sim-001 and sim-002
        await wait_for(lambda: "marked: 2" in text(app, "#status"), what="marks shown")
        assert [r[0] for r in cells(app, "#clusters")] == ["✓", "✓", " "]
        await pilot.press("p")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), what="the first confirmation")
        assert text(app, "#question") == "Pause syncing on cluster sim-001?"
        await pilot.press("n")
        await wait_for(
            lambda: isinstance(app.screen, ConfirmDialog) and "sim-002" in text(app, "#question"), what="the second"
        )
        await pilot.press("n")
        await wait_for(lambda: isinstance(app.screen, SyncScreen), what="all answered")
        assert app.acks == []
        await pilot.press("escape")  # clears the marks, stays
        await wait_for(lambda: "marked" not in text(app, "#status"), what="marks cleared")
        assert isinstance(app.screen, SyncScreen)


async def test_acknowledgements_are_shown() -> None:
    app = DashboardApp(fleet(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await wait_for(lambda: isinstance(app.screen, SyncScreen), what="the sync view")
        app.acks.append(ControlReply(ok=True, target="sim-001", message="paused", state="paused"))
        app.acks.append(ControlReply(ok=False, target="sim-002", message="no syncer answered", code=504))
        app.request_redraw()
        await wait_for(lambda: "sim-002" in text(app, "#acks"), what="the acknowledgements")
        acks = text(app, "#acks")
        assert "✓ ok sim-001: paused" in acks and "✕ refused sim-002: no syncer answered" in acks


# --- actions over a real NATS ---------------------------------------------------------------------------------


async def _sync_view(app: DashboardApp, pilot: Any) -> None:
    await wait_for(lambda: app.feed is not None and app.feed.bus is not None and app.feed.bus.connected)
    await wait_for(lambda: app.state.loaded, what="the feed's first snapshot")
    await pilot.press("3")
    await wait_for(lambda: isinstance(app.screen, SyncScreen) and len(cells(app, "#clusters")) >= 2, what="clusters")


async def test_p_r_f_in_a_read_only_dashboard_send_nothing(nats_server: EmbeddedNats) -> None:
    nc = await nats_connect(nats_server.url)
    seen: list[str] = []

    async def anything(msg: Any) -> None:
        seen.append(msg.subject)

    sub = await nc.subscribe("tmc.ctl.>", cb=anything)
    await nc.flush()
    app = DashboardApp(feed=Feed(fleet(), nats_server.url), read_only=True, clock=lambda: NOW)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await _sync_view(app, pilot)
            await pilot.press("p", "r", "f", "space", "space", "f")
            await pilot.pause()
            assert isinstance(app.screen, SyncScreen)  # no confirmation was opened
            said = [n.message for n in app._notifications]
            assert len(said) == 5 and all(m.startswith("read-only:") and m.endswith("not sent") for m in said)
            assert said[0] == "read-only: Pause syncing on cluster sim-001 not sent"
            assert sorted(said[-2:]) == [
                f"read-only: Force a full re-sync of cluster {c} not sent" for c in ("sim-001", "sim-002")
            ]
            assert app.feed is not None and app.feed.bus is not None
            await app.feed.bus.flush()  # anything the app had sent has reached the server...
            await nc.flush()  # ...and been delivered to this subscriber
            assert seen == [] and app.acks == []
    finally:
        await sub.unsubscribe()
        await nc.close()


async def test_pause_is_confirmed_sent_and_its_acknowledgement_shown(nats_server: EmbeddedNats) -> None:
    nc = await nats_connect(nats_server.url)
    seen: list[SyncControl] = []

    async def syncer(msg: Any) -> None:
        req = decode(msg.subject, msg.data, CTL_SYNC)
        assert isinstance(req, SyncControl)
        seen.append(req)
        await msg.respond(encode(ControlReply(ok=True, target=req.cluster, message="paused", state="paused")))

    sub = await nc.subscribe("tmc.ctl.sync.*.*", cb=syncer)
    await nc.flush()
    app = DashboardApp(feed=Feed(fleet(), nats_server.url), clock=lambda: NOW)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await _sync_view(app, pilot)
            await pilot.press("down", "p")
            await wait_for(lambda: isinstance(app.screen, ConfirmDialog), what="the confirmation")
            assert text(app, "#question") == "Pause syncing on cluster sim-002?"
            await pilot.press("y")
            await wait_for(lambda: "sim-002: paused" in text(app, "#acks"), what="the acknowledgement on the view")
            assert [(r.cluster, r.action) for r in seen] == [("sim-002", "pause")]
            assert text(app, "#acks").startswith("✓ ok")
    finally:
        await sub.unsubscribe()
        await nc.close()


@pytest.mark.parametrize("no_color", [False, True])
@pytest.mark.parametrize("view", ["cluster", "sync"])
async def test_views_fit_80x24_with_and_without_colour(
    view: str, no_color: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    app = DashboardApp(fleet(40), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("down", "enter" if view == "cluster" else "3")
        await wait_for(lambda: app.view == view, what=view)
        await wait_for(
            lambda: app.screen.query_one("#table" if view == "cluster" else "#clusters", RowTable).row_count > 0
        )
        screen = app.screen
        for widget in screen.query("RowTable, Static"):
            if widget.display and widget.id != "empty":
                assert widget.region.right <= 80 and widget.region.bottom <= 24, widget.id
        table = screen.query_one("#table" if view == "cluster" else "#clusters", RowTable)
        assert table.region.height >= 8  # the list keeps a useful share of the screen
        svg = app.export_screenshot()
        if view == "cluster":
            assert "sim-002" in svg and "HeartbeatHealthy=False" in svg and "p99" in svg
        else:
            assert "apps/v1/deployments" in svg and "PAUSED" in svg
