"""The bus's errors: every failure of a NATS operation reaches callers as a :class:`BusError`."""

from __future__ import annotations


class BusError(Exception):
    """A NATS operation failed (connection refused, timeout, no responders, ...)."""


class NotConnectedError(BusError):
    """The bus is not connected."""


class CorruptValueError(BusError):
    """A stored KV value does not decode as its type (it was counted and dead-lettered)."""
