"""The bus's errors: every failure of a NATS operation reaches callers as a :class:`BusError`."""

from __future__ import annotations


class BusError(Exception):
    """A NATS operation failed (connection refused, timeout, no responders, ...)."""


class NotConnectedError(BusError):
    """The bus is not connected."""


class CorruptValueError(BusError):
    """A stored KV value does not decode as its type (it was counted and dead-lettered)."""


def reason_of(exc: BaseException) -> str:
    """A NATS error in a few words, for a BusError's message."""
    from nats import errors as nats_errors  # only tmcd/bus imports nats

    if isinstance(exc, nats_errors.NoServersError):
        return "no servers available (connection refused?)"
    return str(exc) or type(exc).__name__
