"""`tmcd sim mesh`: the mock service mesh, routes obeying TrafficWeights and reporting WorkloadStats."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

import click

from tmcd.contracts.names import is_valid_name
from tmcd.sim.cli import (
    SimUsageError,
    _SimCommand,
    run_command,
)
from tmcd.sim.mesh import MeshOptionError, MeshOptions, RouteValues, validate_options

if TYPE_CHECKING:
    from tmcd.bus import Bus
    from tmcd.sim.mesh_runner import MeshStats

log = logging.getLogger("tmcd.sim.mesh")


def _bad(option: str, expected: str) -> SimUsageError:
    return SimUsageError(f"invalid value for --{option.replace('_', '-')}: {expected}")


def _route_key(option: str, key: str) -> str:
    """``ROUTE`` or ``NAMESPACE/ROUTE``, each a DNS-1123 label."""
    parts = key.split("/")
    if len(parts) > 2 or not all(is_valid_name(p) for p in parts):
        raise _bad(option, f"{key!r} is not a route name (ROUTE or NAMESPACE/ROUTE, DNS-1123 labels)")
    return key


def route_values(option: str, text: str) -> RouteValues:
    """Parse ``[ROUTE=]X,...``: a bare value is the default for every route, ``ROUTE=X`` one route's."""
    default: float | None = None
    routes: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise _bad(option, f"expected [ROUTE=]NUMBER[,...], got {part!r}") from None
        if not sep:
            if default is not None:
                raise _bad(option, f"more than one value for every route ({default:g} and {number:g})")
            default = number
        else:
            routes[_route_key(option, key.strip())] = number
    return RouteValues(default, routes)


def route_names(option: str, text: str) -> frozenset[str]:
    """Parse ``ROUTE,...`` (``NAMESPACE/ROUTE`` names one namespace's route)."""
    return frozenset(_route_key(option, p.strip()) for p in text.split(",") if p.strip())


def _no_stats() -> MeshStats:
    from tmcd.sim.mesh_runner import MeshStats

    return MeshStats()


async def _serve(bus: Bus, stop: asyncio.Event, duration: float | None, *, opts: MeshOptions) -> MeshStats:
    from tmcd.sim.mesh_runner import run_mesh

    return await run_mesh(bus, opts, stop, duration=duration)


@click.command("mesh", cls=_SimCommand)
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
@click.option("--clusters", metavar="N", type=int, required=True, help="Clusters, named as `tmcd sim` names them.")
@click.option("--rps", metavar="R", type=float, required=True, help="Requests/s per cluster per route.")
@click.option("--seed", metavar="S", type=int, required=True, help="Random seed: same seed, same requests.")
@click.option("--window", metavar="SECONDS", type=float, default=10.0, show_default=True, help="Stats window.")
@click.option(
    "--stable-error-ratio", metavar="X", type=float, default=0.005, show_default=True, help="Stable's error ratio."
)
@click.option(
    "--canary-error-ratio", metavar="[ROUTE=]X,...", default="", help="Canary's error ratio [default: stable's]."
)
@click.option(
    "--stable-latency-ms", metavar="MS", type=float, default=50.0, show_default=True, help="Stable's median latency."
)
@click.option(
    "--canary-latency-factor",
    metavar="[ROUTE=]F,...",
    default="",
    help="Canary latency / stable latency [default: 1].",
)
@click.option(
    "--fault-after",
    metavar="SECONDS",
    type=float,
    default=0.0,
    show_default=True,
    help="The canary's error ratio and latency factor apply this long after it first gets traffic.",
)
@click.option("--no-stats", metavar="ROUTE,...", default="", help="Routes that obey weights but publish no stats.")
@click.option("--duration", metavar="SECONDS", type=float, help="Stop after this long [default: until Ctrl-C].")
@click.option(
    "--data-dir",
    metavar="DIR",
    envvar="TMCD_DATA_DIR",
    default=".tmcd",
    show_default=True,
    help="Where 'tmcd run' writes nats.url ($TMCD_DATA_DIR).",
)
@click.pass_context
def mesh(
    ctx: click.Context,
    nats_url: str | None,
    config_file: str | None,
    clusters: int,
    rps: float,
    seed: int,
    window: float,
    stable_error_ratio: float,
    canary_error_ratio: str,
    stable_latency_ms: float,
    canary_latency_factor: str,
    fault_after: float,
    no_stats: str,
    duration: float | None,
    data_dir: str,
) -> None:
    """A mock service mesh: every route obeys its TrafficWeights; every window it reports
    WorkloadStats (requests, errors, latency) per cluster, route and track."""
    opts = MeshOptions(
        clusters=clusters,
        rps=rps,
        seed=seed,
        window=window,
        stable_error_ratio=stable_error_ratio,
        canary_error_ratio=route_values("canary_error_ratio", canary_error_ratio),
        stable_latency_ms=stable_latency_ms,
        canary_latency_factor=route_values("canary_latency_factor", canary_latency_factor),
        fault_after=fault_after,
        no_stats=route_names("no_stats", no_stats),
    )
    try:
        validate_options(opts)
    except MeshOptionError as exc:
        raise _bad(exc.option, exc.expected) from None
    serve = functools.partial(_serve, opts=opts)
    run_command(ctx, nats_url, data_dir, duration, ("mesh", "mesh"), serve, _no_stats, config_file)
