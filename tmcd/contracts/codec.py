"""Encoding and checked decoding of tmc messages.

:func:`decode` turns bytes received on a subject into the channel's message type, or
raises :class:`InvalidMessage` with a short ``reason`` that becomes a metric label:

``malformed_json``      not JSON, truncated, or not an object
``too_deep``            JSON nested deeper than the decoder can follow (e.g. 2,000 ``[``)
``invalid_fields``      JSON of the wrong shape: missing fields, wrong types, bad values
``unsupported_schema``  a ``schema`` version this build does not know
``subject_mismatch``    a payload name differs from the subject token (e.g. cluster)
``unknown_subject``     the subject belongs to no channel, or a token is not a valid name
``handler_error``       decoded, but the agent's handler raised (counted by the bus)

:data:`REASONS` lists them and :data:`INVALID_KINDS` the ``kind`` label's values, so the
daemon can export every series at 0 from start-up.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

import msgspec

from tmcd.contracts.messages import ALL_MESSAGES, SCHEMA_VERSION, Message, SyncEventBatch
from tmcd.contracts.subjects import Channel, parse_subject

M = TypeVar("M", bound=Message)

_encoder = msgspec.json.Encoder()

REASONS: tuple[str, ...] = (
    "malformed_json",
    "too_deep",
    "invalid_fields",
    "unsupported_schema",
    "subject_mismatch",
    "unknown_subject",
    "handler_error",
)
"""Every ``reason`` of an :class:`InvalidMessage` (the ``reason`` label of tmc_events_invalid_total)."""

INVALID_KINDS: tuple[str, ...] = (*(m.KIND for m in ALL_MESSAGES), "unknown")
"""Every message kind of the contract, and ``unknown`` for a subject that belongs to no channel."""


class InvalidMessage(Exception):
    """A payload that cannot be accepted, with a metric-friendly reason."""

    def __init__(self, reason: str, detail: str, kind: str = "unknown") -> None:
        self.reason = reason
        self.detail = detail
        self.kind = kind
        super().__init__(f"{reason}: {detail}")


class _SchemaOnly(msgspec.Struct):
    schema: Any = None


@cache
def _decoder(tp: type[M]) -> msgspec.json.Decoder[M]:
    return msgspec.json.Decoder(tp)


_schema_decoder = msgspec.json.Decoder(_SchemaOnly)


def encode(msg: Message) -> bytes:
    """Encode a message as JSON."""
    return _encoder.encode(msg)


def _schema_of(data: bytes) -> Any:
    try:
        return _schema_decoder.decode(data).schema
    except (msgspec.DecodeError, RecursionError):
        return None


def decode_as(tp: type[M], data: bytes) -> M:
    """Decode ``data`` as ``tp``, checking the schema version; raises InvalidMessage."""
    try:
        msg: M = _decoder(tp).decode(data)
    except msgspec.ValidationError as exc:
        if not data.lstrip()[:1] == b"{":
            raise InvalidMessage("malformed_json", "payload is not a JSON object", tp.KIND) from exc
        schema = _schema_of(data)
        if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA_VERSION:
            raise InvalidMessage(
                "unsupported_schema", f"schema {schema} is newer than {SCHEMA_VERSION}", tp.KIND
            ) from exc
        raise InvalidMessage("invalid_fields", str(exc), tp.KIND) from exc
    except msgspec.DecodeError as exc:
        raise InvalidMessage("malformed_json", str(exc), tp.KIND) from exc
    except RecursionError as exc:  # msgspec recurses per nesting level and gives up at Python's limit
        raise InvalidMessage("too_deep", "JSON nested too deeply to decode", tp.KIND) from exc
    if msg.schema != SCHEMA_VERSION:
        raise InvalidMessage("unsupported_schema", f"schema {msg.schema} is not supported", tp.KIND)
    return msg


def decode(subject: str, data: bytes, channel: Channel | None = None) -> Message:
    """Decode a message received on ``subject``; raises InvalidMessage.

    When ``channel`` is given the subject must belong to it; otherwise the channel is
    found from the subject.  Names bound to subject tokens must match the payload.
    """
    route = parse_subject(subject)
    if route is None or (channel is not None and route.channel is not channel):
        kind = channel.message.KIND if channel is not None else "unknown"
        raise InvalidMessage(
            "unknown_subject",
            f"{subject!r} is not a {channel.id if channel else 'tmc'} subject",
            kind,
        )
    msg = decode_as(route.channel.message, data)
    if isinstance(msg, SyncEventBatch):
        for ev in msg.events:
            if ev.cluster != msg.cluster:
                raise InvalidMessage(
                    "subject_mismatch",
                    f"batch of cluster {msg.cluster!r} holds an event of cluster {ev.cluster!r}",
                    msg.KIND,
                )
    for param, field_name in route.channel.bind.items():
        if getattr(msg, field_name) != route.params[param]:
            raise InvalidMessage(
                "subject_mismatch",
                f"payload {field_name}={getattr(msg, field_name)!r} but subject says {route.params[param]!r}",
                route.channel.message.KIND,
            )
    return msg
