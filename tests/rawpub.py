"""Publish ready-made NATS messages into a JetStream stream over one plain socket, as fast as
the server stores them: a burst from a process of its own, as syncers publish from theirs.

    python tests/rawpub.py HOST PORT FILE TIMES [WINDOW]

FILE holds ``subject``, ``size`` and ``payload`` lines (see :func:`pub_file`).  Every message
goes out as a JetStream publish (a ``PUB`` with a reply subject) with at most WINDOW (default
128) unacknowledged, as a client's async publish with a pending limit does: a core-NATS publish
with no limit is dropped by nats-server once the stream's ingest queue is full ("Dropping
messages due to excessive stream ingest rate"), and a syncer that must not lose events waits
for acks.  A message the server refuses is sent again.

Connects, prints ``ready``, waits for a line on stdin, publishes FILE TIMES times, and prints
the seconds from the first write until the last ack, then the count of messages sent again.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections import deque

INBOX = f"_RAWPUB.{os.getpid()}"
"""Where this process's acks come back (one per publisher process)."""


def pub_file(messages: list[tuple[str, bytes]]) -> bytes:
    """The FILE format: each message as ``subject size\\n`` then its payload and ``\\n``."""
    return b"".join(b"%s %d\n%s\n" % (s.encode(), len(d), d) for s, d in messages)


def _read_file(path: str) -> list[tuple[bytes, bytes]]:
    out = []
    with open(path, "rb") as f:
        while head := f.readline():
            subject, size = head.split()
            out.append((subject, f.read(int(size))))
            f.read(1)
    return out


class Acks:
    """Reads the server's answers: PONGs, and the JetStream acks on ``_RAWPUB.<pid>.<n>``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""
        self.pongs = 0

    def line(self) -> bytes:
        """The next protocol line, without its CRLF."""
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("rawpub: the server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _payload(self, size: int) -> bytes:
        while len(self.buf) < size + 2:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("rawpub: the server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:size], self.buf[size + 2 :]
        return data

    def next(self) -> tuple[int, bool] | None:
        """The next ack: (message number, stored?); None for a PONG."""
        while True:
            line = self.line()
            if line.startswith(b"MSG "):
                parts = line.split()
                number = int(parts[1].rsplit(b".", 1)[1])
                answer = json.loads(self._payload(int(parts[-1])))
                return number, "error" not in answer
            if line == b"PONG":
                self.pongs += 1
                return None
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise SystemExit(f"rawpub: the server said {line!r}")


def main(argv: list[str]) -> int:
    host, port, path, times = argv[0], int(argv[1]), argv[2], int(argv[3])
    window = int(argv[4]) if len(argv) > 4 else 128
    messages = _read_file(path)
    with socket.create_connection((host, port), timeout=60) as sock:
        acks = Acks(sock)
        if not acks.line().startswith(b"INFO"):
            raise SystemExit("rawpub: not a NATS server")
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB %s.* 1\r\nPING\r\n' % INBOX.encode())
        while acks.next() is not None:
            pass
        print("ready", flush=True)
        sys.stdin.readline()
        todo = deque(i for _ in range(times) for i in range(len(messages)))
        sent: dict[int, int] = {}  # message number -> index into messages
        number = resent = 0
        t0 = time.perf_counter()
        while todo or sent:
            out = []
            while todo and len(sent) < window:
                index = todo.popleft()
                subject, data = messages[index]
                out.append(b"PUB %s %s.%d %d\r\n%s\r\n" % (subject, INBOX.encode(), number, len(data), data))
                sent[number] = index
                number += 1
            if out:
                sock.sendall(b"".join(out))
            got = acks.next()
            if got is None:
                continue
            n, stored = got
            if n not in sent:
                raise SystemExit(f"rawpub: an ack for message {n}, which is not waiting for one")
            index = sent.pop(n)
            if not stored:
                todo.append(index)
                resent += 1
        print(f"{time.perf_counter() - t0:.6f}", flush=True)
        print(resent, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
