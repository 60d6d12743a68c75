"""``get -w``: follow a kind through tmcd's ``tmc.api.watch.<plural>`` and print a row per change,
as ``kubectl get -w`` does.

The watch starts at a list's resourceVersion, so nothing that happens after that list is
missed; tmcd streams the events to an inbox of this connection, with a BOOKMARK every few
seconds.  When a watch ends (its time is up, or tmcd stops) or tmcd goes quiet, the plugin
watches again from the last resourceVersion it saw; a 410 (it fell too far behind) ends it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

from tmcd.kubectl import columns
from tmcd.kubectl.client import API_PREFIX, NATS_HINT, Client, NatsConnection
from tmcd.kubectl.errors import CliError, ServerError, Unreachable
from tmcd.kubectl.kinds import CliKind
from tmcd.kubectl.output import render

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

QUIET = 20.0
"""Seconds without a message (tmcd sends a BOOKMARK every 5 s) before connecting and watching again."""
RETRIES = 10
"""Tries, a second apart, to watch again while no tmcd answers (one restarting)."""
END_HEADER = "Tmc-Watch-End"


class _Quiet(Exception):
    """Nothing arrived for QUIET seconds."""


class WatchConnection(NatsConnection):
    """The plugin's NATS connection with what a watch needs besides: publish with a reply subject,
    unsubscribe, and a read that gives up after a while."""

    def publish(self, subject: str, reply: str, payload: bytes) -> None:
        """Publish ``payload`` with ``reply`` as its reply subject (and the token, as requests carry it)."""
        if self.token and subject.startswith(API_PREFIX):
            head = f"NATS/1.0\r\nAuthorization: Bearer {self.token}\r\n\r\n".encode()
            pub = f"HPUB {subject} {reply} {len(head)} {len(head) + len(payload)}\r\n".encode() + head
        else:
            pub = f"PUB {subject} {reply} {len(payload)}\r\n".encode()
        self._send(pub + payload + b"\r\n")

    def unsubscribe(self, sid: str) -> None:
        """End a subscription."""
        self._send(f"UNSUB {sid}\r\n".encode())

    def receive(self, sid: str, quiet: float) -> tuple[str, dict[str, str], bytes]:
        """The next message of the subscription; :class:`_Quiet` after ``quiet`` seconds without one."""
        assert self._sock is not None
        self._sock.settimeout(quiet)
        return self.next_message(sid)

    def _fill(self) -> None:
        assert self._sock is not None
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            raise _Quiet from None
        except OSError as exc:
            raise self._fail(exc.strerror or str(exc)) from None
        if not chunk:
            raise self._fail("connection closed")
        self._buf += chunk


def watch_rows(
    client: Client,
    kind: CliKind,
    names: set[str],
    namespace: str,
    output: str,
    events: bool,
    all_namespaces: bool,
    *,
    resource_version: str = "",
    selector: str = "",
) -> Iterator[str]:
    """Rows (no header) for every change after ``resource_version`` (a list's; without one, after
    a list made now), forever; over NATS only."""
    if client.endpoint.transport != "nats":
        raise CliError("--watch needs NATS: set --nats-url")
    body: dict[str, Any] = {"namespace": namespace, "labelSelector": selector}
    if len(names) == 1:
        body["fieldSelector"] = "metadata.name=" + next(iter(names))
    body = {k: v for k, v in body.items() if v}
    if not resource_version:
        listed = client.call("list", kind, limit=1, **body)
        resource_version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
    cols, wide = columns.BY_KIND.get(kind.kind, columns.DEFAULT)
    with_ns = all_namespaces and kind.namespaced
    for event, obj in watch_events(client, kind, body, resource_version):
        if names and (obj.get("metadata") or {}).get("name") not in names:
            continue
        lines = render(kind, [obj], output, cols, wide, single=True, with_namespace=with_ns).rstrip("\n").splitlines()
        if output in ("table", "wide"):
            lines = lines[1:]  # the header was printed with the listing
        for line in lines:
            yield f"{event:<9}{line}" if events else line


def watch_events(
    client: Client, kind: CliKind, body: dict[str, Any], resource_version: str, *, deadline: float | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(ADDED|MODIFIED|DELETED, object)`` for every change after ``resource_version``, forever, or
    until ``deadline`` (a :func:`time.monotonic` time) when one is given: then it just ends."""
    ep = client.endpoint
    subject = f"tmc.api.watch.{kind.plural}"
    rv, tries, started = resource_version, 0, False
    conn: WatchConnection | None = None
    try:
        while True:
            try:
                if conn is None:
                    conn = WatchConnection(ep.url, ep.token, ep.timeout)
                    conn.connect()
                inbox = "_INBOX." + os.urandom(11).hex()
                sid = conn.subscribe(inbox)
                conn.publish(subject, inbox, json.dumps({**body, "resourceVersion": rv}).encode())
                while True:
                    wait = QUIET if deadline is None else min(QUIET, deadline - time.monotonic())
                    if wait <= 0:
                        return
                    try:
                        _, headers, data = conn.receive(sid, wait)
                    except _Quiet:
                        if deadline is not None and time.monotonic() >= deadline:
                            return
                        raise
                    event, obj = _event(ep.url, subject, headers, data)
                    started, tries = True, 0
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if event != "BOOKMARK":
                        yield event, obj
                    if headers.get(END_HEADER):
                        break  # its time is up or tmcd stops: watch again from rv
                conn.unsubscribe(sid)
            except (_Quiet, Unreachable) as exc:  # tmcd (or its NATS) went away: connect and watch again
                if conn is not None:
                    conn.close()
                    conn = None
                tries += 1
                if isinstance(exc, Unreachable) and (not started or tries > RETRIES):
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if tries > 1:
                    time.sleep(1.0)
    finally:
        if conn is not None:
            conn.close()


def _event(url: str, subject: str, headers: dict[str, str], data: bytes) -> tuple[str, dict[str, Any]]:
    """A watch message as ``(type, object)``; raises what an error reply or an ERROR event says."""
    if headers.get("Status") == "503" and not data:
        raise Unreachable(url, f"no tmcd answers {subject}", NATS_HINT)
    decoded = json.loads(data) if data else {}
    code = headers.get("Nats-Service-Error-Code", "")
    if code:
        raise ServerError(int(code) if code.isdigit() else 500, decoded, headers.get("Nats-Service-Error", ""))
    event, obj = str(decoded.get("type") or ""), decoded.get("object") or {}
    if event == "ERROR":  # fell behind the cache's window (410): list again, as kubectl does
        raise ServerError(int(obj.get("code") or 500), obj)
    return event, obj
