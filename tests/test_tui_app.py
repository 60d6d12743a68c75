"""The dashboard app through Textual's Pilot: views, keys, filter, sort, help, quit, 80x24, NO_COLOR."""

from __future__ import annotations

import pytest
from textual.widgets import Static

from tests.helpers import wait_for
from tmcd.contracts.messages import HealthChange, SyncerHeartbeat, SyncEvent, SyncEventBatch
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.synctarget import SyncTarget, SyncTargetStatus
from tmcd.tui.app import DashboardApp
from tmcd.tui.rowtable import RowTable
from tmcd.tui.screens.canaries import CanariesScreen
from tmcd.tui.screens.events import EventsScreen
from tmcd.tui.screens.fleet import FleetScreen
from tmcd.tui.screens.help import HelpScreen
from tmcd.tui.state import DashboardState

NOW = 1_700_000_000.0
SIZE = (80, 24)


def fleet_state(n: int = 4) -> DashboardState:
    state = DashboardState()
    state.set_connection("connected")
    for i in range(n):
        name = f"sim-{i + 1:03d}"
        health = ["Healthy", "Degraded", "Unhealthy", "Healthy"][i % 4]
        region = "eu-west-1" if i % 2 == 0 else "us-east-1"
        state.set_target(
            name,
            SyncTarget(
                metadata=ObjectMeta(name=name, labels={"region": region}),
                status=SyncTargetStatus(health=health, queue_depth=i * 10),  # type: ignore[arg-type]
            ),
        )
        state.apply(SyncerHeartbeat(cluster=name, timestamp=NOW - i, queue_depth=i * 10, labels={"region": region}))
    state.apply(HealthChange(kind="cluster", name="sim-003", timestamp=NOW - 60, to_status="Unhealthy"))
    state.apply(HealthChange(kind="cluster", name="sim-002", timestamp=NOW - 30, to_status="Degraded"))
    return state


def names(app: DashboardApp) -> list[str]:
    table = app.screen.query_one(RowTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def text(app: DashboardApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def test_an_empty_fleet_says_how_to_start_the_simulator() -> None:
    app = DashboardApp(DashboardState(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, FleetScreen)
        empty = app.screen.query_one("#empty", Static)
        assert empty.display and "tmcd sim --clusters 20" in text(app, "#empty")
        assert not app.screen.query_one(RowTable).display
        assert "connecting" in text(app, "#status")


async def test_fleet_rows_sort_and_reverse() -> None:
    app = DashboardApp(fleet_state(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert names(app) == ["sim-001", "sim-002", "sim-003", "sim-004"]
        status = text(app, "#status")
        assert "Healthy 2" in status and "Unhealthy 1" in status and "Degraded 1" in status
        await pilot.press("s", "s")  # name -> region -> health
        await wait_for(lambda: names(app)[0] == "sim-003", what="sorted by health")
        assert names(app) == ["sim-003", "sim-002", "sim-001", "sim-004"]
        await pilot.press("S")
        await wait_for(lambda: names(app)[0] == "sim-001", what="reversed")
        assert "sort: health↓" in text(app, "#status")


async def test_filter_regex_inversion_labels_and_esc() -> None:
    app = DashboardApp(fleet_state(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("slash", *"unhealthy|degraded")
        await wait_for(lambda: names(app) == ["sim-002", "sim-003"], what="regex filter")
        await pilot.press("ctrl+u", *"!eu-west")
        await wait_for(lambda: names(app) == ["sim-002", "sim-004"], what="inverted filter")
        await pilot.press("enter")
        await wait_for(lambda: "filter: !eu-west" in text(app, "#status"), what="filter in the status line")
        await pilot.press("escape")  # clears the filter
        await wait_for(lambda: len(names(app)) == 4, what="filter cleared")
        await pilot.press("slash", *"-l region=us-east-1", "enter")
        await wait_for(lambda: names(app) == ["sim-002", "sim-004"], what="label filter")
        # letters typed into the filter are text, not commands: q does not quit, 5 does not switch
        await pilot.press("slash", "q", "5")
        await pilot.pause()
        assert app.is_running and isinstance(app.screen, FleetScreen)


async def test_number_keys_switch_views_esc_goes_back_help_and_quit() -> None:
    app = DashboardApp(fleet_state(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for key, view in (("2", "cluster"), ("3", "sync")):
            await pilot.press(key)
            assert app.view == view and app.screen.name == view
        await pilot.press("4")
        assert isinstance(app.screen, CanariesScreen)
        await pilot.press("5")
        assert isinstance(app.screen, EventsScreen)
        await wait_for(lambda: app.screen.query_one(RowTable).row_count == 2, what="events")
        assert [str(c) for c in app.screen.query_one(RowTable).get_row_at(0)][1:3] == ["health", "cluster/sim-002"]
        await pilot.press("escape")
        assert isinstance(app.screen, CanariesScreen)
        await pilot.press("1")
        assert isinstance(app.screen, FleetScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "1 fleet" in text(app, "#help")
        await pilot.press("escape")
        assert isinstance(app.screen, FleetScreen)
        await pilot.press("q")
        await pilot.pause()
    assert not app.is_running


async def test_events_filter_by_kind_and_text() -> None:
    app = DashboardApp(fleet_state(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("5", "slash", *"kind:health sim-003", "enter")
        await wait_for(lambda: app.screen.query_one(RowTable).row_count == 1, what="filtered events")
        await pilot.press("slash", "ctrl+u", *"kind:canary", "enter")
        await wait_for(lambda: app.screen.query_one(RowTable).row_count == 0, what="no canary events")


async def test_redraws_are_coalesced_into_the_tick() -> None:
    state = fleet_state()
    app = DashboardApp(state, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        before = app.redraws
        for i in range(2_000):
            state.apply(
                SyncEventBatch(
                    cluster="sim-001",
                    timestamp=NOW,
                    events=[SyncEvent(cluster="sim-001", timestamp=NOW, resource="v1/pods", ok=i % 2 == 0)],
                )
            )
        await pilot.pause()
        assert app.redraws - before <= 1  # 2,000 updates, no redraw of their own
        await wait_for(lambda: "50.0%" in str(app.screen.query_one(RowTable).get_row_at(0)[4]), what="redrawn")


@pytest.mark.parametrize("no_color", [False, True])
async def test_fits_80x24_with_and_without_colour(no_color: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    app = DashboardApp(fleet_state(40), clock=lambda: NOW, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.screen.query_one(RowTable)
        assert table.row_count == 40
        assert app.screen.size.width == 80 and app.screen.size.height == 24
        assert table.region.bottom <= 24 and table.region.height >= 10  # the table has most of the screen
        assert "[read-only]" in app.sub_title
        svg = app.export_screenshot()
        assert "sim-001" in svg and "HEALTH" in svg


async def test_tune_gc_freezes_the_start_up_heap_once() -> None:
    import gc

    threshold = gc.get_threshold()
    app = DashboardApp(fleet_state(), clock=lambda: NOW, tune_gc=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(lambda: gc.get_freeze_count() > 0, what="the heap frozen")
            await pilot.pause()
            assert gc.get_threshold()[0] == 20_000
    finally:
        gc.unfreeze()  # the test process's heap back in the collector's reach
        gc.set_threshold(*threshold)
