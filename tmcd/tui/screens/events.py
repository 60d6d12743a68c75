"""View 5, events: health, canary, rollback, placement and connection events, newest first."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from tmcd.tui.eventlog import parse_event_filter
from tmcd.tui.models import human_age
from tmcd.tui.rowtable import LazyRows, RowTable
from tmcd.tui.screens.common import VIEW_CSS, FilterBox, status_line
from tmcd.tui.state import DashboardState

SHOWN = 1_000
"""Rows put in the table at once (the log keeps more; filter to see older ones)."""


class EventsScreen(Screen[None]):
    """The event list; ``/`` filters by ``kind:a,b`` and text."""

    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
        Binding("escape", "back", "Back", show=False),
    ]

    DEFAULT_CSS = VIEW_CSS

    def __init__(self, state: DashboardState) -> None:
        super().__init__(name="events")
        self.state = state
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield FilterBox(placeholder="filter: kind:health,canary,rollback,placement,connection and text", id="filter")
        yield RowTable("AGE", "KIND", "OBJECT", "REASON", "MESSAGE", id="table")
        yield Static("No events yet.", id="empty")
        yield Footer()

    def on_screen_resume(self) -> None:
        self.query_one(RowTable).focus()

    def show(self, now: float) -> None:
        """Redraw from the state at ``now``."""
        extra = f"  filter: {self.filter_text}" if self.filter_text else ""
        self.query_one("#status", Static).update(status_line(self.state, now, f"events{extra}"))
        kinds, text = parse_event_filter(self.filter_text)
        rows = self.state.events.rows(kinds, text)[:SHOWN]
        empty = len(self.state.events) == 0
        self.query_one("#empty", Static).display = empty
        table = self.query_one(RowTable)
        table.display = not empty
        cells = LazyRows(
            rows,
            lambda r: (
                human_age(now - r.timestamp),
                Text(r.kind, "bold red" if r.warning else ""),
                r.object,
                r.reason,
                r.message,
            ),
        )
        table.set_rows([str(i) for i in range(len(rows))], cells)  # keyed by position: the cursor keeps its row

    def redraw(self) -> None:
        self.app.request_redraw()  # type: ignore[attr-defined]

    def action_filter(self) -> None:
        box = self.query_one(FilterBox)
        box.open()
        box.value = self.filter_text

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(FilterBox).close()
        self.query_one(RowTable).focus()

    async def action_back(self) -> None:
        box = self.query_one(FilterBox)
        if box.has_class("-shown") or self.filter_text:
            box.close()
            box.value = ""
            self.filter_text = ""
            self.query_one(RowTable).focus()
            self.redraw()
        else:
            await self.app.run_action("previous_view")

    def action_cursor(self, direction: str) -> None:
        table = self.query_one(RowTable)
        table.action_cursor_down() if direction == "down" else table.action_cursor_up()
