"""Logging: one line per record, to stderr."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info") -> None:
    """Configure the root logger (idempotent)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_tmcd", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler._tmcd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # nats-py logs only what its error callback cannot take (an exception in its read loop):
    # let it through.  The errors it hands to the callback (authorization, permissions, slow
    # consumer, stale connection) tmcd.bus logs itself, one warning per kind a minute; the
    # reconnect noise among them stays at debug level.
    logging.getLogger("nats").setLevel(logging.NOTSET)
