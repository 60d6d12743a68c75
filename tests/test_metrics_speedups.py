"""Which aggregation runs, and the fall-back to pure Python: TMCD_NO_SPEEDUPS, the C
path's start-up self-check, and a C failure at run time (the batch is still counted once)."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests import tools
from tests.test_metrics_fastagg import batch, build_info, render
from tmcd.config import ConfigError
from tmcd.contracts.messages import SyncEvent
from tmcd.metrics import model as fleet
from tmcd.metrics.model import FleetMetrics
from tmcd.runtime.selfmetrics import SelfMetrics


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process in which the C path has not been self-checked nor given up yet."""
    monkeypatch.setattr(fleet, "_SPEEDUPS", fleet._Speedups())
    monkeypatch.delenv("TMCD_NO_SPEEDUPS", raising=False)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tmcd.metrics" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        *[(v, "c") for v in ("", "0", "false", "no", " No ")],
        *[(v, "python") for v in ("1", "true", "yes", "TRUE")],
    ],
)
def test_no_speedups_env_is_a_boolean(fresh: None, monkeypatch: pytest.MonkeyPatch, value: str, mode: str) -> None:
    if mode == "c":
        tools.require_c_extension()
    monkeypatch.setenv("TMCD_NO_SPEEDUPS", value)
    sm = SelfMetrics()
    assert FleetMetrics(sm.registry, sm.event_lag).aggregation == mode
    assert build_info(sm.registry)["speedups"] == mode
    assert fleet.speedups_mode({"TMCD_NO_SPEEDUPS": value}) == mode


@pytest.mark.parametrize("value", ["maybe", "2", "off-ish"])
def test_no_speedups_env_junk_is_a_config_error(fresh: None, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TMCD_NO_SPEEDUPS", value)
    with pytest.raises(ConfigError) as err:
        SelfMetrics()  # where a daemon starts: the CLI turns it into one line and exit 2
    assert str(err.value) == f"config: TMCD_NO_SPEEDUPS = {value!r}: expected a boolean (true/false)"


def test_speedups_required_but_missing(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "SPEEDUPS_AVAILABLE", False)
    sm = SelfMetrics()
    with pytest.raises(RuntimeError, match="not built"):
        FleetMetrics(sm.registry, sm.event_lag, speedups=True)
    sm = SelfMetrics()
    assert FleetMetrics(sm.registry, sm.event_lag).aggregation == "python"
    assert build_info(sm.registry)["speedups"] == "python"


def test_tmcd_run_with_a_junk_no_speedups_is_one_line_and_exit_2(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("tmcd")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tmcd.cli.main"]
    proc = subprocess.run(
        [*cmd, "run", "--nats-url", "nats://127.0.0.1:1", "--http-listen", "127.0.0.1:0", "--data-dir", str(tmp_path)],
        env={**os.environ, "TMCD_NO_SPEEDUPS": "maybe"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == "tmcd: config: TMCD_NO_SPEEDUPS = 'maybe': expected a boolean (true/false)\n"


class OffByOne:
    """The real C aggregate, but with one lag observation too many."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def aggregate(self, *args: Any) -> tuple[Any, ...]:
        counts, down, up, down_sum, up_sum, lag, lag_sum, failed = self.real.aggregate(*args)
        lag[0] += 1
        return counts, down, up, down_sum, up_sum, lag, lag_sum, failed


class Raising:
    """A C aggregate that raises."""

    def aggregate(self, *args: Any) -> tuple[Any, ...]:
        raise SystemError("error return without exception set")


@pytest.mark.parametrize("broken", [OffByOne, Raising])
def test_a_failed_self_check_runs_python_and_says_so_once(
    fresh: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, broken: type
) -> None:
    tools.require_c_extension()
    monkeypatch.setattr(fleet, "_fastagg", OffByOne(fleet._fastagg) if broken is OffByOne else Raising())
    caplog.set_level(logging.WARNING, logger="tmcd.metrics")
    sm = SelfMetrics()
    m = FleetMetrics(sm.registry, sm.event_lag)
    assert m.aggregation == "python"
    assert build_info(sm.registry) == {"version": "0.1.0", "speedups": "python"}
    sm2 = SelfMetrics()  # the check ran once for the process: no second line
    assert build_info(sm2.registry)["speedups"] == "python"
    (line,) = warnings(caplog)
    assert line.startswith("the start-up self-check of the C aggregation failed: ")
    assert line.endswith("; the metrics agent now runs the pure-Python aggregation")
    assert ("tmc_event_lag_seconds_bucket{le=" if broken is OffByOne else "SystemError: error return") in line
    # and what runs counts right
    events = [SyncEvent(cluster="a", timestamp=99.9, resource="v1/pods") for _ in range(3)]
    assert m.on_sync_events("a", events, 100.0) == 3
    assert render(m, sm.registry)["tmc_event_lag_seconds_count"] == 3


class Odd(SyncEvent, frozen=True, gc=False):
    """A SyncEvent subclass: the C pass reads one exact type and raises TypeError on others."""


def test_a_type_error_at_run_time_counts_that_batch_and_the_next_exactly_once(
    fresh: None, caplog: pytest.LogCaptureFixture
) -> None:
    tools.require_c_extension()
    caplog.set_level(logging.WARNING, logger="tmcd.metrics")
    sm = SelfMetrics()
    m = FleetMetrics(
        sm.registry, sm.event_lag, max_resources_per_cluster=12, on_fallback=lambda: sm.set_speedups("python")
    )
    ref_sm = SelfMetrics()
    ref = FleetMetrics(ref_sm.registry, ref_sm.event_lag, max_resources_per_cluster=12, speedups=False)
    assert (m.aggregation, build_info(sm.registry)["speedups"]) == ("c", "c")
    rng = random.Random(7)
    now = 1000.0
    first, odd, after = (batch(rng, "c-1", 300, now) for _ in range(3))
    odd[-1] = Odd(**msgspec.structs.asdict(odd[-1]))  # the C pass sees it last, after 299 events
    for events in (first, odd, after):
        for fm in (m, ref):
            assert fm.on_sync_events("c-1", events, now) == 300
        assert m.aggregation == ("c" if events is first else "python")
    assert build_info(sm.registry)["speedups"] == "python"  # by on_fallback, as the agent wires it
    (line,) = warnings(caplog)
    assert line == (
        "the C aggregation raised TypeError: events must all be SyncEvent, not Odd; "
        "the metrics agent now runs the pure-Python aggregation"
    )
    got, want = render(m, sm.registry), render(ref, ref_sm.registry)
    assert got["tmc_event_lag_seconds_count"] == 900
    assert sum(v for k, v in got.items() if k.startswith("tmc_syncer_resources_synced_total")) == 900
    for key, value in want.items():
        if key.startswith(("process_", "python_", "tmc_build_info")):
            continue
        if "_sum" in key:  # the first batch's sums come from C (plain addition, not fsum)
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
        else:
            assert got[key] == value, key
    # given up for the whole process: a new instance starts on Python
    sm = SelfMetrics()
    assert FleetMetrics(sm.registry, sm.event_lag).aggregation == "python"
    assert build_info(sm.registry)["speedups"] == "python"
    assert len(warnings(caplog)) == 1
