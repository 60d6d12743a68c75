"""`tmcd sim`: publish simulated syncer streams for a fleet of clusters to NATS."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import click

from tmcd.sim.model import SimOptionError, SimOptions, validate_options

if TYPE_CHECKING:
    from tmcd.bus import Bus
    from tmcd.config import NatsConfig

log = logging.getLogger("tmcd.sim")

CONNECT_TIMEOUT = 10.0
_DEFAULT_PORTS = {"nats": 4222, "tls": 4222, "ws": 80, "wss": 443}


class SimUsageError(click.UsageError):
    """A usage error shown as one line: ``error: <message>`` (exit code 2)."""

    def __init__(self, message: str, ctx: click.Context | None = None) -> None:
        super().__init__(" ".join(message.split()), ctx)

    def show(self, file: IO[Any] | None = None) -> None:
        """Print ``error: <message>`` on stderr, without the usage text."""
        click.echo(f"error: {self.format_message()}", file=file, err=True)


class _SimCommand(click.Command):
    """Turns click's own parse errors into one-line :class:`SimUsageError`s."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except SimUsageError:
            raise
        except click.UsageError as exc:
            raise SimUsageError(exc.format_message(), ctx) from exc


class _SimGroup(click.Group):
    """`tmcd sim [OPTIONS]` runs the syncer simulator; `tmcd sim mesh ...` the mock service mesh
    (loaded only when named).  Parse errors are one line, as for the commands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except SimUsageError:
            raise
        except click.UsageError as exc:
            raise SimUsageError(exc.format_message(), ctx) from exc

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise SimUsageError(exc.format_message(), ctx) from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return ["mesh"]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name != "mesh":
            return None
        from tmcd.sim.mesh_cli import mesh

        return mesh


def _bad(option: str, expected: str) -> SimUsageError:
    return SimUsageError(f"invalid value for --{option.replace('_', '-')}: {expected}")


def _names(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _ratios(value: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        name, sep, ratio = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError(part)
            out[name.strip()] = float(ratio)
        except ValueError:
            raise _bad("error_ratio", f"expected NAME=RATIO[,NAME=RATIO...], got {part!r}") from None
    return out


def resolve_url(nats_url: str | None, data_dir: Path) -> str:
    """--nats-url (or $TMCD_NATS_URL, or the config file's nats.url), else the URL a running
    `tmcd run` wrote to DATA_DIR/nats.url."""
    if nats_url:
        return nats_url
    url_file = data_dir / "nats.url"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        url = url_file.read_text().strip()
        if url:
            return url
    raise SimUsageError(f"no NATS URL: pass --nats-url or start 'tmcd run' (which writes {url_file})")


def _os_reason(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


async def _probe(url: str, timeout: float) -> str | None:
    """Why no server of ``url`` accepts TCP connections, or None if one does."""
    from tmcd.bus.options import servers

    reason = "no server in URL"
    for server in servers(url):
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        try:
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 4222)
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname or "127.0.0.1", port), timeout)
        except (OSError, ValueError, TimeoutError) as exc:
            reason = _os_reason(exc)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None
    return reason


class _SimFailed(Exception):
    """The simulator could not run: ``message`` is the whole error line (without ``error:``)."""


def nats_settings(config_file: str | None) -> NatsConfig:
    """The ``[nats]`` settings of ``--config`` (else ``$TMCD_CONFIG``) and ``TMCD_NATS_*``: the
    credentials (user/password, token, NKey seed, creds file) and TLS a syncer's NATS user needs.
    A bad value is a ConfigError (one line, exit code 2)."""
    import msgspec

    from tmcd.config import load_config

    return msgspec.structs.replace(load_config(config_file).nats, name="tmcd-sim")


async def _connect(url: str, cfg: NatsConfig) -> Bus:
    """A connected Bus; raises _SimFailed with the reason NATS cannot be reached."""
    from tmcd.bus import Bus, BusError
    from tmcd.runtime.selfmetrics import SelfMetrics
    from tmcd.sim.runner import close_bus

    reason = await _probe(url, CONNECT_TIMEOUT)
    if reason is None:
        bus = Bus(cfg, SelfMetrics(), url=url)
        try:
            # nats-py retries some failures forever even with retry=False: bound the wait.
            await asyncio.wait_for(bus.connect(retry=False), CONNECT_TIMEOUT)
            return bus
        except BusError as exc:
            reason = str(exc).removeprefix(f"cannot connect to NATS at {url}: ")
        except TimeoutError:
            reason = f"no NATS handshake within {CONNECT_TIMEOUT:g}s"
        await close_bus(bus)
    raise _SimFailed(f"cannot reach NATS at {url}: {reason}")


class StopSignals:
    """SIGINT and SIGTERM ask the simulator to stop, in every state: while connecting, running,
    reconnecting or closing.  Installed before the event loop starts, so no KeyboardInterrupt
    (and no traceback) ever comes from them; once :meth:`attach` is called they set the
    loop's stop event.  Restores the previous handlers on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def attach(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        """Set ``event`` (on ``loop``) on the next signal, or now if one came already."""
        self._loop, self._event = loop, event
        if self.received is not None:
            self._stop_now()

    def _handle(self, signum: int, _frame: object) -> None:
        # Runs between two bytecodes of the main thread: only record, and hand the rest to the loop.
        first = self.received is None
        self.received = signal.Signals(signum)
        loop = self._loop
        if first and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop_now)  # also wakes a loop waiting in select()

    def _stop_now(self) -> None:
        assert self.received is not None and self._event is not None
        log.info("received %s: stopping", self.received.name)
        self._event.set()


class _Stats(Protocol):
    def summary(self) -> str: ...


def run_command(
    ctx: click.Context,
    nats_url: str | None,
    data_dir: str,
    duration: float | None,
    who: tuple[str, str],
    serve: Callable[[Bus, asyncio.Event, float | None], Awaitable[_Stats]],
    empty: Callable[[], _Stats],
    config_file: str | None = None,
) -> None:
    """What `tmcd sim` and `tmcd sim mesh` do once their options are valid: check --duration, find
    NATS, run ``serve`` until SIGINT/SIGTERM or the duration, print the summary line (``who``:
    its prefix and the name in a failure, e.g. ``("sim", "simulator")``; ``serve`` publishes until
    the event is set or the duration ends and returns what it published; ``empty`` is that when
    stopped before NATS answered); exit 1 when it fails.  NATS credentials and TLS come from
    ``config_file``'s ``[nats]`` and ``TMCD_NATS_*`` (:func:`nats_settings`), as for `tmcd run`."""
    if duration is not None and not duration > 0:
        raise _bad("duration", f"expected seconds > 0, got {duration:g}")
    nats = nats_settings(config_file)
    url = resolve_url(nats_url or nats.url, Path(data_dir))
    if not logging.getLogger().handlers:
        from tmcd.runtime.logs import setup_logging

        setup_logging("info")
    try:
        with StopSignals() as signals:
            summary = asyncio.run(_serve(url, nats, who, serve, empty, duration, signals))
    except _SimFailed as exc:
        click.echo(f"error: {' '.join(str(exc).split())}", err=True)
        ctx.exit(1)
    click.echo(summary)


async def _serve(
    url: str,
    nats: NatsConfig,
    who: tuple[str, str],
    serve: Callable[[Bus, asyncio.Event, float | None], Awaitable[_Stats]],
    empty: Callable[[], _Stats],
    duration: float | None,
    signals: StopSignals,
) -> str:
    from tmcd.sim.runner import close_bus

    prefix, name = who
    stop = asyncio.Event()
    signals.attach(asyncio.get_running_loop(), stop)
    started = time.monotonic()
    bus = await _until_stopped(_connect(url, nats), stop)
    if bus is None:  # stopped before NATS answered: nothing was published
        return f"{prefix}: published {empty().summary()} in {time.monotonic() - started:.1f}s"
    try:
        stats = await serve(bus, stop, duration)
    except Exception as exc:
        raise _SimFailed(f"{name} stopped: {exc or type(exc).__name__}") from exc
    finally:
        if not bus.connected:
            log.warning("stopping while NATS is unreachable: what was published since it went away is lost")
        await close_bus(bus)
    return f"{prefix}: published {stats.summary()} in {time.monotonic() - started:.1f}s"


async def _simulate(bus: Bus, stop: asyncio.Event, duration: float | None, *, opts: SimOptions) -> _Stats:
    from tmcd.sim.runner import run_sim

    return await run_sim(bus, opts, stop, duration=duration)


def _no_sim_stats() -> _Stats:
    from tmcd.sim.runner import SimStats

    return SimStats()


async def _until_stopped(connect: Coroutine[Any, Any, Bus], stop: asyncio.Event) -> Bus | None:
    """The connected bus, or None when ``stop`` is set first (a bus that connects anyway is closed)."""
    task = asyncio.ensure_future(connect)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
        await asyncio.wait({task, stopped})
    if task.cancelled():
        return None
    bus = task.result()  # raises _SimFailed
    if stop.is_set():
        from tmcd.sim.runner import close_bus

        await close_bus(bus)
        return None
    return bus


@click.group("sim", cls=_SimGroup, invoke_without_command=True)
@click.option(
    "--nats-url",
    metavar="URL",
    envvar="TMCD_NATS_URL",
    help="NATS URL [default: $TMCD_NATS_URL, else DATA_DIR/nats.url].",
)
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help="TOML config file whose [nats] credentials and TLS settings to use (default: $TMCD_CONFIG; TMCD_NATS_* too).",
)
@click.option("--clusters", metavar="N", type=int, default=20, show_default=True, help="Simulated clusters.")
@click.option("--rate", metavar="R", type=float, default=100.0, show_default=True, help="Sync events/s (whole fleet).")
@click.option("--seed", metavar="S", type=int, default=1, show_default=True, help="Random seed.")
@click.option("--duration", metavar="SECONDS", type=float, help="Stop after this long [default: until Ctrl-C].")
@click.option(
    "--heartbeat-interval", metavar="SECONDS", type=float, default=20.0, show_default=True, help="Heartbeat period."
)
@click.option("--stop-heartbeats", metavar="NAME,...", default="", help="Clusters that stop heartbeating.")
@click.option("--error-ratio", metavar="NAME=RATIO,...", default="", help="Fraction (0..1) of failing syncs.")
@click.option("--disconnect", metavar="NAME,...", default="", help="Clusters that disconnect.")
@click.option(
    "--fault-after",
    metavar="SECONDS",
    type=float,
    default=5.0,
    show_default=True,
    help="Faults start this long after a cluster's first heartbeat.",
)
@click.option(
    "--batch/--no-batch",
    default=True,
    show_default=True,
    help="Publish sync events in SyncEventBatch messages (every 100 ms or 500 events), as a syncer does.",
)
@click.option(
    "--per-cluster-control",
    is_flag=True,
    help="Answer control requests on each cluster's own tmc.ctl.sync.<cluster>.* rather than on "
    "tmc.ctl.sync.*.*, as real syncers do (for a syncer's NATS user, allowed only its own subject).",
)
@click.option(
    "--data-dir",
    metavar="DIR",
    envvar="TMCD_DATA_DIR",
    default=".tmcd",
    show_default=True,
    help="Where 'tmcd run' writes nats.url ($TMCD_DATA_DIR).",
)
@click.pass_context
def sim(
    ctx: click.Context,
    nats_url: str | None,
    config_file: str | None,
    clusters: int,
    rate: float,
    seed: int,
    duration: float | None,
    heartbeat_interval: float,
    stop_heartbeats: str,
    error_ratio: str,
    disconnect: str,
    fault_after: float,
    batch: bool,
    per_cluster_control: bool,
    data_dir: str,
) -> None:
    """Publish realistic syncer streams (heartbeats, sync and connection events) for N clusters.

    `tmcd sim mesh --help`: the mock service mesh (routes obeying TrafficWeights, WorkloadStats).
    """
    if ctx.invoked_subcommand is not None:
        given = [
            f"--{name.replace('_', '-')}"
            for name in ctx.params
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise SimUsageError(f"{', '.join(given)}: give the options of '{ctx.invoked_subcommand}' after its name")
        return
    opts = SimOptions(
        clusters=clusters,
        rate=rate,
        seed=seed,
        heartbeat_interval=heartbeat_interval,
        stop_heartbeats=_names(stop_heartbeats),
        error_ratio=_ratios(error_ratio),
        disconnect=_names(disconnect),
        fault_after=fault_after,
        batch=batch,
        per_cluster_control=per_cluster_control,
    )
    try:
        validate_options(opts)
    except SimOptionError as exc:
        raise _bad(exc.option, exc.expected) from None
    simulate = functools.partial(_simulate, opts=opts)
    run_command(ctx, nats_url, data_dir, duration, ("sim", "simulator"), simulate, _no_sim_stats, config_file)


if __name__ == "__main__":
    sim()
