"""The ``?`` help: the key map."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = """\
Views      1 fleet   2 cluster   3 sync   4 canaries   5 events
Move       ↑ ↓ j k   PgUp PgDn   Home End g G   ← → h l scroll the columns
Filter     /  regex; !regex inverts; -l key=value for labels
           (events: kind:health,canary text)   Enter keeps, Esc clears
Sort       s next column   S reverse
Open       Enter: a fleet row's cluster, a rollout's steps and analysis
Sync       space marks clusters; p pause  r resume  f force a re-sync (marked, else highlighted)
Canaries   P promote  F promote in full  A abort  R retry
           every action asks to confirm and shows the controller's answer
Other      ? this help   Esc back   q quit
"""


class HelpScreen(ModalScreen[None]):
    """The key map; any of Esc, ? or q closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss_help", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: auto; max-width: 78; border: round $accent; padding: 0 1; }
    """

    def __init__(self, read_only: bool) -> None:
        super().__init__()
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        mode = "\nRead-only: action keys only say so; nothing is sent." if self.read_only else ""
        yield Static("Keys\n\n" + KEYS + mode, id="help")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
