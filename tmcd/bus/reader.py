"""Reading the bus as an observer (the dashboard): live subscriptions and recent history that
neither count nor dead-letter what they read, since tmcd's own consumers account for every
message once.  A message that does not decode is skipped (logged at debug level).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from nats import errors as nats_errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js import errors as js_errors

from tmcd.bus.core import Bus, Delivery
from tmcd.bus.errors import BusError
from tmcd.bus.lastvalue import drop_consumer

log = logging.getLogger("tmcd.bus")

MAX_REPLAY = 10_000
"""At most this many messages are replayed by one :func:`recent`."""
MAX_BYTES = 16 * 1024 * 1024
"""Bytes an :func:`observe` subscription holds for its handler, at most."""
FETCH_BATCH = 512
FETCH_TIMEOUT = 2.0
CONSUMER_IDLE = 30.0
_ERRORS = (nats_errors.Error, js_errors.Error, TimeoutError)


async def observe(
    bus: Bus, subject: str, handler: Callable[[Delivery[Any]], None], *, max_pending: int, max_bytes: int = MAX_BYTES
) -> Any:
    """Call ``handler`` (a plain function, run inline) with every message on ``subject``.

    At most ``max_pending`` messages (``max_bytes`` bytes) wait for the handler: past that the server's messages are
    dropped and nats-py reports a slow consumer (the observer falls behind, memory does not grow).
    Returns the subscription (``await sub.unsubscribe()`` to stop).  nats-py renews it after a
    reconnect.
    """

    async def cb(msg: Msg) -> None:
        bus.handle_delivery_sync(msg, handler, "")

    try:
        sub = await bus.nc.subscribe(subject, cb=cb, pending_msgs_limit=max_pending, pending_bytes_limit=max_bytes)
        await bus.nc.flush()
    except _ERRORS as exc:
        raise BusError(f"subscribing to {subject}: {exc or type(exc).__name__}") from exc
    return sub


async def recent(
    bus: Bus, stream: str, filter_subject: str, *, since: float, limit: int = MAX_REPLAY
) -> list[Delivery[Any]]:
    """The messages ``stream`` holds on ``filter_subject`` from Unix time ``since`` on, oldest
    first: the newest ``limit`` of them when there are more.  [] when the stream does not exist.

    One ephemeral in-memory consumer without acks (deleted afterwards, or by the server once
    idle).  Raises BusError when NATS cannot answer.
    """
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_TIME,
        opt_start_time=datetime.fromtimestamp(since, UTC),
        ack_policy=api.AckPolicy.NONE,
        inactive_threshold=CONSUMER_IDLE,
        mem_storage=True,
    )
    sub = await _pull(bus, stream, filter_subject, config)
    if sub is None:
        return []
    try:
        pending: int = (await sub.consumer_info()).num_pending
        if pending > limit:
            # Too many: start at the sequence that leaves at most `limit` of the stream's newest
            # messages (exactly `limit` when every message matches the filter, as on TMC_EVENTS).
            await drop_consumer(bus, sub, stream)
            last = await bus.stream_last_seq(stream)
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_time = None
            config.opt_start_seq = max(1, last - limit + 1)
            sub = await _pull(bus, stream, filter_subject, config)
            if sub is None:
                return []
            pending = (await sub.consumer_info()).num_pending
        out: list[Delivery[Any]] = []
        while pending > 0 and len(out) < limit:
            for raw in await sub.fetch(min(FETCH_BATCH, limit - len(out)), timeout=FETCH_TIMEOUT):
                pending = raw.metadata.num_pending
                decoded = bus._decode_or_dead_letter(raw, None, "")
                if decoded is not None:
                    out.append(Delivery(raw.subject, decoded, raw.headers))
        return out
    except _ERRORS as exc:
        raise BusError(f"replaying {filter_subject} from {stream}: {exc or type(exc).__name__}") from exc
    finally:
        await drop_consumer(bus, sub, stream)


async def _pull(bus: Bus, stream: str, filter_subject: str, config: api.ConsumerConfig) -> Any:
    try:
        return await bus.js.pull_subscribe(filter_subject, stream=stream, config=config)
    except js_errors.NotFoundError:
        return None
    except _ERRORS as exc:
        raise BusError(f"replaying {filter_subject} from {stream}: {exc or type(exc).__name__}") from exc
