"""The Events section of ``kubectl tmc describe``: an object's recent events, read from the
JetStream streams that store them, and kubectl's Events table.

Events are read with JetStream's message-get API (``$JS.API.STREAM.MSG.GET``) over the
plugin's small NATS client, one literal subject at a time, so a read touches only the
object's own subjects however large the stream is (TMC_SYNCER holds every sync event of
the fleet).  What is read is bounded: events of the hour before the newest one (never
before the object was created), the newest :data:`EVENT_LIMIT` of them shown, at most
:data:`MAX_SCAN` reads per subject walking forward; past that the newest ones are found by
bisecting on the stream sequence.

The subjects are spelled here rather than built with :mod:`tmcd.contracts.subjects`, which
would import msgspec into the plugin; ``tests/test_kubectl_describe_events.py`` checks that
they agree with the contract.
"""

from __future__ import annotations

import base64
import json
import time
from collections import deque

from tmcd.kubectl.errors import CliError
from tmcd.kubectl.output import NONE, cell, human_duration, parse_time, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from tmcd.kubectl.client import Client, NatsConnection

    Event = tuple[float, dict[str, Any]]
    Row = Callable[[str, dict[str, Any], float], list[str]]
    """An event as a table row: ``(channel, payload, now) -> [TYPE, REASON, AGE, FROM, MESSAGE]``."""

STREAM_SYNCER = "TMC_SYNCER"
STREAM_PLACEMENT = "TMC_PLACEMENT"
STREAM_EVENTS = "TMC_EVENTS"
EVENT_LIMIT = 20
"""The newest events shown; older ones are counted."""
EVENT_WINDOW = 3600.0
"""Events up to an hour before the newest one (kubectl's default event TTL)."""
MAX_SCAN = 1000
"""At most this many forward reads per subject, however busy the object has been."""
SEEK_SLACK = 60.0
"""Seconds before the window's start that reading begins (in stored time): the window is in
event time (each event's ``timestamp``), and a publisher whose clock runs up to this much
ahead of the NATS server's stores its events earlier than they say they happened."""
NEEDS_NATS = "events are read over NATS: set --nats-url"
HEADERS = ("TYPE", "REASON", "AGE", "FROM", "MESSAGE")
_BAD_TOKEN = frozenset(". *>\t\r\n")
_WARNING_HEALTH = ("Degraded", "Unhealthy")


class Source:
    """One subject to read events from: the stream storing it, and the ``channel`` name its
    events are tagged with (what the row function switches on)."""

    __slots__ = ("channel", "stream", "subject")

    def __init__(self, stream: str, subject: str, channel: str) -> None:
        self.stream = stream
        self.subject = subject
        self.channel = channel

    def __repr__(self) -> str:
        return f"Source({self.stream!r}, {self.subject!r}, {self.channel!r})"


class RecentEvents:
    """The newest events of one object (``(channel, payload)`` pairs, oldest first), how many
    older ones were left out (``more``: at least that many, the exact count was not read),
    or why none could be read."""

    __slots__ = ("items", "more", "older", "problem")

    def __init__(
        self, items: list[tuple[str, dict[str, Any]]], older: int = 0, problem: str = "", more: bool = False
    ) -> None:
        self.items = items
        self.older = older
        self.problem = problem
        self.more = more


# --- subjects ---------------------------------------------------------------------------------


def token_ok(name: str) -> bool:
    """Whether ``name`` can be one subject token (no dots, wildcards or spaces)."""
    return bool(name) and not _BAD_TOKEN.intersection(name)


def health_source(kind: str, name: str) -> Source:
    """``tmc.health.<kind>.<name>`` (HealthChange, TMC_EVENTS)."""
    return Source(STREAM_EVENTS, f"tmc.health.{kind}.{name}", "health")


def cluster_sources(name: str) -> list[Source]:
    """A cluster's health changes and its syncer's connection events.  Sync control
    (``tmc.ctl.sync.*``) is request/reply, stored nowhere, so it has no events here."""
    return [health_source("cluster", name), Source(STREAM_SYNCER, f"tmc.syncer.{name}.conn", "conn")]


def placement_sources(name: str) -> list[Source]:
    """A placement's decisions and health changes."""
    return [Source(STREAM_PLACEMENT, f"tmc.placement.{name}.decision", "decision"), health_source("placement", name)]


# --- reading ----------------------------------------------------------------------------------


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _when(ev: dict[str, Any], stored_at: float) -> float:
    """When an event happened: its ``timestamp``, else when it was stored."""
    ts = ev.get("timestamp")
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else stored_at


class _Stored:
    """One decoded stored message."""

    __slots__ = ("at", "payload", "seq")

    def __init__(self, seq: int, at: float, payload: dict[str, Any] | None) -> None:
        self.seq = seq
        self.at = at
        self.payload = payload


def _msg_get(conn: NatsConnection, stream: str, body: dict[str, Any]) -> _Stored | None:
    """One ``$JS.API.STREAM.MSG.GET`` request: the stored message, or None when there is none."""
    _headers, data = conn.request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps(body).encode())
    if not data:
        raise CliError("JetStream did not answer")
    try:
        reply = json.loads(data)
    except ValueError:
        raise CliError("JetStream sent a reply that is not JSON") from None
    err = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(err, dict):
        if err.get("code") == 404:  # no such message, or no such stream yet
            return None
        raise CliError(f"JetStream: {err.get('description') or err}")
    msg = reply.get("message") if isinstance(reply, dict) else None
    if not isinstance(msg, dict):
        raise CliError("JetStream sent a reply without a message")
    try:
        payload = json.loads(base64.b64decode(str(msg.get("data") or "")))
    except ValueError:
        payload = None
    at = parse_time(str(msg.get("time") or "")) or 0.0
    return _Stored(int(msg.get("seq") or 0), at, payload if isinstance(payload, dict) else None)


class _Scan:
    """What a forward read found: the newest ``keep`` events (when each happened, and its
    payload), how many events and messages were read, whether the last sequence was reached,
    and where to continue."""

    __slots__ = ("complete", "events", "found", "messages", "next_seq")

    def __init__(self, keep: int) -> None:
        self.found: deque[Event] = deque(maxlen=keep)
        self.events = 0
        self.messages = 0
        self.complete = False
        self.next_seq = 0


def _scan(
    conn: NatsConnection, src: Source, start: dict[str, Any], last: int, keep: int, reads: int, since: float
) -> _Scan:
    """Read ``src`` forward from ``start`` (``start_time`` or ``seq``) up to sequence ``last``,
    at most ``reads`` messages, keeping the events that happened at ``since`` or later."""
    out = _Scan(keep)
    req = {**start, "next_by_subj": src.subject}
    for _ in range(reads):
        msg = _msg_get(conn, src.stream, req)
        if msg is None or msg.seq > last:
            out.complete = True
            return out
        out.messages += 1
        if msg.payload is not None and (when := _when(msg.payload, msg.at)) >= since:
            out.found.append((when, msg.payload))
            out.events += 1
        out.next_seq = msg.seq + 1
        if msg.seq >= last:
            out.complete = True
            return out
        req = {"seq": out.next_seq, "next_by_subj": src.subject}
    return out


def _read(
    conn: NatsConnection, src: Source, start: float, last: int, keep: int, max_scan: int
) -> tuple[list[Event], int, bool]:
    """The newest ``keep`` events of ``src`` from ``start`` up to sequence ``last``: (events,
    how many older ones there are, whether that count is only a lower bound)."""
    head = _scan(conn, src, {"start_time": _rfc3339(start - SEEK_SLACK)}, last, keep, max_scan, start)
    if head.complete:
        return list(head.found), head.events - len(head.found), False
    # More than max_scan messages in the window: the head is not the newest.  Find a sequence
    # from which between keep and 2*keep messages remain, bisecting between where the head
    # stopped (lo: too many remain) and past the last one (hi: too few); each step reads at
    # most 2*keep messages, and there are at most 64 steps (sequences are 64-bit).
    lo, hi, cap = head.next_seq, last + 1, 2 * keep
    tail = _scan(conn, src, {"seq": lo}, last, keep, cap, start)
    if tail.complete:  # only a few after the head after all
        found = [*head.found, *tail.found][-keep:]
        return found, head.events + tail.events - len(found), False
    while hi - lo > 1:
        mid = (lo + hi) // 2
        tail = _scan(conn, src, {"seq": mid}, last, keep, cap, start)
        if not tail.complete:
            lo = mid
        elif tail.messages < keep:
            hi = mid
        else:
            # everything from the head and between it and mid is older and was not shown
            return list(tail.found), head.events + tail.events - len(tail.found), True
    # only if messages went away meanwhile (the stream's limits): the newest read from lo
    tail = _scan(conn, src, {"seq": lo}, last, keep, cap, start)
    return list(tail.found), head.events, True


def recent_events(
    client: Client,
    sources: Sequence[Source],
    created: str = "",
    *,
    limit: int = EVENT_LIMIT,
    window: float = EVENT_WINDOW,
    max_scan: int = MAX_SCAN,
) -> RecentEvents:
    """The newest ``limit`` events of ``sources`` (merged, oldest first) from the ``window``
    seconds before the newest one, none from before ``created`` (an earlier object of the
    same name); times are when events happened (their ``timestamp``).  Over HTTP there is no
    event API: the result says so."""
    if client.endpoint.transport != "nats":
        return RecentEvents([], problem=NEEDS_NATS)
    if not all(token_ok(tok) for s in sources for tok in s.subject.split(".")):
        return RecentEvents([])  # a name no subject can carry has no events
    conn = client.nats()
    try:
        lasts = [(src, _msg_get(conn, src.stream, {"last_by_subj": src.subject})) for src in sources]
        happened = {id(m): _when(m.payload or {}, m.at or time.time()) for _s, m in lasts if m is not None}
        newest = max(happened.values(), default=None)
        if newest is None:
            return RecentEvents([])
        start = max(parse_time(created) or 0.0, newest - window)
        merged: list[tuple[float, int, str, dict[str, Any]]] = []
        older, more = 0, False
        for i, (src, last) in enumerate(lasts):
            if last is None or happened[id(last)] < start:
                continue
            found, n_older, lower_bound = _read(conn, src, start, last.seq, limit, max_scan)
            merged += [(at, i, src.channel, ev) for at, ev in found]
            older += n_older
            more = more or lower_bound
    except CliError as err:
        return RecentEvents([], problem=err.message)
    # by when they happened; stable, so each subject keeps its stream order on ties
    merged.sort(key=lambda t: (t[0], t[1]))
    shown = merged[-limit:] if limit > 0 else []
    older += len(merged) - len(shown)
    return RecentEvents([(ch, ev) for _t, _i, ch, ev in shown], older=older, more=more)


# --- rendering --------------------------------------------------------------------------------


def event_age(ev: dict[str, Any], now: float) -> str:
    """The AGE column: time since the event's ``timestamp``."""
    ts = ev.get("timestamp")
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "<unknown>"
    return human_duration(now - float(ts))


def events_section(events: RecentEvents, now: float, row: Row) -> list[str]:
    """``Events:`` and kubectl's TYPE/REASON/AGE/FROM/MESSAGE table, ``<none>`` without
    events, ``<unknown> (why)`` when they could not be read."""
    if events.problem:
        return [f"Events:  <unknown> ({events.problem})"]
    if not events.items:
        return [f"Events:  {NONE}"]
    rows = [row(ch, ev, now) for ch, ev in events.items]
    lines = ["Events:", *("  " + line for line in table(HEADERS, rows).splitlines())]
    if events.older:
        s = "" if events.older == 1 and not events.more else "s"
        lines.append(f"  ({'more than ' if events.more else ''}{events.older} older event{s} not shown)")
    return lines


def health_row(ev: dict[str, Any], now: float) -> list[str]:
    """A HealthChange: Warning when the new status is Degraded or Unhealthy."""
    before, after = str(ev.get("from") or "Unknown"), str(ev.get("to") or "Unknown")
    message = f"{before} → {after}"
    if ev.get("message"):
        message += f": {ev['message']}"
    checks = ev.get("checks")
    if isinstance(checks, list) and checks:
        message += f" (failing: {', '.join(str(c) for c in checks)})"
    kind = "Warning" if after in _WARNING_HEALTH else "Normal"
    return [kind, str(ev.get("reason") or "HealthChanged"), event_age(ev, now), "health-agent", cell(message)]


def connection_row(ev: dict[str, Any], now: float) -> list[str]:
    """A syncer ConnectionEvent: Normal when connected, Warning when disconnected or reconnecting."""
    state = str(ev.get("state") or "")
    parts = [str(ev.get("reason") or "")]
    attempt = ev.get("attempt")
    if isinstance(attempt, int) and attempt > 0:
        parts.append(f"attempt {attempt}")
    message = ", ".join(p for p in parts if p) or f"syncer {state or 'connection changed'}"
    kind = "Normal" if state == "connected" else "Warning"
    return [kind, state.capitalize() or "ConnectionChanged", event_age(ev, now), "syncer", cell(message)]


def _names(names: list[Any], most: int = 3) -> str:
    shown = ", ".join(str(n) for n in names[:most])
    return shown + (f", +{len(names) - most} more" if len(names) > most else "")


def decision_row(ev: dict[str, Any], now: float) -> list[str]:
    """A PlacementDecision: Normal when bound, Warning otherwise."""
    result = str(ev.get("result") or "bound")
    chosen = ev.get("selected")
    selected: list[Any] = chosen if isinstance(chosen, list) else []
    cands = [c for c in ev.get("candidates") or [] if isinstance(c, dict)]
    message = f"selected {len(selected)} of {len(cands)} candidate{'' if len(cands) == 1 else 's'}"
    if selected:
        message += f": {_names(selected)}"
    rejected: dict[str, int] = {}
    for c in cands:
        if not c.get("selected"):
            reason = str(c.get("reason") or "NotChosen")
            rejected[reason] = rejected.get(reason, 0) + 1
    if rejected:
        message += "; not chosen: " + ", ".join(f"{n} {r}" for r, n in sorted(rejected.items()))
    by = str(ev.get("decided_by") or "scheduler")
    source = "canary-controller" if by == "canary" else "placement-engine"
    if by not in ("scheduler", "canary"):
        message += f" ({by})"
    kind = "Normal" if result == "bound" else "Warning"
    return [kind, result.capitalize(), event_age(ev, now), source, cell(message)]


def cluster_row(channel: str, ev: dict[str, Any], now: float) -> list[str]:
    """A cluster's event: a health change or a connection event."""
    return connection_row(ev, now) if channel == "conn" else health_row(ev, now)


def placement_row(channel: str, ev: dict[str, Any], now: float) -> list[str]:
    """A placement's event: a decision or a health change."""
    return decision_row(ev, now) if channel == "decision" else health_row(ev, now)
