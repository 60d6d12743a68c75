"""What the HTTP and NATS handlers share: settings, the bus, the watch cache and its reads, the writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tmcd.api import errors
from tmcd.api.cache import ApiCache
from tmcd.api.index import WINDOW
from tmcd.api.reads import Reads
from tmcd.api.store import ResourceStore
from tmcd.bus import Bus
from tmcd.config import ApiConfig

BusGetter = Callable[[], "Bus | None"]

WATCH_TIMEOUT = 1800.0
"""Seconds an HTTP watch lasts at most (kube-apiserver's default); the client resumes from its
last event's id, as an EventSource does by itself."""


class ApiContext:
    """Settings, the bus (once connected), the cache (once started), a store, a stop signal."""

    def __init__(self, cfg: ApiConfig, bus: BusGetter) -> None:
        self.cfg = cfg
        self._bus = bus
        self._store: ResourceStore | None = None
        self._store_bus: Bus | None = None
        self._reads: Reads | None = None
        self.stopping = asyncio.Event()
        self.watch_timeout = WATCH_TIMEOUT
        """Seconds an HTTP watch lasts at most (``timeoutSeconds`` can only shorten it)."""
        self.lease_prefix = "tmcd"
        """The deployment's key prefix in the leases bucket (``consumer.durable_prefix``)."""
        self.election = True
        """Whether this deployment elects leaders (``leader.enabled``)."""

    def start_cache(self, window: int = WINDOW) -> ApiCache:
        """Start the watch cache (one feed per kind, ``window`` events kept for watches to resume
        from); reads answer 503 until it is started."""
        if self._reads is None:
            cache = ApiCache(self._bus, window=window)
            cache.start()
            self._reads = Reads(cache)
            self._store = None  # made again, with the reads
        return self._reads.cache

    async def close_cache(self, timeout: float = 5.0) -> None:
        """Stop the watch cache (its feeds' consumers are deleted) within about ``timeout`` seconds."""
        reads, self._reads = self._reads, None
        self._store = None
        if reads is not None:
            await reads.cache.close(timeout * 0.8)

    def cache_check(self) -> str | None:
        """The ``api-cache`` readiness check: None once every kind's cache has loaded."""
        if self._reads is None:
            return "the API cache is not started"
        return self._reads.cache.check()

    def reads(self) -> Reads:
        """Lists, gets and watches; 503 before the cache is started."""
        if self._reads is None:
            raise errors.ApiError(503, "ServiceUnavailable", "the API cache is not started")
        return self._reads

    def bus(self) -> Bus:
        """The connected bus; 503 while there is none."""
        bus = self._bus()
        if bus is None or not bus.connected:
            raise errors.ApiError(503, "ServiceUnavailable", "not connected to NATS")
        return bus

    def store(self) -> ResourceStore:
        """The writes (and a list from the cache for code that has only a store)."""
        bus = self.bus()
        if self._store is None or self._store_bus is not bus:
            store = ResourceStore(bus, reads=self._reads, max_object_bytes=self.cfg.max_object_bytes)
            self._store, self._store_bus = store, bus
        return self._store
