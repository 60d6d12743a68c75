"""Garbage-collector settings for a daemon with a large, long-lived heap.

tmcd keeps hundreds of thousands of metric children alive for days.  CPython's cyclic
collector re-scans all of them on every full collection (tens to hundreds of ms, during
which no event is processed), although they never form garbage cycles.  Freezing moves
what exists now out of the collector's reach (reference counting still frees it), and a
larger first-generation threshold makes young collections rarer.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("tmcd.gc")

GEN0_THRESHOLD = 20_000


def tune() -> None:
    """Raise the young-generation threshold (default 700)."""
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, g1, g2)


def freeze_long_lived() -> int:
    """Collect the young generations, then freeze every surviving object; returns how many are frozen.

    A full ``gc.collect()`` here would itself be the long pause this module avoids, so only
    the young generations are collected first (recent cyclic garbage); the old generation
    is frozen as it is.
    """
    gc.collect(1)
    gc.freeze()
    count = gc.get_freeze_count()
    log.debug("froze %d long-lived objects", count)
    return count
