"""Everything the dashboard shows, in one place the feed writes and the screens read.  Pure.

The feed applies each message as it arrives (cheap, O(1) per message); the app redraws from
it on a timer, at most four times a second, and only when :attr:`DashboardState.version`
moved, so a flood of events costs one redraw per tick, not one per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tmcd.contracts.messages import (
    Message,
    SyncerHeartbeat,
    SyncEvent,
    SyncEventBatch,
)
from tmcd.resources.canary import CanaryRollout
from tmcd.resources.placement import Placement
from tmcd.resources.synctarget import SyncTarget
from tmcd.tui.canaries import CanaryRow, WeightHistory, canary_rows
from tmcd.tui.eventlog import EventLog
from tmcd.tui.kinds import SyncStats
from tmcd.tui.models import FleetModel

Connection = Literal["connecting", "connected", "disconnected"]
MAX_OBJECTS = 20_000
"""Rollouts and placements kept, at most each."""


@dataclass
class DashboardState:
    """The fleet, the events, the rollouts and placements, and where the connection stands."""

    fleet: FleetModel = field(default_factory=FleetModel)
    events: EventLog = field(default_factory=EventLog)
    sync: SyncStats = field(default_factory=SyncStats)
    """Sync rates, errors and latencies per resource kind and per cluster (the cluster and sync views)."""
    canaries: dict[str, CanaryRollout] = field(default_factory=dict)
    """``namespace/name`` -> rollout."""
    weights: WeightHistory = field(default_factory=WeightHistory)
    """Each rollout's canary weight over time, from the status updates seen."""
    placements: dict[str, Placement] = field(default_factory=dict)
    connection: Connection = "connecting"
    url: str = ""
    """The NATS server, as it may be shown (no credentials)."""
    loaded: bool = False
    """The first snapshot (objects and recent events) has been read."""
    problem: str = ""
    """The last thing that went wrong reading NATS (shown in the status line), "" when all is well."""
    _version: int = 0

    @property
    def version(self) -> int:
        """Changes whenever anything shown changed (compare with the last one drawn)."""
        return self._version + self.fleet.version + self.events.version + self.sync.version

    def touch(self) -> None:
        """Something outside the fleet and the events changed."""
        self._version += 1

    def set_connection(self, state: Connection) -> None:
        """The connection went up or down."""
        if state != self.connection:
            self.connection = state
            self.touch()

    def set_problem(self, text: str) -> None:
        """Show ``text`` in the status line ("" clears it)."""
        if text != self.problem:
            self.problem = text
            self.touch()

    def apply(self, msg: Message) -> None:
        """One message from the syncer, health, canary, rollback or placement subjects."""
        if isinstance(msg, SyncEventBatch):
            self.fleet.sync_batch(msg)
            self.sync.sync_batch(msg)
        elif isinstance(msg, SyncerHeartbeat):
            self.fleet.heartbeat(msg)
        elif isinstance(msg, SyncEvent):
            self.fleet.sync_event(msg)
            self.sync.sync_event(msg)
        else:
            self.events.add_message(msg)

    def set_target(self, key: str, target: SyncTarget | None) -> None:
        """A SyncTarget changed (None: deleted)."""
        if target is None:
            self.fleet.remove_target(key)
            self.sync.forget(key)
        else:
            self.fleet.set_target(target)

    def set_canary(self, key: str, rollout: CanaryRollout | None) -> None:
        """A CanaryRollout changed (None: deleted)."""
        if rollout is None:
            gone = self.canaries.pop(key, None)
            if gone is not None:
                self.weights.forget(f"{gone.metadata.namespace}/{gone.metadata.name}")
        elif key in self.canaries or len(self.canaries) < MAX_OBJECTS:
            self.canaries[key] = rollout
            self.weights.record(rollout)
        self.touch()

    def set_placement(self, key: str, placement: Placement | None) -> None:
        """A Placement changed (None: deleted)."""
        if placement is None:
            self.placements.pop(key, None)
        elif key in self.placements or len(self.placements) < MAX_OBJECTS:
            self.placements[key] = placement
        self.touch()

    def canary_rows(self, now: float) -> list[CanaryRow]:
        """The canaries view's rows at ``now``."""
        return canary_rows(self.canaries.values(), now)
