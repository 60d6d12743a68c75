"""Decode cost of a syncer event: tmcd's checked msgspec decode vs plain json.loads.

Run: python bench/codec.py [N]
Ends with: codec decode_us=<x> json_us=<y> ratio=<json/decode>
"""

from __future__ import annotations

import json
import sys
import time

from tmcd.contracts.codec import decode, encode
from tmcd.contracts.examples import example
from tmcd.contracts.messages import SyncEvent


def per_call_us(fn: object, n: int) -> float:
    """Best of 5 runs of n calls, in microseconds per call."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    ev = example(SyncEvent)
    data = encode(ev)
    subject = "tmc.syncer.sim-001.sync"
    decode_us = per_call_us(lambda: decode(subject, data), n)
    json_us = per_call_us(lambda: json.loads(data), n)
    print(f"payload_bytes={len(data)} calls={n}")
    print(f"codec decode_us={decode_us:.3f} json_us={json_us:.3f} ratio={json_us / decode_us:.2f}")


if __name__ == "__main__":
    main()
