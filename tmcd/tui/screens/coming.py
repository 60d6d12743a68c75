"""The views still to come (cluster, sync, canaries): a placeholder that says so, never an error."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

COMING = {
    "cluster": "Cluster: conditions, capacity bars, latency percentiles, sync rate by kind, recent events.",
    "sync": "Sync: per resource kind across the fleet; pause, resume and force with confirmation.",
    "canaries": "Canaries: phase, step, weight, canary clusters; the step tree, weights and analysis.",
}


class ComingScreen(Screen[None]):
    """A view that is not built yet."""

    def __init__(self, view: str) -> None:
        super().__init__(name=view)
        self.view = view

    def compose(self) -> ComposeResult:
        yield Static(
            f"{COMING[self.view]}\n\nThis view is coming. Press 1 for the fleet, 5 for events, ? for help.",
            id="coming",
        )
        yield Footer()
