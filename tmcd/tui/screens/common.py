"""What every view shares: the status line, health colours, the filter box and cell formats."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input

from tmcd.tui.models import RowFilter, health_counts, parse_filter, sparkline
from tmcd.tui.rowtable import RowTable
from tmcd.tui.state import DashboardState

HEALTH_STYLE = {"Healthy": "green", "Degraded": "yellow", "Unhealthy": "bold red", "Unknown": "dim"}
VIEW_CSS = """
#status { height: 3; }
#table { height: 1fr; }
#empty { height: 1fr; padding: 1 2; }
"""
"""A view: three status lines, the table taking the rest, the key footer."""
SPARK_POINTS = 24
SPARK_STEP = 5
"""The sparklines cover the last two minutes in 5 s steps."""
EMPTY_FLEET = (
    "No clusters yet.\n\n"
    "Start a simulated fleet against this NATS:\n"
    "    tmcd sim --clusters 20 --rate 100\n"
    "or everything at once (tmcd, NATS, simulator, a canary):\n"
    "    make demo"
)


def connection_text(state: DashboardState) -> Text:
    """``connected``, or ``disconnected — retrying nats://... (why)``."""
    if state.connection == "connected":
        return Text("● connected", "green")
    if state.connection == "connecting":
        return Text.assemble(("○ connecting ", "yellow"), state.url)
    why = f" ({state.problem})" if state.problem else ""
    return Text.assemble(("✕ disconnected — retrying", "bold red"), f" {state.url}{why}")


def status_line(state: DashboardState, now: float, view: str) -> Text:
    """The header: the view (sort, filter); counts per health status and the connection; the sparklines."""
    counts = health_counts(state.fleet.rows(now))
    rates, ratios = state.fleet.rate_series(now, SPARK_POINTS, SPARK_STEP)
    line = Text.assemble((f"tmcd · {view}", "bold"), "\n")
    for status, n in counts.items():
        line.append(f"{status} {n}", HEALTH_STYLE[status] if n else "dim")
        line.append("  ")
    line.append_text(connection_text(state))
    line.append("\nevents/s ")
    line.append(sparkline(rates), "cyan")
    line.append(f" {rates[-1] if rates else 0:,.0f}  errors ")
    line.append(sparkline(ratios, top=max(0.05, max(ratios, default=0))), "red")
    line.append(f" {ratios[-1] if ratios else 0:.1%}")
    return line


def health_cell(health: str, reason: str) -> Text:
    """Health with its colour (the word is always there: NO_COLOR loses nothing); the reason when
    something is wrong (a healthy cluster's reason says nothing and costs the width of a column)."""
    text = Text(health, HEALTH_STYLE.get(health, ""))
    if reason and health != "Healthy":
        text.append(f" {reason}", "dim")
    return text


def percent(value: float | None) -> str:
    """0.253 -> ``25%``; ``-`` when unknown."""
    return "-" if value is None else f"{value:.0%}"


def ratio(value: float | None) -> str:
    """An error ratio with one decimal of a percent."""
    return "-" if value is None else f"{value:.1%}"


class FilterBox(Input):
    """The ``/`` filter: hidden until asked for; Enter keeps the filter, Esc clears it."""

    DEFAULT_CSS = """
    FilterBox { display: none; height: 3; }
    FilterBox.-shown { display: block; }
    """

    def on_mount(self) -> None:
        self.disabled = True  # hidden: takes no focus and no keys

    def open(self) -> None:
        """Show it and give it the keyboard."""
        self.disabled = False
        self.add_class("-shown")
        self.focus()

    def close(self) -> None:
        """Hide it (the filter it holds stays until cleared)."""
        self.remove_class("-shown")
        self.disabled = True


class FilteredList(Screen[None]):
    """A view listing rows in a :class:`RowTable` (``#table``) with the ``/`` filter box and the
    ``s``/``S`` sort keys: the fleet and the canaries."""

    LIST_BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", key_display="S"),
    ]
    """The filter and sort keys, for the subclass's BINDINGS."""

    def __init__(self, name: str, next_column: Callable[[str], str]) -> None:
        super().__init__(name=name)
        self._next_column = next_column
        self.sort_column = "name"
        self.descending = False
        self.filter: RowFilter = parse_filter("")

    def redraw(self) -> None:
        """Redraw at the app's next tick."""
        self.app.request_redraw()  # type: ignore[attr-defined]

    def action_filter(self) -> None:
        """``/``: open the filter box with the current filter."""
        box = self.query_one(FilterBox)
        box.open()
        box.value = self.filter.text

    def on_input_changed(self, event: Input.Changed) -> None:
        """The filter applies as it is typed."""
        self.filter = parse_filter(event.value)
        self.redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter keeps the filter and gives the keys back to the table."""
        self.query_one(FilterBox).close()
        self.query_one(RowTable).focus()

    def clear_filter(self) -> bool:
        """Esc's first job: close the filter box and clear the filter; False when there was none."""
        box = self.query_one(FilterBox)
        if not (box.has_class("-shown") or self.filter.text):
            return False
        box.close()
        box.value = ""
        self.filter = parse_filter("")
        self.query_one(RowTable).focus()
        self.redraw()
        return True

    def action_sort(self) -> None:
        """``s``: sort by the next column."""
        self.sort_column = self._next_column(self.sort_column)
        self.redraw()

    def action_reverse(self) -> None:
        """``S``: reverse the order."""
        self.descending = not self.descending
        self.redraw()
