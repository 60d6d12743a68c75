"""Test helpers: an in-process daemon on a given NATS, tmcd as a real process, bounded polling,
HTTP gets and Prometheus text samples."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import sys
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import aiohttp
from nats.aio.client import Client

from tmcd.bus.natserrors import ReportingClient
from tmcd.config import Config, load_config
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import EmbeddedNats

if TYPE_CHECKING:
    from click.testing import Result

T = TypeVar("T")

NatsWithConfig = Callable[[str], EmbeddedNats]
"""The ``serve`` fixture: start a per-test nats-server with this configuration text."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_config(nats_url: str, data_dir: Path, **overrides: object) -> Config:
    """A config for a test daemon: given NATS, HTTP on a free port, fast consumer timeouts."""
    base: dict[str, object] = {
        "nats.url": nats_url,
        "http.listen": "127.0.0.1:0",
        "data_dir": str(data_dir),
        "consumer.fetch_timeout": 0.2,
    }
    base.update(overrides)
    return load_config(None, env={}, overrides=base)


@contextlib.asynccontextmanager
async def running_daemon(cfg: Config, **kw: Any) -> AsyncIterator[Daemon]:
    """Start a daemon, wait until every agent is started, stop it afterwards."""
    daemon = Daemon(cfg, **kw)
    await daemon.start()
    try:
        await wait_for(lambda: _all_started(daemon), what="agents started")
        yield daemon
    finally:
        await daemon.stop()


async def _all_started(daemon: Daemon) -> bool:
    assert daemon.supervisor is not None
    return all(s.started for s in daemon.supervisor.states.values())


async def wait_for(
    cond: Callable[[], Awaitable[T] | T], *, timeout: float = 10.0, what: str = "condition", step: float = 0.02
) -> T:
    """Poll a condition (a plain or an async callable) until it is truthy (bounded); returns its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return cast(T, value)
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)


async def nats_connect(url: str | list[str]) -> Client:
    """A plain NATS connection for a test, as the bus's client class: its flush() returns once the
    server has seen every SUB and PUB made before it (nats-py's own may return earlier).  A list
    names the nodes of a cluster."""
    nc = ReportingClient()
    await nc.connect(url)
    return nc


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """GET ``url``: (status, body text)."""
    async with session.get(url) as r:
        return r.status, await r.text()


async def fetch(url: str, **kw: Any) -> tuple[int, str, dict[str, str]]:
    """GET ``url`` on a session of its own: (status, body text, headers)."""
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        return r.status, await r.text(), dict(r.headers)


# --------------------------------------------------------------------------- tmcd as a real process


async def start_tmcd(*args: str, env: dict[str, str] | None = None, stdout: int | None = None) -> Process:
    """``python -m tmcd.cli.main ARGS`` as a real process; stderr is piped, stdout discarded unless given."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tmcd.cli.main",
        *args,
        stdout=asyncio.subprocess.DEVNULL if stdout is None else stdout,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


async def wait_ready(base_url: str, proc: Process, timeout: float = 30.0) -> None:
    """Poll ``/readyz`` of a tmcd process until it answers 200 (bounded); fails at once if it exits."""

    async def ready() -> bool:
        assert proc.returncode is None, f"tmcd exited ({proc.returncode}) before it was ready"
        try:
            return (await fetch(f"{base_url}/readyz"))[0] == 200
        except aiohttp.ClientError:
            return False

    await wait_for(ready, timeout=timeout, what=f"{base_url}/readyz", step=0.05)


async def read_until(stream: asyncio.StreamReader, text: str, seen: list[str], timeout: float = 30.0) -> str:
    """Read lines into ``seen`` until one contains ``text`` (bounded); returns that line."""

    async def read() -> str:
        while True:
            line = (await stream.readline()).decode()
            assert line, f"stream ended before {text!r}: {''.join(seen)}"
            seen.append(line)
            if text in line:
                return line

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(f"no line with {text!r} within {timeout}s: {''.join(seen)}") from None


async def kill(proc: Process | None) -> None:
    """Kill a process that is still running, and reap it."""
    if proc is not None and proc.returncode is None:
        proc.kill()
        await proc.wait()


def kubectl_tmc(nats_url: str | None, *args: str, input: str | None = None) -> Result:
    """``kubectl tmc ARGS`` in-process (click's CliRunner), against ``nats_url`` when given."""
    from click.testing import CliRunner

    from tmcd.kubectl.root import cli

    extra = ["--nats-url", nats_url] if nats_url is not None else []
    return CliRunner().invoke(cli, [*args, *extra], input=input, prog_name="kubectl tmc")


async def kubectl_tmc_async(*args: str, input: str | None = None) -> tuple[int, str]:
    """``kubectl tmc ARGS`` in-process, in a thread: for tests whose daemon runs on this event loop.

    Returns (exit code, output); exceptions propagate.
    """
    from click.testing import CliRunner

    from tmcd.kubectl.root import cli

    result = await asyncio.to_thread(CliRunner().invoke, cli, list(args), input=input, catch_exceptions=False)
    return result.exit_code, result.output


async def scrape(base_url: str) -> str:
    """GET /metrics."""
    async with aiohttp.ClientSession() as s, s.get(f"{base_url}/metrics") as r:
        return await r.text()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == prefix or (labels and series.startswith(name + "{") and _labels_match(series, labels)):
            return float(value)
    return 0.0


def _labels_match(series: str, labels: dict[str, str]) -> bool:
    inside = series[series.index("{") + 1 : -1]
    return all(f'{k}="{v}"' in inside for k, v in labels.items())


class CrashingAgent:
    """An agent that raises on its first ``crashes`` runs, then runs until stopped."""

    name = "crashy"

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs = 0

    async def run(self, ctx: Any) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError(f"boom {self.runs}")
        ctx.started.set()
        await ctx.stop.wait()


def new_object(kind: str, **meta: Any) -> dict[str, Any]:
    """The example object of a kind as a create request body: no status or server-set metadata."""
    import copy

    import msgspec

    from tmcd.resources.examples import example

    obj: dict[str, Any] = copy.deepcopy(msgspec.to_builtins(example(kind)))
    obj.pop("status", None)
    for k in ("resourceVersion", "uid", "creationTimestamp", "generation"):
        obj["metadata"].pop(k, None)
    obj["metadata"].update(meta)
    return obj


def nats_server_pids(store: Path) -> list[int]:
    """Pids of live (not zombie) nats-server processes whose command line names ``store``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(store) in cmdline and "nats-server" in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids
