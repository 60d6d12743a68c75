"""View 1, the fleet: one row per cluster, sortable and filterable, with the health header."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from tmcd.tui.models import FleetRow, filter_rows, human_age, next_column, sort_rows
from tmcd.tui.rowtable import Cell, LazyRows, RowTable
from tmcd.tui.screens.cluster import ClusterScreen
from tmcd.tui.screens.common import (
    EMPTY_FLEET,
    VIEW_CSS,
    FilterBox,
    FilteredList,
    health_cell,
    percent,
    ratio,
    status_line,
)
from tmcd.tui.state import DashboardState

COLUMNS = (
    ("NAME", "name"),
    ("REGION", "region"),
    ("HEALTH", "health"),
    ("HEARTBEAT", "heartbeat"),
    ("ERRORS", "errors"),
    ("QUEUE", "queue"),
    ("CPU", "cpu"),
    ("MEM", "memory"),
    ("RES", "resources"),
    ("PAUSED", "paused"),
)
"""Header -> sort column (tmcd.tui.models.SORT_KEYS)."""


class FleetScreen(FilteredList):
    """The fleet table; the app calls :meth:`show` at most four times a second."""

    BINDINGS = [
        *FilteredList.LIST_BINDINGS,
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
        Binding("escape", "back", "Back", show=False),
    ]

    DEFAULT_CSS = VIEW_CSS

    def __init__(self, state: DashboardState) -> None:
        super().__init__("fleet", next_column)
        self.state = state
        self.shown: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield FilterBox(placeholder="filter: regex, !regex, -l key=value", id="filter")
        yield RowTable(*(h for h, _ in COLUMNS), id="table")
        yield Static(EMPTY_FLEET, id="empty")
        yield Footer()

    def on_screen_resume(self) -> None:
        self.query_one(RowTable).focus()

    def heading(self) -> str:
        arrow = "↓" if self.descending else "↑"
        extra = f"  filter: {self.filter.text}" if self.filter.text else ""
        if self.filter.error:
            extra += f" ({self.filter.error})"
        return f"fleet  sort: {self.sort_column}{arrow}{extra}"

    def show(self, now: float) -> None:
        """Redraw from the state at ``now``."""
        self.query_one("#status", Static).update(status_line(self.state, now, self.heading()))
        all_rows = self.state.fleet.rows(now)
        rows = sort_rows(filter_rows(all_rows, self.filter), self.sort_column, self.descending)
        empty = not all_rows
        self.query_one("#empty", Static).display = empty
        table = self.query_one(RowTable)
        table.display = not empty
        self.shown = [r.name for r in rows]
        table.set_rows(self.shown, LazyRows(rows, _cells))

    def highlighted(self) -> str | None:
        """The cluster of the highlighted row (None when the table is empty)."""
        return self.query_one(RowTable).cursor_key

    async def on_row_table_row_selected(self, event: RowTable.RowSelected) -> None:
        """Enter on a row: the cluster view of that cluster."""
        screen = self.app.get_screen("cluster")
        if isinstance(screen, ClusterScreen):
            screen.cluster = event.key
            await self.app.run_action("view('cluster')")

    async def action_back(self) -> None:
        """Esc: close the filter box (clearing the filter), else go back to the previous view."""
        if not self.clear_filter():
            await self.app.run_action("previous_view")

    def action_cursor(self, direction: str) -> None:
        table = self.query_one(RowTable)
        table.action_cursor_down() if direction == "down" else table.action_cursor_up()


def _cells(r: FleetRow) -> tuple[Cell, ...]:
    return (
        r.name,
        r.region or "-",
        health_cell(r.health, r.reason),
        human_age(r.heartbeat_age),
        ratio(r.error_ratio),
        str(r.queue_depth),
        percent(r.cpu),
        percent(r.memory),
        str(r.resources),
        Text("yes", "yellow") if r.paused else "no",
    )
