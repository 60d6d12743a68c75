"""The event bus: the only package that imports nats-py.

Everything else publishes and receives typed messages (msgspec Structs) through
:class:`tmcd.bus.core.Bus`.
"""

from tmcd.bus.core import Bus, Delivery
from tmcd.bus.errors import BusError, CorruptValueError, NotConnectedError
from tmcd.bus.kv import CasConflictError, KvEntry, KvStore
from tmcd.bus.lastvalue import last_message, last_per_subject
from tmcd.bus.resync import Resync

__all__ = [
    "Bus",
    "BusError",
    "CasConflictError",
    "CorruptValueError",
    "Delivery",
    "KvEntry",
    "KvStore",
    "NotConnectedError",
    "Resync",
    "last_message",
    "last_per_subject",
]
