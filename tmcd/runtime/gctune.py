"""Garbage-collector settings for a daemon with a large, long-lived heap.

tmcd keeps hundreds of thousands of objects alive for days (modules, the cluster registry,
metric children), which CPython's cyclic collector would re-scan on every full collection
although they never form garbage cycles.  Once start-up is over, the heap is frozen: what
exists then is moved out of the collector's reach (reference counting still frees it).
Freezing happens once, not periodically: a frozen object is never examined again, so a
cycle that is alive at a freeze and becomes garbage later is never collected, and freezing
again and again would keep every such cycle forever.  A larger first-generation threshold
makes young collections rarer.
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
    """Collect all generations, then freeze every surviving object; returns how many are frozen.

    Meant to run once, after start-up: the full collection first (a one-off pause while
    the heap is still small) keeps start-up garbage out of the frozen set.
    """
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.debug("froze %d long-lived objects", count)
    return count
