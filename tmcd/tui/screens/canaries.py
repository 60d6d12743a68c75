"""View 4, canaries: one row per rollout, sortable and filterable; Enter opens its detail; P promote,
F promote in full, A abort, R retry (the app confirms, honours --read-only and shows the reply)."""

from __future__ import annotations

from collections import Counter

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from tmcd.resources.canary import CanaryRollout
from tmcd.tui.actions import canary_action
from tmcd.tui.canaries import CanaryRow, filter_canaries, next_canary_column, sort_canaries
from tmcd.tui.models import human_age
from tmcd.tui.rowtable import RowTable
from tmcd.tui.screens.canary_detail import PHASE_STYLE, CanaryDetail, phase_text
from tmcd.tui.screens.common import VIEW_CSS, FilterBox, FilteredList, connection_text
from tmcd.tui.state import DashboardState

COLUMNS = (
    ("NAME", "name"),
    ("PHASE", "phase"),
    ("STEP", "step"),
    ("WEIGHT", "weight"),
    ("APPLIED", "applied"),
    ("CLUSTERS", "clusters"),
    ("AGE", "age"),
    ("MESSAGE", None),
)
"""Header -> sort column (tmcd.tui.canaries.CANARY_SORT_KEYS); the message does not sort."""
EMPTY_CANARIES = "No canary rollouts: `kubectl tmc apply -f` one, or run `make demo`."
CLUSTERS_SHOWN = 2
"""Cluster names in the CLUSTERS cell; the rest are counted (``+3``)."""
_LIST_ONLY = {"filter", "sort", "reverse"}
_ORDER = {phase: i for i, phase in enumerate(PHASE_STYLE)}


def clusters_cell(clusters: tuple[str, ...]) -> str:
    """``sim-001,sim-002 +3``; ``<none>`` when there are none."""
    if not clusters:
        return "<none>"
    more = len(clusters) - CLUSTERS_SHOWN
    return ",".join(clusters[:CLUSTERS_SHOWN]) + (f" +{more}" if more > 0 else "")


def weight_cells(r: CanaryRow) -> tuple[str, Text]:
    """The set weight, and the applied one (yellow while the router has not caught up)."""
    if r.applied_weight is None:
        return f"{r.weight}%", Text("-", "dim")
    return f"{r.weight}%", Text(f"{r.applied_weight}%", "" if r.applied_weight == r.weight else "yellow")


class CanariesScreen(FilteredList):
    """The rollouts table, or one rollout's detail; the app calls :meth:`show` at most four times a second."""

    BINDINGS = [
        *FilteredList.LIST_BINDINGS,
        Binding("P", "canary('promote')", "Promote", key_display="P"),
        Binding("F", "canary('promote', True)", "Full", key_display="F"),
        Binding("A", "canary('abort')", "Abort", key_display="A"),
        Binding("R", "canary('retry')", "Retry", key_display="R"),
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
        Binding("escape", "back", "Back", show=False),
    ]

    DEFAULT_CSS = VIEW_CSS

    def __init__(self, state: DashboardState) -> None:
        super().__init__("canaries", next_canary_column)
        self.state = state
        self.shown: list[str] = []
        """``namespace/name`` of each row, in table order."""
        self.detail: str | None = None
        """The rollout whose detail is open (``namespace/name``), None for the list."""

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield FilterBox(placeholder="filter: regex, !regex, -l key=value", id="filter")
        yield RowTable(*(h for h, _ in COLUMNS), id="table")
        yield Static(EMPTY_CANARIES, id="empty")
        yield CanaryDetail(id="detail")
        yield Footer()

    def on_screen_resume(self) -> None:
        (self.query_one(CanaryDetail) if self.detail else self.query_one(RowTable)).focus()

    def on_mount(self) -> None:
        self.redraw()  # a redraw that came before the widgets existed was skipped

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Filter and sort belong to the list: off (and out of the footer) while the detail is open."""
        return not (self.detail is not None and action in _LIST_ONLY)

    # --- drawing ------------------------------------------------------------------------------------------------

    def heading(self, rows: list[CanaryRow], shown: int, now: float) -> Text:
        """Three lines: the view, sort and filter; rollouts per phase and the connection; what is shown."""
        arrow = "↓" if self.descending else "↑"
        extra = f"  filter: {self.filter.text}" if self.filter.text else ""
        if self.filter.error:
            extra += f" ({self.filter.error})"
        where = f"  {self.detail}" if self.detail else f"  sort: {self.sort_column}{arrow}{extra}"
        line = Text.assemble(("tmcd · canaries", "bold"), where, "\n")
        for phase, n in sorted(Counter(r.phase for r in rows).items(), key=lambda kv: _ORDER.get(kv[0], len(_ORDER))):
            line.append_text(phase_text(f"{phase} {n}"))
            line.append("  ")
        line.append_text(connection_text(self.state))
        if self.detail:
            line.append("\nEsc back  P promote  F full  A abort  R retry", "dim")
        else:
            line.append(f"\n{shown} of {len(rows)} rollout{'' if len(rows) == 1 else 's'}", "dim")
        return line

    def show(self, now: float) -> None:
        """Redraw from the state at ``now``."""
        if not self.is_mounted:  # just switched to: the app's timer can come before the widgets exist
            return
        all_rows = self.state.canary_rows(now)
        if self.detail is not None:
            self.query_one("#status", Static).update(self.heading(all_rows, 1, now))
            self.query_one(CanaryDetail).show(
                self.detail, self.rollout(self.detail), self.state.weights.points(self.detail), now
            )
            return
        rows = sort_canaries(filter_canaries(all_rows, self.filter), self.sort_column, self.descending)
        self.query_one("#status", Static).update(self.heading(all_rows, len(rows), now))
        empty = not all_rows
        self.query_one("#empty", Static).display = empty
        table = self.query_one(RowTable)
        table.display = not empty
        cells = []
        for r in rows:
            weight, applied = weight_cells(r)
            phase = Text(r.phase, PHASE_STYLE.get(r.phase, ""))
            where = clusters_cell(r.clusters)
            cells.append((r.ref, phase, r.step, weight, applied, where, human_age(r.age), r.message))
        self.shown = [r.ref for r in rows]
        table.set_rows(self.shown, cells)

    def rollout(self, ref: str) -> CanaryRollout | None:
        """The rollout ``namespace/name`` (the state is keyed by KV key, so look it up by its metadata)."""
        for ro in self.state.canaries.values():
            if f"{ro.metadata.namespace}/{ro.metadata.name}" == ref:
                return ro
        return None

    def selected(self) -> str | None:
        """The rollout the keys act on: the open detail's, else the one under the cursor."""
        if self.detail is not None:
            return self.detail
        return self.query_one(RowTable).cursor_key

    # --- the detail ---------------------------------------------------------------------------------------------

    def on_row_table_row_selected(self, event: RowTable.RowSelected) -> None:
        """Enter (or a click) on a row opens its detail."""
        self.open_detail(event.key)

    def open_detail(self, ref: str) -> None:
        """Show ``namespace/name``'s detail in place of the list."""
        self.detail = ref
        for widget in (self.query_one(RowTable), self.query_one("#empty", Static)):
            widget.display = False
        self.query_one(FilterBox).close()
        detail = self.query_one(CanaryDetail)
        detail.add_class("-shown")
        detail.scroll_home(animate=False)
        detail.focus()
        self.refresh_bindings()
        self.redraw()

    def close_detail(self) -> None:
        """Back to the list, the cursor on the rollout that was open."""
        self.detail = None
        self.query_one(CanaryDetail).remove_class("-shown")
        self.query_one(RowTable).display = True
        self.query_one(RowTable).focus()
        self.refresh_bindings()
        self.redraw()

    # --- keys ---------------------------------------------------------------------------------------------------

    def action_canary(self, verb: str, full: bool = False) -> None:
        """P, F, A, R: ask the app to confirm and send the action for the selected rollout."""
        ref = self.selected()
        if ref is None:
            self.notify("no rollout selected", severity="warning")
            return
        namespace, _, name = ref.partition("/")
        self.app.act(canary_action(namespace, name, verb, full=full))  # type: ignore[attr-defined]

    async def action_back(self) -> None:
        """Esc: close the detail; else close the filter box (clearing the filter); else the previous view."""
        if self.detail is not None:
            self.close_detail()
        elif not self.clear_filter():
            await self.app.run_action("previous_view")

    def action_cursor(self, direction: str) -> None:
        if self.detail is not None:
            detail = self.query_one(CanaryDetail)
            detail.scroll_down() if direction == "down" else detail.scroll_up()
            return
        table = self.query_one(RowTable)
        table.action_cursor_down() if direction == "down" else table.action_cursor_up()
