"""RowTable, the dashboard's table: only the rows on screen are formatted and drawn, the cursor
follows its row across updates, and the keys move it as in k9s."""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.app import App, ComposeResult

from tmcd.tui.rowtable import Cell, LazyRows, RowTable


class TableApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.selected: list[str] = []

    def compose(self) -> ComposeResult:
        yield RowTable("NAME", "HEALTH", "NOTE", id="t")

    def on_row_table_row_selected(self, event: RowTable.RowSelected) -> None:
        assert event.control is self.query_one(RowTable)
        self.selected.append(event.key)


def rows(n: int, formatted: list[int] | None = None) -> tuple[list[str], LazyRows[int]]:
    def fmt(i: int) -> tuple[Cell, ...]:
        if formatted is not None:
            formatted.append(i)
        return (f"c{i:04d}", Text("Healthy", "green"), "x" * (i % 7))

    return [f"c{i:04d}" for i in range(n)], LazyRows(list(range(n)), fmt)


def screen_lines(app: App[None]) -> list[str]:
    table = app.query_one(RowTable)
    return [table.render_line(y).text.rstrip() for y in range(table.size.height)]


async def test_only_the_rows_on_screen_are_formatted_and_drawn() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(RowTable)
        formatted: list[int] = []
        table.set_rows(*rows(10_000, formatted))
        await pilot.pause()
        assert table.row_count == 10_000
        assert len(set(formatted)) <= 11  # the 11 rows under the header, of 10,000
        lines = screen_lines(app)
        assert lines[0].split() == ["NAME", "HEALTH", "NOTE"] and lines[1].split()[0] == "c0000"
        await pilot.press("end")
        assert table.cursor_key == "c9999" and screen_lines(app)[-1].split()[0] == "c9999"
        assert len(set(formatted)) <= 22


async def test_keys_move_the_cursor_and_enter_selects() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(RowTable)
        table.set_rows(*rows(100))
        table.focus()
        await pilot.press("j", "down", "k")
        assert table.cursor_row == 1
        await pilot.press("pagedown")
        assert table.cursor_row == 12  # a page is the height under the header
        await pilot.press("pageup", "pageup")
        assert table.cursor_row == 0
        await pilot.press("G")
        assert table.cursor_row == 99
        await pilot.press("g", "ctrl+end")
        assert table.cursor_row == 99
        await pilot.press("home", "enter")
        assert app.selected == ["c0000"]
        await pilot.press("up")  # stays on the first row
        assert table.cursor_row == 0
        await pilot.click(RowTable, offset=(3, 3))  # the third row: highlighted; again: selected
        assert table.cursor_row == 2 and app.selected == ["c0000"]
        await pilot.click(RowTable, offset=(3, 3))
        assert app.selected == ["c0000", "c0002"]


async def test_the_cursor_follows_its_row_and_stays_put_when_it_is_gone() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(RowTable)
        table.set_rows(["a", "b", "c"], [("a",), ("b",), ("c",)])
        table.move_cursor(row=1)
        table.set_rows(["z", "a", "b", "c"], [("z",), ("a",), ("b",), ("c",)])
        assert table.cursor_key == "b"
        table.set_rows(["z", "a", "c"], [("z",), ("a",), ("c",)])
        assert table.cursor_row == 2 and table.cursor_key == "c"
        table.set_rows([], [])
        assert table.cursor_key is None and table.row_count == 0
        await pilot.press("down", "enter")
        assert app.selected == []


async def test_columns_fit_what_is_shown_and_scroll_sideways_keeping_the_first() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(RowTable)
        table.set_rows(*rows(50))
        table.focus()
        await pilot.pause()
        header = screen_lines(app)[0]
        assert header.index("HEALTH") == 1 + len("c0000") + 2  # the widest NAME on screen, then 2 spaces
        await pilot.press("l")
        assert screen_lines(app)[0].split() == ["NAME", "NOTE"]
        await pilot.press("l", "l", "h", "left", "left")
        assert screen_lines(app)[0].split() == ["NAME", "HEALTH", "NOTE"]
        table.set_columns("A", "B", "C")
        assert screen_lines(app)[0].split() == ["A", "B", "C"] and table.columns == ("A", "B", "C")


@pytest.mark.parametrize("no_color", [False, True])
async def test_the_cursor_row_shows_without_colour(no_color: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    app = TableApp()
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(RowTable)
        table.set_rows(*rows(5))
        table.focus()
        await pilot.pause()
        cursor = table.render_line(1)
        other = table.render_line(2)
        assert cursor.text.split()[0] == "c0000"
        styles = {seg.style for seg in cursor if seg.text.strip()}
        assert styles != {seg.style for seg in other if seg.text.strip()}
        if no_color:
            assert all(s is not None and s.reverse for s in styles)
