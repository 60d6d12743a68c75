"""What the bus counts, as an interface: tmcd's own metrics (``tmcd.runtime.selfmetrics``)
provide it, and the bus never imports the runtime."""

from __future__ import annotations

from typing import Protocol

from prometheus_client import Counter, Gauge


class BusMetrics(Protocol):
    """The series the bus writes: connection state, processed and invalid messages, consumer lag."""

    events_invalid: Counter
    """``tmc_events_invalid_total{kind,reason}``."""
    events_processed: Counter
    """``tmc_events_processed_total{stream}``."""
    nats_connected: Gauge
    """``tmc_nats_connected``."""
    consumer_pending: Gauge
    """``tmc_consumer_pending_messages{stream}``."""
    nats_errors: Counter
    """``tmc_nats_errors_total{kind}``."""
    dead_letters_dropped: Counter
    """``tmc_dead_letters_dropped_total``."""
