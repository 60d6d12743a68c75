"""The dashboard's canary rows, from the CanaryRollouts in KV.  Pure: no I/O, time passed in."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tmcd.resources.canary import CanaryRollout
from tmcd.tui.models import parse_time


@dataclass(frozen=True, slots=True)
class CanaryRow:
    """One rollout as the canaries view lists it."""

    namespace: str
    name: str
    phase: str
    step: str
    """1-based as ``kubectl tmc get canaries`` prints it: ``3/7``; ``0/7`` before it starts."""
    weight: int
    """The canary weight the controller set."""
    applied_weight: int | None
    """What the traffic router reports as applied (None until it reports)."""
    clusters: tuple[str, ...]
    age: float | None
    message: str


def step_label(phase: str, index: int, total: int) -> str:
    """The current step, 1-based (``kubectl tmc`` and the status message say it the same way)."""
    if phase == "Pending" or index < 0 or total == 0:
        return f"0/{total}"
    if phase == "Succeeded":
        return f"{total}/{total}"
    return f"{min(index + 1, total)}/{total}"


def canary_row(ro: CanaryRollout, now: float) -> CanaryRow:
    """The row of one rollout at ``now``."""
    st = ro.status
    created = parse_time(ro.metadata.creation_timestamp)
    return CanaryRow(
        namespace=ro.metadata.namespace,
        name=ro.metadata.name,
        phase=st.phase,
        step=step_label(st.phase, st.current_step_index, len(ro.spec.steps)),
        weight=st.current_weight,
        applied_weight=st.applied_weight,
        clusters=tuple(st.canary_clusters),
        age=None if created is None else max(0.0, now - created),
        message=st.message,
    )


def canary_rows(rollouts: Iterable[CanaryRollout], now: float) -> list[CanaryRow]:
    """Rows by namespace and name."""
    return sorted((canary_row(r, now) for r in rollouts), key=lambda r: (r.namespace, r.name))
