"""Where the dashboard finds NATS when ``tmcd tui`` is given no URL (``kubectl tmc dashboard``
finds it as every kubectl tmc command does)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_NATS = "nats://127.0.0.1:4222"


def nats_url(configured: str, data_dir: str) -> str:
    """``configured`` (flag, TMCD_NATS_URL, config file), else the URL ``tmcd run`` wrote to
    ``<data_dir>/nats.url``, else the default local NATS."""
    if configured:
        return configured
    try:
        written = (Path(data_dir) / "nats.url").read_text().strip().split(",")[0]
    except OSError:
        written = ""
    return written or DEFAULT_NATS
