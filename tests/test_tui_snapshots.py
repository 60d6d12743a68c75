"""SVG snapshots of every dashboard view (pytest-textual-snapshot), on a deterministic fleet and
fixed clock: six clusters with traffic, failures and events, and four canary rollouts.

After an intended change of the screens: ``pytest tests/test_tui_snapshots.py --snapshot-update``,
look at the SVGs in ``tests/__snapshots__/test_tui_snapshots/``, and commit them (the README's
screenshot, ``docs/images/dashboard-fleet.svg``, is the fleet snapshot: the last test checks it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from tests.test_tui_canaries import canary_state
from tests.test_tui_views import GI, NOW, batch, ev, fleet
from tmcd.contracts.messages import HealthChange, ResourceQuantities, SyncerHeartbeat
from tmcd.resources.meta import ObjectMeta
from tmcd.resources.synctarget import SyncTarget, SyncTargetStatus
from tmcd.tui.app import DashboardApp
from tmcd.tui.state import DashboardState

SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_tui_snapshots"
README_SCREENSHOT = Path(__file__).parent.parent / "docs" / "images" / "dashboard-fleet.svg"
SIZE = (120, 32)

Compare = Callable[..., bool]


REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
TROUBLE = {
    "edge-04": ("Unhealthy", "HeartbeatMissing", 95.0),
    "edge-07": ("Degraded", "ErrorRatioHigh", 3.0),
    "edge-10": ("Degraded", "QueueBacklog", 1.0),
}
"""Cluster -> (health, reason, seconds since its heartbeat) for the clusters in trouble."""


def showcase() -> DashboardState:
    """The views' fleet: fleet() (sim-001..006) and twelve edge clusters in three regions with
    heartbeats, sync traffic and some trouble, plus the four canary rollouts."""
    state = canary_state(fleet(6))
    for i in range(12):
        name = f"edge-{i + 1:02d}"
        health, reason, late = TROUBLE.get(name, ("Healthy", "", 1.0 + i % 3))
        labels = {"region": REGIONS[i % 3], "zone": f"{REGIONS[i % 3]}{'abc'[i % 2]}"}
        status = SyncTargetStatus(health=health, health_reason=reason)  # type: ignore[arg-type]
        state.set_target(name, SyncTarget(metadata=ObjectMeta(name=name, labels=labels), status=status))
        state.apply(
            SyncerHeartbeat(
                cluster=name,
                timestamp=NOW - late,
                queue_depth=240 if name == "edge-10" else i % 4,
                labels=labels,
                synced_resources=["v1/pods", "apps/v1/deployments", "v1/services"][: 1 + i % 3],
                allocatable=ResourceQuantities(cpu=16.0, memory=64 * GI, pods=220),
                used=ResourceQuantities(cpu=2.0 + i, memory=(8 + 4 * i) * GI, pods=20 + 10 * i),
            )
        )
        for s in reversed(range(10)):
            failing = 2 if name == "edge-07" else 0
            events = [ev(name, "v1/pods", 0.01 * (1 + i % 4), ok=k >= failing, at=NOW - s) for k in range(2 + i % 5)]
            state.apply(batch(name, events, NOW - s))
        if name in TROUBLE:
            state.apply(
                HealthChange(kind="cluster", name=name, timestamp=NOW - 40 - i, to_status=health, reason=reason)
            )
    return state


def app(*, read_only: bool = False) -> DashboardApp:
    return DashboardApp(showcase(), clock=lambda: NOW, read_only=read_only)


def keys(*pressed: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Press ``pressed``, then draw the view as the next tick would (no waiting for the timer)."""

    async def run(pilot: Pilot[None]) -> None:
        await pilot.pause()
        for key in pressed:
            await pilot.press(key)
        app = pilot.app
        assert isinstance(app, DashboardApp)
        app.refresh_view()
        await pilot.pause()

    return run


@pytest.mark.parametrize(
    "pressed",
    [
        pytest.param((), id="fleet"),
        pytest.param(("j", "enter"), id="cluster"),
        pytest.param(("3",), id="sync"),
        pytest.param(("4",), id="canaries"),
        pytest.param(("4", "end", "enter"), id="canary-detail"),
        pytest.param(("5",), id="events"),
        pytest.param(("question_mark",), id="help"),
        pytest.param(("3", "p"), id="confirm"),
    ],
)
def test_view(snap_compare: Compare, pressed: tuple[str, ...]) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=keys(*pressed))


def test_fleet_at_80x24_read_only(snap_compare: Compare) -> None:
    assert snap_compare(app(read_only=True), terminal_size=(80, 24), run_before=keys())


def test_the_readme_screenshot_is_the_fleet_snapshot() -> None:
    assert README_SCREENSHOT.read_text() == (SNAPSHOTS / "test_view[fleet].svg").read_text(), (
        "copy tests/__snapshots__/test_tui_snapshots/test_view[fleet].svg to docs/images/dashboard-fleet.svg"
    )
