"""Per-batch aggregation of sync events in C (optional; built by hatch_build.py)."""

from collections.abc import Sequence
from typing import Any

def aggregate(
    events: Sequence[Any],
    now: float,
    sync_bounds: Sequence[float],
    lag_bounds: Sequence[float],
    known: dict[tuple[str, str, str], Any] | None = None,
    /,
) -> tuple[dict[tuple[str, str, str], int], list[int], list[int], float, float, list[int], float, list[Any]]:
    """One pass over a batch of SyncEvents; see the C source for the result's layout."""
