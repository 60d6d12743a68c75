"""`tmcd sim mesh` as a real process (and its flag errors through click's runner)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.helpers import wait_for
from tmcd.bus import Bus, Delivery
from tmcd.config import NatsConfig, load_config
from tmcd.contracts import subjects
from tmcd.contracts.messages import TrafficApplied, TrafficWeights, WorkloadStats
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.sim.cli import sim

SUMMARY = re.compile(
    r"^mesh: published windows=(\d+) stats=(\d+) applied=(\d+) routes=(\d+) unrouted=(\d+) in [0-9.]+s$"
)


def mesh_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tmcd.cli.main", "sim", "mesh", *args]


async def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *mesh_cmd(*args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Listener:
    """Every WorkloadStats and TrafficApplied the mesh publishes, per run."""

    def __init__(self) -> None:
        self.stats: list[WorkloadStats] = []
        self.applied: list[TrafficApplied] = []

    async def on(self, d: Delivery[Any]) -> None:
        (self.stats if isinstance(d.msg, WorkloadStats) else self.applied).append(d.msg)


async def test_the_mesh_obeys_stored_weights_for_its_duration_and_repeats_with_the_seed(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    bus = Bus(NatsConfig(name="test"), SelfMetrics(), url=nats_server.url)
    await bus.connect(retry=False)
    try:
        await bus.provision(load_config(None, env={}))
        for route, canary in (("web", 50), ("quiet", 20)):
            await bus.js_publish(
                subjects.traffic_weights("shop", route),
                TrafficWeights(
                    namespace="shop",
                    route=route,
                    timestamp=1.0,
                    weights={"stable": 100 - canary, "canary": canary},
                    clusters=["sim-001"],
                    generation=4,
                ),
            )
        runs: list[Listener] = []
        for how in ("--nats-url", "data dir"):
            seen = Listener()
            subs = [
                await bus.subscribe("tmc.workload.>", seen.on, channel=subjects.WORKLOAD_STATS),
                await bus.subscribe(subjects.TRAFFIC_APPLIED.wildcard, seen.on, channel=subjects.TRAFFIC_APPLIED),
            ]
            if how == "--nats-url":
                args, env = ["--nats-url", nats_server.url], {"TMCD_NATS_URL": ""}
            else:  # found as `tmcd sim` finds it: DATA_DIR/nats.url, written by `tmcd run`
                (tmp_path / "nats.url").write_text(nats_server.url + "\n")
                args, env = [], {"TMCD_NATS_URL": "", "TMCD_DATA_DIR": str(tmp_path)}
            flags = ["--clusters", "2", "--rps", "3000", "--seed", "7", "--window", "0.2", "--duration", "1.1"]
            code, out, err = await run(*args, *flags, "--canary-error-ratio", "web=0.2", "--no-stats", "quiet", env=env)
            assert code == 0, err
            match = SUMMARY.match(out.strip())
            assert match is not None, out
            # web: sim-001 stable and canary, sim-002 stable, for each of 5 whole windows; quiet: none;
            # no request went unrouted
            assert match.groups() == ("5", "15", "2", "2", "0")
            await wait_for(lambda s=seen: len(s.stats) == 15 and len(s.applied) == 2, what="everything published")
            for sub in subs:
                await sub.unsubscribe()
            runs.append(seen)

        first, second = runs
        assert {(a.route, a.generation) for a in first.applied} == {("web", 4), ("quiet", 4)}
        assert {s.workload for s in first.stats} == {"web"}
        canary = [s for s in first.stats if s.track == "canary"]
        assert {s.cluster for s in canary} == {"sim-001"} and len(canary) == 5
        assert sum(s.errors for s in canary) / sum(s.requests for s in canary) == pytest.approx(0.2, abs=0.06)

        def draws(seen: Listener) -> list[tuple[Any, ...]]:
            return sorted((s.cluster, s.track, s.requests, s.errors, tuple(s.latency.counts)) for s in seen.stats)

        assert draws(first) == draws(second)  # same seed, same requests
    finally:
        await bus.close()


async def test_a_signal_stops_it_with_the_summary(nats_server: EmbeddedNats) -> None:
    proc = await asyncio.create_subprocess_exec(
        *mesh_cmd("--nats-url", nats_server.url, "--clusters", "1", "--rps", "10", "--seed", "1"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        while b"mesh: 1 clusters" not in await asyncio.wait_for(proc.stderr.readline(), 30):
            pass
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err
    assert SUMMARY.match(out.decode().strip()) is not None, out
    assert b"Traceback" not in err


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--clusters", "x", "--rps", "1", "--seed", "1"], "--clusters"),
        (["--rps", "1", "--seed", "1"], "--clusters"),
        (["--clusters", "2", "--rps", "1", "--seed", "1", "--canary-error-ratio", "web=1.5"], "--canary-error-ratio"),
    ],
)
async def test_bad_values_are_one_line_exit_2(args: list[str], flag: str) -> None:
    code, out, err = await run("--nats-url", "nats://127.0.0.1:1", *args)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and flag in lines[0], err


@pytest.mark.parametrize(
    ("args", "flag", "expected"),
    [
        (["--rps", "-1"], "--rps", "requests/s >= 0"),
        (["--rps", "nan"], "--rps", "requests/s >= 0"),
        (["--clusters", "0"], "--clusters", "at least 1"),
        (["--window", "0"], "--window", "seconds > 0"),
        (["--stable-error-ratio", "2"], "--stable-error-ratio", "0..1"),
        (["--canary-error-ratio", "0.1,0.2"], "--canary-error-ratio", "more than one value"),
        (["--canary-error-ratio", "web=x"], "--canary-error-ratio", "[ROUTE=]NUMBER"),
        (["--canary-error-ratio", "a.b=0.1"], "--canary-error-ratio", "not a route name"),
        (["--stable-latency-ms", "0"], "--stable-latency-ms", "milliseconds > 0"),
        (["--canary-latency-factor", "shop/web=0"], "--canary-latency-factor", "a factor > 0"),
        (["--fault-after", "-1"], "--fault-after", "seconds >= 0"),
        (["--no-stats", "Web"], "--no-stats", "not a route name"),
        (["--duration", "0"], "--duration", "> 0"),
        (["--bogus"], "--bogus", "No such option"),
    ],
)
def test_every_flag_is_checked(args: list[str], flag: str, expected: str, tmp_path: Path) -> None:
    base = {"--clusters": "2", "--rps": "1", "--seed": "1"}
    for i in range(0, len(args) - 1, 2):
        base.pop(args[i], None)
    given = [x for kv in base.items() for x in kv]
    result = CliRunner().invoke(
        sim, ["mesh", *given, *args, "--nats-url", "nats://127.0.0.1:1", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and flag in lines[0] and expected in lines[0], result.stderr


def test_sim_keeps_its_own_options_and_refuses_them_before_mesh(tmp_path: Path) -> None:
    before = CliRunner().invoke(sim, ["--rate", "5", "mesh", "--clusters", "1", "--rps", "1", "--seed", "1"])
    assert before.exit_code == 2 and "--rate" in before.stderr and "after its name" in before.stderr
    bad = CliRunner().invoke(sim, ["--rate", "-1", "--nats-url", "nats://127.0.0.1:1", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "--rate" in bad.stderr
    unknown = CliRunner().invoke(sim, ["mash"])
    assert unknown.exit_code == 2 and "No such command 'mash'" in unknown.stderr
    result = CliRunner().invoke(
        sim,
        ["mesh", "--clusters", "1", "--rps", "1", "--seed", "1", "--data-dir", str(tmp_path)],
        env={"TMCD_NATS_URL": None},
    )
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"error: no NATS URL: pass --nats-url or start 'tmcd run' (which writes {tmp_path / 'nats.url'})\n"
    )


def test_unreachable_nats_is_one_line_exit_1() -> None:
    result = CliRunner().invoke(
        sim, ["mesh", "--nats-url", "nats://127.0.0.1:1", "--clusters", "1", "--rps", "1", "--seed", "1"]
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("error: cannot reach NATS at nats://127.0.0.1:1")
