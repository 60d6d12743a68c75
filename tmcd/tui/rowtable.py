"""A table that draws only the rows on screen, so a redraw costs the same at 20 clusters or 1,000.

Textual's DataTable renders and measures every row it holds each time a cell changes (about
100 ms at 1,000 rows on a 2-core machine); k9s-style views replace all their rows several
times a second.  :class:`RowTable` takes the rows as a sequence, which may format them only
when asked (:class:`LazyRows`), sizes its columns from the rows on screen, and renders the
header and those rows, one line each, when Textual asks for them (the Line API).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Click, Resize
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

Cell = str | Text
"""A cell: plain text, or Rich Text with its own colours."""
GAP = 2
"""Spaces between columns."""
_REVERSE = Style(reverse=True)


T = TypeVar("T")


def _width(cell: Cell) -> int:
    if isinstance(cell, Text):
        return cell.cell_len
    return len(cell) if cell.isascii() else cell_len(cell)


class Rows(Protocol):
    """What :meth:`RowTable.set_rows` takes: a list of cell tuples, or :class:`LazyRows`."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> tuple[Cell, ...]: ...


class LazyRows(Generic[T]):
    """``items`` shown as rows by ``fmt``, each formatted the first time it is asked for: a
    redraw of 1,000 clusters formats the 40 on screen."""

    def __init__(self, items: Sequence[T], fmt: Callable[[T], tuple[Cell, ...]]) -> None:
        self._items = items
        self._fmt = fmt
        self._done: dict[int, tuple[Cell, ...]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int, /) -> tuple[Cell, ...]:
        row = self._done.get(index)
        if row is None:
            row = self._done[index] = self._fmt(self._items[index])
        return row


class RowTable(Widget, can_focus=True):
    """Rows with a cursor; arrows, j/k, PgUp/PgDn, Home/End move it and Enter selects the row;
    left/right (h/l) scroll the columns after the first, which stays (the name)."""

    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home,ctrl+home,g", "first", "First", show=False),
        Binding("end,ctrl+end,G", "last", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
        Binding("left,h", "columns(-1)", "Left", show=False),
        Binding("right,l", "columns(1)", "Right", show=False),
    ]
    COMPONENT_CLASSES = {"rowtable--header", "rowtable--cursor", "rowtable--even"}
    DEFAULT_CSS = """
    RowTable {
        height: 1fr;
        background: $surface;
        color: $foreground;
        & > .rowtable--header { text-style: bold; background: $panel; }
        & > .rowtable--cursor { background: $block-cursor-blurred-background; }
        &:focus > .rowtable--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        &:dark > .rowtable--even { background: $surface-darken-1 40%; }
        &:ansi > .rowtable--header { background: ansi_bright_blue; color: ansi_default; }
    }
    """

    class RowSelected(Message):
        """Enter (or a click) on a row."""

        def __init__(self, table: RowTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key
            """The row's key (a cluster name, a rollout)."""

        @property
        def control(self) -> RowTable:
            """The table the row is in."""
            return self.table

    def __init__(self, *columns: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self._labels: tuple[str, ...] = columns
        self._keys: list[str] = []
        self._rows: Rows = []
        self._widths: list[int] = [cell_len(c) for c in columns]
        self.cursor_row = 0
        """Index of the highlighted row (0 when the table is empty)."""
        self._top = 0
        self.first_column = 1
        """The column shown after the first one (left/right scroll the columns)."""

    # -- content -----------------------------------------------------------

    @property
    def columns(self) -> tuple[str, ...]:
        """The column headers."""
        return self._labels

    def set_columns(self, *columns: str) -> None:
        """Replace the column headers."""
        self._labels = columns
        self._measure()
        self.refresh()

    def set_rows(self, keys: Sequence[str], rows: Rows) -> None:
        """Replace every row (``rows[i]`` is keyed ``keys[i]``); the cursor stays on the same key
        when it is still there."""
        selected = self.cursor_key
        self._keys = list(keys)
        self._rows = rows
        if selected is not None and self._keys[self.cursor_row : self.cursor_row + 1] != [selected]:
            with contextlib.suppress(ValueError):  # gone: the cursor stays at its index
                self.cursor_row = self._keys.index(selected)
        self._clamp()
        self.refresh()

    def _measure(self) -> None:
        """Column widths: the header's, or the widest cell on screen."""
        widths = [cell_len(c) for c in self._labels]
        for index in range(self._top, min(len(self._rows), self._top + self._page)):
            for i, cell in enumerate(self._rows[index][: len(widths)]):
                w = _width(cell)
                if w > widths[i]:
                    widths[i] = w
        self._widths = widths

    @property
    def row_count(self) -> int:
        """How many rows the table holds (on screen or not)."""
        return len(self._rows)

    @property
    def keys(self) -> list[str]:
        """Row keys, in display order."""
        return self._keys

    def get_row_at(self, index: int) -> tuple[Cell, ...]:
        """The cells of row ``index``."""
        return self._rows[index]

    @property
    def cursor_key(self) -> str | None:
        """The key of the highlighted row (None when empty)."""
        return self._keys[self.cursor_row] if 0 <= self.cursor_row < len(self._keys) else None

    # -- the cursor --------------------------------------------------------

    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        """Highlight row ``row`` (clamped), scrolling it into view."""
        self.cursor_row = row
        self._clamp()
        self.refresh()

    @property
    def _page(self) -> int:
        return max(1, self.size.height - 1)

    def _clamp(self) -> None:
        self.cursor_row = max(0, min(self.cursor_row, len(self._rows) - 1))
        page = self._page
        if self.cursor_row < self._top:
            self._top = self.cursor_row
        elif self.cursor_row >= self._top + page:
            self._top = self.cursor_row - page + 1
        self._top = max(0, min(self._top, max(0, len(self._rows) - page)))
        self._measure()

    def action_cursor_up(self) -> None:
        """One row up."""
        self.move_cursor(row=self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        """One row down."""
        self.move_cursor(row=self.cursor_row + 1)

    def action_page_up(self) -> None:
        """One screenful up."""
        self.move_cursor(row=self.cursor_row - self._page)

    def action_page_down(self) -> None:
        """One screenful down."""
        self.move_cursor(row=self.cursor_row + self._page)

    def action_first(self) -> None:
        """The first row."""
        self.move_cursor(row=0)

    def action_last(self) -> None:
        """The last row."""
        self.move_cursor(row=len(self._rows) - 1)

    def action_columns(self, step: int) -> None:
        """Scroll the columns after the first by ``step``."""
        self.first_column = max(1, min(len(self._labels) - 1, self.first_column + step))
        self.refresh()

    def action_select(self) -> None:
        """Post :class:`RowSelected` for the highlighted row."""
        key = self.cursor_key
        if key is not None:
            self.post_message(self.RowSelected(self, key))

    def on_click(self, event: Click) -> None:
        """A click highlights the row; a second click on it selects it."""
        index = self._top + event.y - 1
        if event.y >= 1 and 0 <= index < len(self._rows):
            if index == self.cursor_row:
                self.action_select()
            self.move_cursor(row=index)

    def on_resize(self, event: Resize) -> None:
        """Keep the cursor on screen at the new height (and size the columns for what is shown)."""
        self._clamp()

    # -- drawing -----------------------------------------------------------

    def _line(self, cells: Sequence[Cell], style: Style) -> Text:
        line = Text(style=style, no_wrap=True, end="")
        shown = [0, *range(self.first_column, len(self._widths))]
        for n, i in enumerate(shown):
            if i >= len(cells):
                break
            cell = cells[i]
            if isinstance(cell, Text):
                line.append_text(cell)
            else:
                line.append(cell)
            if n < len(shown) - 1:
                line.append(" " * (self._widths[i] - _width(cell) + GAP))
        return line

    def render_line(self, y: int) -> Strip:
        """Line ``y``: the header, or the row it shows (the Line API: only lines on screen are drawn)."""
        width = self.size.width
        base = self.rich_style
        if y == 0:
            style = base + self.get_component_rich_style("rowtable--header")
            text = self._line(self._labels, style)
        else:
            index = self._top + y - 1
            if index >= len(self._rows):
                return Strip.blank(width, base)
            if index == self.cursor_row:
                style = base + self.get_component_rich_style("rowtable--cursor")
                if self.app.no_color:
                    style += _REVERSE  # without colours, the cursor is the reversed row
            elif index % 2:
                style = base + self.get_component_rich_style("rowtable--even")
            else:
                style = base
            text = self._line(self._rows[index], style)
        text.pad_left(1)
        strip = Strip(Segment.apply_style(text.render(self.app.console), base), text.cell_len)
        return strip.crop_extend(0, width, style)
