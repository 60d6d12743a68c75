"""Reading a stream as a last-value store: the last message of one subject, or of every subject
matching a filter (TMC_TRAFFIC keeps one message per subject: a route's current state).

Malformed stored messages are reported like any other (counted, logged, dead-lettered) and
left out, unless the reader says another consumer accounts for them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from nats import errors as nats_errors
from nats.js import api
from nats.js import errors as js_errors

from tmcd.bus.core import Bus, Delivery
from tmcd.bus.errors import BusError
from tmcd.contracts.codec import InvalidMessage, decode
from tmcd.contracts.messages import Message
from tmcd.contracts.subjects import Channel

log = logging.getLogger("tmcd.bus")

MAX_LAST_VALUES = 100_000
"""At most this many subjects are read by one :func:`last_per_subject` (memory stays bounded)."""
FETCH_BATCH = 512
FETCH_TIMEOUT = 2.0
CONSUMER_IDLE = 30.0
"""Seconds after which the server removes a reader's consumer that was not deleted (a crash)."""

_ERRORS = (nats_errors.Error, js_errors.Error, TimeoutError)


def _decoded(bus: Bus, subject: str, data: bytes | None, channel: Channel, account: bool = True) -> Message | None:
    try:
        return decode(subject, data or b"", channel)
    except InvalidMessage as err:
        if account:
            bus._dead_letter_soon(subject, data or b"", err)
        else:
            log.debug("skipping invalid message on %s (%s); the stream's primary consumer reports it", subject, err)
        return None


async def last_message(bus: Bus, stream: str, subject: str, channel: Channel) -> Delivery[Any] | None:
    """The last message ``stream`` holds on ``subject``; None when it holds none (or the
    stream does not exist).  Raises BusError when NATS cannot answer."""
    try:
        raw = await bus.js.get_last_msg(stream, subject)
    except js_errors.NotFoundError:  # no such message, or no such stream
        return None
    except _ERRORS as exc:
        raise BusError(f"reading the last message of {subject} from {stream}: {exc or type(exc).__name__}") from exc
    msg = _decoded(bus, subject, raw.data, channel)
    return Delivery(subject, msg, None) if msg is not None else None


async def last_per_subject(
    bus: Bus,
    stream: str,
    filter_subject: str,
    channel: Channel,
    *,
    limit: int = MAX_LAST_VALUES,
    account: bool = True,
) -> list[Delivery[Any]]:
    """The last message of every subject matching ``filter_subject`` in ``stream``, in stream
    order (at most ``limit``); [] when the stream does not exist.  One ephemeral consumer that
    delivers the last message per subject, deleted afterwards.  Raises BusError.

    ``account=False`` (a reader of a stream that a durable consumer already accounts for):
    a malformed message is skipped, not dead-lettered again."""
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=api.AckPolicy.NONE,
        inactive_threshold=CONSUMER_IDLE,
        mem_storage=True,
    )
    try:
        sub = await bus.js.pull_subscribe(filter_subject, stream=stream, config=config)
    except js_errors.NotFoundError:
        return []
    except _ERRORS as exc:
        raise BusError(f"reading {filter_subject} from {stream}: {exc or type(exc).__name__}") from exc
    out: list[Delivery[Any]] = []
    try:
        pending: int = (await sub.consumer_info()).num_pending
        while pending > 0 and len(out) < limit:
            for raw in await sub.fetch(min(FETCH_BATCH, limit - len(out)), timeout=FETCH_TIMEOUT):
                pending = raw.metadata.num_pending
                msg = _decoded(bus, raw.subject, raw.data, channel, account)
                if msg is not None:
                    out.append(Delivery(raw.subject, msg, raw.headers))
        if pending > 0:
            log.warning("read %d subjects of %s from %s; %d more left out", limit, filter_subject, stream, pending)
    except _ERRORS as exc:
        raise BusError(f"reading {filter_subject} from {stream}: {exc or type(exc).__name__}") from exc
    finally:
        await drop_consumer(bus, sub, stream)
    return out


async def drop_consumer(bus: Bus, sub: Any, stream: str) -> None:
    """Unsubscribe ``sub`` and delete its consumer from ``stream`` (best effort: errors are ignored)."""
    name = getattr(sub, "_consumer", None)
    with contextlib.suppress(*_ERRORS):
        await sub.unsubscribe()
    if name and bus.connected:
        with contextlib.suppress(*_ERRORS):
            await bus.js.delete_consumer(stream, name)
