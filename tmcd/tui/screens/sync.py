"""View 3, sync: one row per resource kind across the fleet, and the clusters with their paused
state, which ``p`` pause, ``r`` resume and ``f`` force (a full re-sync) act on.

The actions go to the *marked* clusters (space marks and unmarks the highlighted cluster row),
or, with none marked, to the highlighted cluster row; each cluster gets its own confirmation
(the app asks, honours ``--read-only`` and sends).  The latest acknowledgements are shown at
the bottom.  Esc clears the marks, then goes back.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from tmcd.contracts.messages import ControlReply
from tmcd.tui.actions import sync_action
from tmcd.tui.models import FleetRow
from tmcd.tui.rowtable import Cell, LazyRows, RowTable
from tmcd.tui.screens.cluster import latency
from tmcd.tui.screens.common import EMPTY_FLEET, VIEW_CSS, health_cell, ratio, status_line
from tmcd.tui.state import DashboardState

SHOWN_ACKS = 2
"""Acknowledgements shown (the newest)."""
CSS = (
    VIEW_CSS
    + """
#kinds { height: 8; }
#clusters { height: 1fr; }
#acks { height: 2; }
"""
)
VERBS = {"p": "pause", "r": "resume", "f": "force"}


def ack_text(acks: Sequence[ControlReply]) -> Text:
    """The newest acknowledgements, newest last: ``✓ sim-001: paused`` or ``✕ sim-002: refused (why)``."""
    if not acks:
        return Text("acknowledgements appear here  (space marks clusters; p pause, r resume, f force)", "dim")
    out = Text()
    for i, a in enumerate(acks[-SHOWN_ACKS:]):
        text = a.message or a.state or ("done" if a.ok else "refused")
        out.append("\n" if i else "")
        out.append("✓ ok " if a.ok else "✕ refused ", "green" if a.ok else "bold red")
        out.append(f"{a.target}: {text}" + (f" [{a.state}]" if a.state and a.state != text else ""))
    return out


class SyncScreen(Screen[None]):
    """Per-kind sync figures and the clusters to pause, resume or force."""

    BINDINGS = [
        Binding("p", "sync('pause')", "Pause"),
        Binding("r", "sync('resume')", "Resume"),
        Binding("f", "sync('force')", "Force"),
        Binding("space", "mark", "Mark"),
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
        Binding("escape", "back", "Back", show=False),
    ]

    DEFAULT_CSS = CSS

    def __init__(self, state: DashboardState) -> None:
        super().__init__(name="sync")
        self.state = state
        self.marked: set[str] = set()
        self.shown: list[str] = []
        """Cluster names in the cluster table's order."""

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield RowTable("RESOURCE", "RATE/s", "ERRORS", "ERR%", "P50", "P99", id="kinds")
        yield RowTable(" ", "CLUSTER", "HEALTH", "PAUSED", "RATE/s", "ERRORS", "ERR%", id="clusters")
        yield Static(EMPTY_FLEET, id="empty")
        yield Static(id="acks")
        yield Footer()

    def on_screen_resume(self) -> None:
        self.query_one("#clusters", RowTable).focus()

    def show(self, now: float) -> None:
        """Redraw from the state at ``now``."""
        marks = f"  marked: {len(self.marked)}" if self.marked else ""
        self.query_one("#status", Static).update(status_line(self.state, now, f"sync  last 60s{marks}"))
        figures = self.state.sync.kinds(now)
        self.query_one("#kinds", RowTable).set_rows(
            [k.name for k in figures],
            [
                (k.name, f"{k.rate:.1f}", str(k.errors), ratio(k.error_ratio), latency(k.p50), latency(k.p99))
                for k in figures
            ],
        )
        rows = self.state.fleet.rows(now)
        self.query_one("#empty", Static).display = not rows
        clusters = self.query_one("#clusters", RowTable)
        clusters.display = bool(rows)
        self.marked &= {r.name for r in rows}  # a cluster that left the fleet is no longer marked
        marked = self.marked

        def cells(r: FleetRow) -> tuple[Cell, ...]:
            # no percentiles per cluster here: they cost 4x the counts at 1,000 clusters (the cluster view has them)
            fig = self.state.sync.cluster(r.name, now, latency=False)
            return (
                Text("✓", "bold") if r.name in marked else " ",
                r.name,
                health_cell(r.health, ""),
                Text("yes", "yellow") if r.paused else "no",
                f"{fig.rate:.1f}",
                str(fig.errors),
                ratio(fig.error_ratio),
            )

        self.shown = [r.name for r in rows]
        clusters.set_rows(self.shown, LazyRows(rows, cells))
        self.query_one("#acks", Static).update(ack_text(getattr(self.app, "acks", [])))

    def highlighted(self) -> str | None:
        """The cluster of the highlighted row of the cluster table."""
        return self.query_one("#clusters", RowTable).cursor_key

    def targets(self) -> list[str]:
        """What an action applies to: the marked clusters, else the highlighted one."""
        if self.marked:
            return sorted(self.marked)
        one = self.highlighted()
        return [one] if one is not None else []

    def action_sync(self, verb: str) -> None:
        """``p``/``r``/``f``: ask to pause, resume or force each target cluster."""
        clusters = self.targets()
        if not clusters:
            self.notify("no cluster to act on: the fleet is empty", severity="warning")
            return
        act = self.app.act  # type: ignore[attr-defined]
        # pushed in reverse so the dialogs come up in name order (the last pushed is on top)
        for name in reversed(clusters):
            act(sync_action(name, verb))

    def action_mark(self) -> None:
        """Space: mark or unmark the highlighted cluster."""
        name = self.highlighted()
        if name is not None:
            self.marked ^= {name}
            self.query_one("#clusters", RowTable).action_cursor_down()
            self.app.request_redraw()  # type: ignore[attr-defined]

    async def action_back(self) -> None:
        """Esc: clear the marks, else the previous view."""
        if self.marked:
            self.marked.clear()
            self.app.request_redraw()  # type: ignore[attr-defined]
        else:
            await self.app.run_action("previous_view")

    def action_cursor(self, direction: str) -> None:
        table = self.focused if isinstance(self.focused, RowTable) else self.query_one("#clusters", RowTable)
        table.action_cursor_down() if direction == "down" else table.action_cursor_up()
