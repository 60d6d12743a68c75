"""nats-py's asynchronous errors as rate-limited warnings a user can act on.

nats-py hands errors it meets outside a call (a server ``-ERR``, a slow subscription, an
exception escaping a subscription callback, a failed reconnect attempt) to the connection's
error callback.  :class:`NatsErrorLog` sorts them: reconnect noise the bus already reports
(disconnected/reconnected lines) stays at debug level; everything else is one warning per
kind per minute, with a count of how many more of that kind came in between.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from nats import errors as nats_errors
from nats.aio.client import Client as _NatsClient

from tmcd.bus.ratelog import Throttle, more

log = logging.getLogger("tmcd.bus")

AUTHORIZATION = "authorization violation"
PERMISSIONS = "permissions violation"
SLOW_CONSUMER = "slow consumer"
STALE_CONNECTION = "stale connection"

METRIC_KINDS: tuple[str, ...] = (
    "authorization_violation",
    "permissions_violation",
    "slow_consumer",
    "stale_connection",
    "timeout",
    "other",
)
"""The ``kind`` label of ``tmc_nats_errors_total`` (a fixed set, whatever nats-py raises)."""

_HINTS = {
    AUTHORIZATION: "the server rejected tmcd's credentials: check nats.user/password, token, creds_file, ...",
    PERMISSIONS: "tmcd's NATS user lacks a publish or subscribe permission it needs",
    SLOW_CONSUMER: "a subscription's handler cannot keep up and nats-py dropped messages",
    STALE_CONNECTION: "pings went unanswered; the client reconnects",
}

# Errors of a connection going away or coming back: the bus logs the disconnect and the
# reconnect itself, and connect() logs why a first connection fails.
_RECONNECT_NOISE = (
    OSError,
    nats_errors.UnexpectedEOF,
    nats_errors.NoServersError,
    nats_errors.ConnectionClosedError,
    nats_errors.ConnectionReconnectingError,
    nats_errors.ConnectionDrainingError,
)

_REPORTED_TIMEOUTS = (nats_errors.FlushTimeoutError, nats_errors.DrainTimeoutError)


def classify(exc: BaseException) -> str | None:
    """The kind of a nats-py error (a log key), or None for reconnect noise."""
    text = str(exc).lower()
    if isinstance(exc, nats_errors.AuthorizationError) or AUTHORIZATION in text:
        return AUTHORIZATION
    if PERMISSIONS in text:
        return PERMISSIONS
    if isinstance(exc, nats_errors.SlowConsumerError):
        return SLOW_CONSUMER
    if isinstance(exc, _REPORTED_TIMEOUTS):
        return type(exc).__name__
    if isinstance(exc, _RECONNECT_NOISE):  # OSError includes TimeoutError: a reconnect attempt timed out
        return None
    if isinstance(exc, nats_errors.StaleConnectionError):
        return STALE_CONNECTION
    return type(exc).__name__


def metric_kind(kind: str) -> str:
    """A :func:`classify` kind as one of :data:`METRIC_KINDS`."""
    if kind in (AUTHORIZATION, PERMISSIONS, SLOW_CONSUMER, STALE_CONNECTION):
        return kind.replace(" ", "_")
    return "timeout" if "Timeout" in kind else "other"


def describe(exc: BaseException) -> str:
    """One line about the error (nats-py's own text names a subscription by its repr)."""
    if isinstance(exc, nats_errors.SlowConsumerError):
        return f"messages dropped on {exc.subject} (subscription {exc.sid})"
    text = str(exc) or type(exc).__name__
    return text.removeprefix("nats: ").strip("'")


def connect_failure(exc: BaseException, seen: BaseException | None) -> str:
    """Why a first connect failed, in one line.  ``seen`` is what nats-py handed the error
    callback meanwhile: its NoServersError hides a rejected credential found on the way."""
    if seen is not None and classify(seen) == AUTHORIZATION:
        return f"{AUTHORIZATION} ({_HINTS[AUTHORIZATION]})"
    if isinstance(exc, nats_errors.NoServersError):
        return "no servers available (connection refused?)"
    return str(exc) or type(exc).__name__


class NatsErrorLog:
    """Logs nats-py's asynchronous errors: one warning per kind per minute, with a count."""

    def __init__(self, clock: Callable[[], float], count: Callable[[str], None] | None = None) -> None:
        self._throttle = Throttle(clock)
        self._count = count
        self.seen: Counter[str] = Counter()
        """Errors per kind since the start, logged or held back (reconnect noise not counted)."""

    def report(self, exc: BaseException) -> None:
        """Log ``exc`` (rate-limited per kind) unless it is reconnect noise."""
        kind = classify(exc)
        if kind is None:
            log.debug("NATS: %s", describe(exc))
            return
        self.seen[kind] += 1
        if self._count is not None:
            self._count(metric_kind(kind))
        held = self._throttle.hit(kind)
        if held is None:
            return
        hint = _HINTS.get(kind)
        # An exception that is not nats-py's own escaped a subscription callback: a bug, so show where.
        bug = not isinstance(exc, (nats_errors.Error, OSError))
        log.warning(
            "NATS %s: %s%s%s",
            kind if kind in _HINTS else "error",
            describe(exc),
            f" ({hint})" if hint else "",
            more(held, f"{kind} errors"),
            exc_info=exc if bug else None,
        )


class ReportingClient(_NatsClient):
    """nats-py's client, also telling the error callback about a stale connection, and with a
    flush() that covers everything sent before it.

    nats-py drops a stale connection (unanswered pings, or the server's ``-ERR 'Stale
    Connection'``) and reconnects without calling the error callback, so a network path
    that silently eats traffic would only show as reconnects.  Overrides one private
    method; tests/test_bus_errors.py fails if a nats-py upgrade bypasses it.
    """

    async def flush(self, timeout: int = 10) -> None:
        """Write what waits for nats-py's flusher task, then PING and wait for the PONG.

        nats-py's own flush() writes its PING straight to the socket, ahead of a SUB or PUB
        still queued for the flusher task: the PONG could come back before the server had
        seen them, and a request from another connection find no responder.
        """
        await self._flush_pending(force_flush=True)
        await super().flush(timeout)

    async def _process_op_err(self, e: Exception) -> None:
        if (
            isinstance(e, nats_errors.StaleConnectionError)
            and not isinstance(e, nats_errors.UnexpectedEOF)
            and not (self.is_closed or self.is_reconnecting)
        ):
            await self._error_cb(e)
        await super()._process_op_err(e)
