"""A sliding window of sync outcomes in fixed buckets: O(window / bucket) memory, O(1) per update."""

from __future__ import annotations

import math
from array import array


def slots_for(window: float, bucket: float) -> int:
    """How many buckets of ``bucket`` seconds cover ``window`` seconds (at least one)."""
    return max(1, math.ceil(window / bucket - 1e-9))


class ErrorWindow:
    """Sync totals and failures per bucket of ``bucket`` seconds, over the last ``slots`` buckets.

    Bucket ``k`` covers ``[k * bucket, (k + 1) * bucket)`` and lives in slot ``k % slots``; the
    window holds buckets ``head - slots + 1 .. head``, so a bucket's start is implied by ``head``
    and not stored.  Counts are one flat ``array('q')`` (``[total0, failed0, total1, ...]``: 60
    buckets cost ~1 KB).  ``total`` and ``failed`` are running sums over the live buckets, so the
    ratio is O(1) once :meth:`advance` has dropped the buckets that left the window.
    """

    __slots__ = ("bucket", "counts", "failed", "head", "slots", "total", "window")

    def __init__(self, window: float, bucket: float) -> None:
        self.window = window
        """Seconds the window covers (rounded up to whole buckets)."""
        self.bucket = bucket
        """Seconds per bucket."""
        self.slots = slots_for(window, bucket)
        """Number of buckets."""
        self.counts = array("q", bytes(16 * self.slots))
        """``[total, failed]`` per slot."""
        self.head = -1
        """Index of the newest bucket the window has advanced to."""
        self.total = 0
        """Sync events in the live buckets."""
        self.failed = 0
        """Failed sync events in the live buckets."""

    def advance(self, now: float) -> None:
        """Move the window so its newest bucket is the one ``now`` falls in, dropping older ones."""
        k = int(now // self.bucket)
        head = self.head
        if k <= head:
            return
        self.head = k
        if not self.total:  # every slot is already zero
            return
        n = self.slots
        if k - head >= n:
            self.counts = array("q", bytes(16 * n))
            self.total = self.failed = 0
            return
        c = self.counts
        total, failed = self.total, self.failed
        for j in range(head + 1, k + 1):
            i = (j % n) * 2
            if c[i] or c[i + 1]:
                total -= c[i]
                failed -= c[i + 1]
                c[i] = c[i + 1] = 0
        self.total, self.failed = total, failed

    def add(self, total: int, failed: int, now: float) -> bool:
        """Count ``total`` sync events (``failed`` of them failed) at ``now``; False if too old to count."""
        k = int(now // self.bucket)
        if k > self.head:
            self.advance(now)
        elif k <= self.head - self.slots:
            return False
        i = (k % self.slots) * 2
        c = self.counts
        c[i] += total
        c[i + 1] += failed
        self.total += total
        self.failed += failed
        return True

    def sums(self, now: float, window: float | None = None) -> tuple[int, int]:
        """(total, failed) over the buckets within ``window`` (default: the whole window) of ``now``.

        Does not change the window; O(1) when the window has been advanced to ``now``.
        """
        if not self.total:
            return 0, 0
        n = self.slots
        span = n if window is None else min(n, slots_for(window, self.bucket))
        k = int(now // self.bucket)
        if k == self.head and span == n:
            return self.total, self.failed
        c = self.counts
        total = failed = 0
        for j in range(max(k - span + 1, self.head - n + 1), self.head + 1):
            i = (j % n) * 2
            total += c[i]
            failed += c[i + 1]
        return total, failed

    def buckets(self) -> list[tuple[float, int, int]]:
        """The non-empty live buckets, oldest first, as (start, total, failed)."""
        n = self.slots
        c = self.counts
        out = []
        for j in range(self.head - n + 1, self.head + 1):
            i = (j % n) * 2
            if c[i] or c[i + 1]:
                out.append((j * self.bucket, c[i], c[i + 1]))
        return out
