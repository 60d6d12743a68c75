"""View 2, one cluster: conditions, capacity bars, latency percentiles, sync rate by resource kind,
and its recent sync errors, health changes and connection events, newest first.

Enter on a fleet row opens it on that cluster; the number key 2 opens it on the cluster
last opened, else the one highlighted in the fleet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Static

from tmcd.contracts.messages import SyncerHeartbeat
from tmcd.resources.selectors import parse_quantity
from tmcd.resources.synctarget import SyncTarget
from tmcd.tui.models import human_age
from tmcd.tui.rowtable import RowTable
from tmcd.tui.screens.common import EMPTY_FLEET, VIEW_CSS, health_cell, ratio, status_line
from tmcd.tui.state import DashboardState

SHOWN_EVENTS = 200
"""Rows of the cluster's event table."""
SHOWN_KINDS = 5
BAR = 16
"""Characters of a capacity bar."""
CSS = (
    VIEW_CSS
    + """
#summary { height: 2; }
#top { height: 6; }
#capacity { width: 1fr; }
#kinds { width: 1fr; }
"""
)


@dataclass(frozen=True, slots=True)
class Capacity:
    """One resource's use: ``used`` of ``allocatable``, in base units (cores, bytes, pods)."""

    resource: str
    used: float
    allocatable: float

    @property
    def fraction(self) -> float | None:
        """Used / allocatable, or None when allocatable is unknown."""
        return self.used / self.allocatable if self.allocatable > 0 else None


def _q(quantities: dict[str, str], key: str) -> float:
    try:
        return parse_quantity(quantities[key]) if key in quantities else 0.0
    except ValueError:
        return 0.0


def capacity(target: SyncTarget | None, hb: SyncerHeartbeat | None) -> list[Capacity]:
    """CPU, memory and pods used vs allocatable: from the latest heartbeat, else the SyncTarget's status."""
    if hb is not None and (hb.allocatable.cpu > 0 or hb.allocatable.memory > 0 or hb.allocatable.pods > 0):
        a, u = hb.allocatable, hb.used
        return [Capacity("cpu", u.cpu, a.cpu), Capacity("mem", u.memory, a.memory), Capacity("pods", u.pods, a.pods)]
    used = target.status.used if target is not None else {}
    alloc = target.status.allocatable if target is not None else {}
    return [
        Capacity(label, _q(used, key), _q(alloc, key))
        for label, key in (("cpu", "cpu"), ("mem", "memory"), ("pods", "pods"))
    ]


def bar(fraction: float | None, width: int = BAR) -> Text:
    """``██████░░░░`` filled to ``fraction``; red from 90 %, yellow from 75 % (the numbers say it too)."""
    if fraction is None:
        return Text("·" * width, "dim")
    filled = max(0, min(width, round(fraction * width)))
    style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.75 else "green"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"))


def amount(resource: str, value: float) -> str:
    """A quantity as people read it: cores with one decimal, memory in Gi/Mi, pods whole."""
    if resource == "mem":
        gib = value / 2**30
        return f"{gib:.1f}Gi" if gib >= 1 else f"{value / 2**20:.0f}Mi"
    if resource == "cpu":
        return f"{value:.1f}"
    return f"{value:.0f}"


def latency(seconds: float | None) -> str:
    """``850us``, ``12ms``, ``1.25s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms" if seconds < 0.01 else f"{seconds * 1000:.0f}ms"
    return f"{seconds:.2f}s"


def conditions_text(target: SyncTarget | None) -> Text:
    """``Ready=True  SyncerReady=False (Disconnected)  ...``: the kcp conditions are all good when True."""
    if target is None or not target.status.conditions:
        return Text("conditions: none reported", "dim")
    out = Text()
    for c in target.status.conditions:
        out.append(f"{c.type}={c.status}", "green" if c.status == "True" else "bold red")
        if c.status != "True" and c.reason:
            out.append(f" ({c.reason})", "dim")
        out.append("  ")
    return out


@dataclass(frozen=True, slots=True)
class _Line:
    timestamp: float
    kind: str
    reason: str
    message: str
    warning: bool


class ClusterScreen(Screen[None]):
    """One cluster in detail; :attr:`cluster` is the one shown (None: the fleet's highlighted row)."""

    BINDINGS = [
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
        Binding("escape", "back", "Back"),
    ]

    DEFAULT_CSS = CSS

    def __init__(self, state: DashboardState) -> None:
        super().__init__(name="cluster")
        self.state = state
        self.cluster: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield Static(id="summary")
        with Horizontal(id="top"):
            yield Static(id="capacity")
            yield Static(id="kinds")
        yield RowTable("AGE", "KIND", "REASON", "MESSAGE", id="table")
        yield Static(id="empty")
        yield Footer()

    def on_screen_resume(self) -> None:
        self.query_one(RowTable).focus()

    def _selected(self) -> str | None:
        if self.cluster is not None and self.state.fleet.row(self.cluster, 0.0) is not None:
            return self.cluster
        highlighted = getattr(self.app.get_screen("fleet"), "highlighted", None)
        name = highlighted() if highlighted is not None else None
        names = self.state.fleet.names()
        return name if name is not None else (names[0] if names else None)

    def show(self, now: float) -> None:
        """Redraw from the state at ``now``."""
        name = self._selected()
        row = self.state.fleet.row(name, now) if name is not None else None
        self.query_one("#status", Static).update(status_line(self.state, now, f"cluster {name or '-'}"))
        for part in ("#summary", "#top", "#table"):
            self.query_one(part).display = row is not None
        empty = self.query_one("#empty", Static)
        empty.display = row is None
        if name is None or row is None:
            empty.update(EMPTY_FLEET if not len(self.state.fleet) else "No cluster selected: press 1, pick one, Enter.")
            return
        self.cluster = name
        target, hb = self.state.fleet.sources(name)
        summary = Text.assemble(
            (name, "bold"),
            f"  {row.region or '-'}  ",
            health_cell(row.health, row.reason),
            f"  heartbeat {human_age(row.heartbeat_age)}  queue {row.queue_depth}  paused ",
            ("yes", "yellow") if row.paused else "no",
            "\n",
        )
        summary.append_text(conditions_text(target))
        self.query_one("#summary", Static).update(summary)
        self.query_one("#capacity", Static).update(self._capacity(target, hb, name, now))
        self.query_one("#kinds", Static).update(self._kinds(name, now))
        self._events(name, now)

    def _capacity(self, target: SyncTarget | None, hb: SyncerHeartbeat | None, name: str, now: float) -> Text:
        out = Text()
        for c in capacity(target, hb):
            out.append(f"{c.resource:<5}")
            out.append_text(bar(c.fraction))
            pct = "   -" if c.fraction is None else f"{c.fraction:4.0%}"
            out.append(f" {pct} {amount(c.resource, c.used)}/{amount(c.resource, c.allocatable)}\n")
        fig = self.state.sync.cluster(name, now)
        out.append(f"latency p50 {latency(fig.p50)} p90 {latency(fig.p90)} p99 {latency(fig.p99)}\n")
        out.append(f"sync {fig.rate:.1f}/s  errors {fig.errors} ({ratio(fig.error_ratio)}) /{fig.window:.0f}s")
        return out

    def _kinds(self, name: str, now: float) -> Text:
        kinds = self.state.sync.cluster_kinds(name, now)
        out = Text(f"{'RESOURCE':<22} {'RATE':>8} {'ERR':>5}", "bold")
        for k in kinds[:SHOWN_KINDS]:
            out.append(f"\n{k.name[-22:]:<22} {k.rate:>6.1f}/s {k.errors:>5}")
        if len(kinds) > SHOWN_KINDS:
            out.append(f"\n+{len(kinds) - SHOWN_KINDS} more kinds (3: sync view)", "dim")
        elif not kinds:
            out.append("\nno sync events in the last minute", "dim")
        return out

    def _lines(self, name: str) -> list[_Line]:
        lines = [
            _Line(e.timestamp, "sync", e.reason, f"{e.resource} {e.object}", True)
            for e in self.state.sync.recent_errors(name)
        ]
        mine = (name, f"cluster/{name}")
        for r in self.state.events.rows(("health", "connection")):
            if r.object in mine:
                lines.append(_Line(r.timestamp, r.kind, r.reason, r.message, r.warning))
            if len(lines) >= SHOWN_EVENTS * 2:
                break
        lines.sort(key=lambda x: -x.timestamp)
        return lines[:SHOWN_EVENTS]

    def _events(self, name: str, now: float) -> None:
        lines: Sequence[_Line] = self._lines(name)
        cells = [
            (human_age(now - x.timestamp), Text(x.kind, "bold red" if x.warning else ""), x.reason, x.message)
            for x in lines
        ]
        self.query_one(RowTable).set_rows([str(i) for i in range(len(cells))], cells)

    async def action_back(self) -> None:
        """Esc: the previous view (the fleet, when opened from it)."""
        await self.app.run_action("previous_view")

    def action_cursor(self, direction: str) -> None:
        table = self.query_one(RowTable)
        table.action_cursor_down() if direction == "down" else table.action_cursor_up()
