"""Adding many observations to a prometheus-client histogram child at once.

``Histogram.observe`` costs ~1.1 µs; the hot path instead bins a batch with ``bisect``
into a local count list and adds the counts once per batch.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any


class Bins:
    """Per-batch bucket counts for one histogram child."""

    __slots__ = ("bounds", "counts", "n", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.n = 0

    def add(self, value: float) -> None:
        """Record one observation (``le`` semantics: value <= bound goes in that bucket)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def flush_into(self, child: Any) -> None:
        """Add the counts to a prometheus-client Histogram child and reset."""
        if not self.n:
            return
        buckets = child._buckets
        for i, c in enumerate(self.counts):
            if c:
                buckets[i].inc(c)
                self.counts[i] = 0
        child._sum.inc(self.total)
        self.total = 0.0
        self.n = 0
