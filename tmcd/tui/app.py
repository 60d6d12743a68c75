"""The dashboard app (Textual): views switched by number keys, redrawn at most four times a second.

The feed (:mod:`tmcd.tui.feed`) writes every message into :class:`DashboardState` as it
arrives; this app redraws the current view from it on a 0.25 s timer, and only when something
changed (or a second passed, so ages move on): a thousand events a second cost four redraws.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Input

from tmcd.bus import BusError
from tmcd.config import NatsConfig
from tmcd.contracts.messages import ControlReply
from tmcd.tui.actions import Action
from tmcd.tui.feed import Feed
from tmcd.tui.screens.canaries import CanariesScreen
from tmcd.tui.screens.cluster import ClusterScreen
from tmcd.tui.screens.confirm import ConfirmDialog
from tmcd.tui.screens.events import EventsScreen
from tmcd.tui.screens.fleet import FleetScreen
from tmcd.tui.screens.help import HelpScreen
from tmcd.tui.screens.sync import SyncScreen
from tmcd.tui.state import DashboardState

VIEWS = ("fleet", "cluster", "sync", "canaries", "events")
"""View names in number-key order: 1 fleet ... 5 events."""
TICK = 0.25
"""Seconds between redraw checks: at most four redraws a second."""
IDLE_REDRAW = 1.0
MAX_ACKS = 100
ACTION_TIMEOUT = 5.0
"""Seconds an action waits for the controller's reply."""
"""Redraw at least this often while nothing changes (ages and sparklines move on)."""
_GLOBAL_ACTIONS = {"view", "help", "quit", "previous_view"}
GC_GEN0_THRESHOLD = 20_000
"""Young-generation threshold with ``tune_gc`` (CPython's default is 700)."""


def _freeze_heap() -> None:
    """Collect once, then move every surviving object out of the collector's reach (once, at start)."""
    gc.collect()
    gc.freeze()


class DashboardApp(App[None]):
    """The dashboard; give it a ``feed`` to follow NATS, or a ``state`` that tests fill themselves."""

    TITLE = "tmcd dashboard"
    BINDINGS = [
        *(Binding(str(i + 1), f"view('{v}')", v, show=False) for i, v in enumerate(VIEWS)),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        state: DashboardState | None = None,
        feed: Feed | None = None,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        tune_gc: bool = False,
    ) -> None:
        super().__init__()
        self.tune_gc = tune_gc
        """Tune the garbage collector for this process (:func:`run_dashboard`; not for tests)."""
        self.state = feed.state if feed is not None else (state or DashboardState())
        self.feed = feed
        self.read_only = read_only
        self.clock = clock
        self.view = "fleet"
        self.history: list[str] = []
        self.redraws = 0
        """Redraws so far (tests check the coalescing)."""
        self._drawn_version = -1
        self._drawn_at = 0.0
        self._dirty = True
        self._stop = asyncio.Event()
        self._feed_task: asyncio.Task[None] | None = None
        self.acks: list[ControlReply] = []
        """The latest acknowledgements received for actions (the views show the newest)."""

    def on_mount(self) -> None:
        self.install_screen(FleetScreen(self.state), "fleet")
        self.install_screen(EventsScreen(self.state), "events")
        self.install_screen(ClusterScreen(self.state), "cluster")
        self.install_screen(SyncScreen(self.state), "sync")
        self.install_screen(CanariesScreen(self.state), "canaries")
        self.push_screen("fleet")
        if self.feed is not None:
            self._feed_task = asyncio.create_task(self.feed.run(self._stop))
        self.set_interval(TICK, self._tick)
        self.call_after_refresh(self.refresh_view)
        if self.tune_gc:
            # Textual's widgets and modules are long-lived: out of the collector's reach, full
            # collections stop pausing redraws (40-60 ms each at 1,000 clusters)
            # (as tmcd.runtime.gctune does for the daemon, which the dashboard's layer does not import)
            gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
            self.call_after_refresh(_freeze_heap)

    async def on_unmount(self) -> None:
        self._stop.set()
        if self._feed_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._feed_task, 5)

    def act(self, action: Action) -> None:
        """Confirm, then send ``action`` and show the controller's reply; with --read-only, send nothing."""
        if self.read_only:
            self.notify(f"read-only: {action.question.rstrip('?')} not sent", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._send(action), exclusive=False)

        self.push_screen(ConfirmDialog(action.question), answered)

    async def _send(self, action: Action) -> None:
        bus = self.feed.bus if self.feed is not None else None
        if bus is None or not bus.connected:
            self.notify(f"{action.target}: not sent, NATS is not connected", severity="error")
            return
        try:
            reply = await bus.request(action.subject, action.message, ControlReply, timeout=ACTION_TIMEOUT)
        except BusError as exc:
            self.notify(f"{action.target}: no answer ({exc})", severity="error")
            return
        self.acks.append(reply)
        del self.acks[:-MAX_ACKS]  # bounded
        self.request_redraw()  # the views list the acknowledgements
        text = reply.message or reply.state or ("done" if reply.ok else "refused")
        self.notify(f"{action.target}: {text}", severity="information" if reply.ok else "error")

    def request_redraw(self) -> None:
        """Something on screen changed (a filter, the sort): redraw at the next tick."""
        self._dirty = True

    def _tick(self) -> None:
        now = self.clock()
        if self._dirty or self.state.version != self._drawn_version or now - self._drawn_at >= IDLE_REDRAW:
            self.refresh_view()

    def refresh_view(self) -> None:
        """Redraw the current view from the state (the tick calls this; at most four times a second)."""
        if not self.screen_stack:
            return  # starting or quitting
        if not self.screen.is_mounted:
            self._dirty = True  # just switched to: draw it at the next tick, once its widgets exist
            return
        show = getattr(self.screen, "show", None)
        now = self.clock()
        self._dirty = False
        self._drawn_version = self.state.version
        self._drawn_at = now
        if show is not None:
            try:
                show(now)
            except NoMatches:  # its widgets are not composed yet: draw it at the next tick
                self._dirty = True
                return
            self.redraws += 1
        self.sub_title = f"{self.view}{'  [read-only]' if self.read_only else ''}"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While the filter box has the keyboard, letters and digits are text, not commands."""
        return not (action in _GLOBAL_ACTIONS and isinstance(self.focused, Input))

    def action_view(self, view: str) -> None:
        """Switch to ``view`` (number keys)."""
        if view == self.view or view not in VIEWS:
            return
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        self.history = [*self.history[-9:], self.view]
        self._switch(view)

    def action_previous_view(self) -> None:
        """Esc: the previous view."""
        if self.history:
            self._switch(self.history.pop())

    def _switch(self, view: str) -> None:
        self.view = view
        self.switch_screen(view)
        self._dirty = True
        self.call_after_refresh(self.refresh_view)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.read_only))

    @property
    def current(self) -> Screen[Any]:
        """The screen on top (a view, or the help)."""
        return self.screen


def run_dashboard(url: str, nats: NatsConfig | None = None, *, read_only: bool = False) -> int:
    """Run the dashboard in this terminal until ``q``; returns the exit code."""
    # log lines would scribble over the screen: the status line shows connection problems instead
    tmcd_log = logging.getLogger("tmcd")
    tmcd_log.handlers[:] = [logging.NullHandler()]
    tmcd_log.propagate = False
    state = DashboardState()
    DashboardApp(feed=Feed(state, url, nats), read_only=read_only, tune_gc=True).run()
    return 0
