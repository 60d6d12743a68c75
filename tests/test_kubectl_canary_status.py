"""``kubectl tmc canary status [--watch] [--timeout]`` as a real ``kubectl-tmc`` subprocess against a
real tmcd: the status is written through the API as the canary controller will write it, and
the plugin follows it through tmcd's watch."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import new_object
from tests.tmcd_thread import Tmcd, tmcd_in_thread
from tmcd.kubectl.canary.status import status_line
from tmcd.kubectl.duration import format_duration, parse_duration
from tmcd.kubectl.errors import UsageError

KUBECTL_TMC = str(Path(sys.executable).parent / "kubectl-tmc")
NS = "shop"
STEPS = [{"setClusters": {"count": 1}}, {"setWeight": 10}, {"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]


@pytest.fixture(scope="module")
def tmcd(nats_server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tmcd]:
    """A NATS server and a tmcd whose agents leave CanaryRollout statuses as the test writes them."""
    with tmcd_in_thread(nats_server_bin, tmp_path_factory.mktemp("canary-status"), agents="metrics") as t:
        yield t


def rollout(tmcd: Tmcd, name: str, **status: Any) -> dict[str, Any]:
    """Create a rollout and, when given, write its status (as the controller does: observedGeneration 1)."""
    obj = new_object("CanaryRollout", name=name, namespace=NS)
    obj["spec"]["steps"] = STEPS
    created = tmcd.create("canaryrollouts", obj, NS)
    return write(tmcd, name, observedGeneration=1, **status) if status else created


def write(tmcd: Tmcd, name: str, **status: Any) -> dict[str, Any]:
    """Merge ``status`` into the stored rollout's status (through the status subresource, as the
    controller writes it: a patch of the rollout itself leaves the status alone)."""
    return patch(tmcd, name, {"status": status}, verb="patchstatus")


def patch(tmcd: Tmcd, name: str, body: dict[str, Any], verb: str = "patch") -> dict[str, Any]:
    return tmcd.request(
        f"tmc.api.{verb}.canaryrollouts", json.dumps({"namespace": NS, "name": name, "patch": body}).encode()
    )


def cli(tmcd: Tmcd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL_TMC, "canary", "status", *args, "-n", NS, "--nats-url", tmcd.nats_url],
        capture_output=True,
        text=True,
        timeout=30,
    )


class Watching:
    """``kubectl-tmc canary status NAME --watch ...`` running; its stdout read line by line."""

    def __init__(self, tmcd: Tmcd, name: str, *args: str) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [KUBECTL_TMC, "canary", "status", name, "--watch", *args, "-n", NS, "--nats-url", tmcd.nats_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self) -> str | None:
        """The next line printed (None once stdout is closed); bounded."""
        return self._lines.get(timeout=20)

    def end(self) -> tuple[int, list[str], str]:
        """Wait for it to exit: (exit code, the lines not read yet, stderr)."""
        try:
            code = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        rest = []
        while (line := self._lines.get_nowait()) is not None:
            rest.append(line)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code, rest, err


# --- without --watch ------------------------------------------------------------------------


def test_status_prints_phase_and_message(tmcd: Tmcd) -> None:
    rollout(tmcd, "once", phase="Progressing", currentStepIndex=2, message="step 3/5: setWeight 20")
    p = cli(tmcd, "once")
    assert (p.returncode, p.stdout, p.stderr) == (0, "Progressing - step 3/5: setWeight 20\n", "")
    write(tmcd, "once", phase="RolledBack", message="error-ratio 0.05 > 0.01")
    p = cli(tmcd, "once")  # ended badly, but without --watch it only prints
    assert (p.returncode, p.stdout) == (0, "RolledBack - error-ratio 0.05 > 0.01\n")


def test_status_without_a_message_names_the_step(tmcd: Tmcd) -> None:
    rollout(tmcd, "quiet")
    assert cli(tmcd, "quiet").stdout == "Pending\n"
    write(tmcd, "quiet", phase="Paused", currentStepIndex=3, observedGeneration=1)
    assert cli(tmcd, "quiet").stdout == "Paused - step 4/5: pause: until promoted\n"


def test_status_of_an_unknown_rollout(tmcd: Tmcd) -> None:
    p = cli(tmcd, "missing")
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr.startswith("Error from server (NotFound):") and len(p.stderr.splitlines()) == 1
    p = cli(tmcd, "missing", "--watch")
    assert p.returncode == 1 and p.stderr.startswith("Error from server (NotFound):")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["Bad.Name"], "error: rollout 'Bad.Name' is not a valid name"),
        (["x", "--timeout", "5m"], "error: --timeout is for --watch"),
        (["x", "--watch", "--timeout", "5"], "error: --timeout '5': want a duration such as 90s, 5m or 1h30m"),
        (["x", "--watch", "--timeout", "-1s"], "error: --timeout '-1s': want a duration"),
        ([], "error: Missing argument 'NAME'"),
    ],
)
def test_usage_errors(tmcd: Tmcd, args: list[str], error: str) -> None:
    p = cli(tmcd, *args)
    assert (p.returncode, p.stdout) == (2, "") and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith(error), p.stderr


# --- --watch --------------------------------------------------------------------------------


def test_watch_until_succeeded_exits_0(tmcd: Tmcd) -> None:
    rollout(tmcd, "good", phase="Progressing", currentStepIndex=1, message="step 2/5: setWeight 10")
    w = Watching(tmcd, "good", "--timeout", "2m")
    assert w.line() == "Progressing - step 2/5: setWeight 10"  # read: what follows comes through the watch
    write(tmcd, "good", currentStepIndex=2, message="step 3/5: setWeight 20")
    assert w.line() == "Progressing - step 3/5: setWeight 20"
    write(tmcd, "good", currentWeight=20, appliedWeight=20)  # no change of phase or message: nothing printed
    write(tmcd, "good", phase="Paused", currentStepIndex=3, message="step 4/5: paused until promoted")
    write(tmcd, "good", phase="Promoting", message="100% on every cluster")
    write(tmcd, "good", phase="Succeeded", currentStepIndex=5, message="ghcr.io/acme/web:1.1 is stable")
    code, rest, err = w.end()
    assert (code, err) == (0, "")
    assert rest == [
        "Paused - step 4/5: paused until promoted",
        "Promoting - 100% on every cluster",
        "Succeeded - ghcr.io/acme/web:1.1 is stable",
    ]


def test_watch_until_rolled_back_exits_1(tmcd: Tmcd) -> None:
    rollout(tmcd, "bad", phase="Progressing", currentStepIndex=2, message="step 3/5: setWeight 20")
    w = Watching(tmcd, "bad")
    assert w.line() == "Progressing - step 3/5: setWeight 20"
    write(tmcd, "bad", phase="RollingBack", message="error-ratio failed 2 of 3 measurements")
    write(tmcd, "bad", phase="RolledBack", message="all traffic on stable")
    code, rest, err = w.end()
    assert code == 1
    assert rest == ["RollingBack - error-ratio failed 2 of 3 measurements", "RolledBack - all traffic on stable"]
    assert err == "error: canaryrollout.tmc.kcp.io/bad was rolled back\n"


def test_watch_of_an_ended_rollout_returns_at_once(tmcd: Tmcd) -> None:
    rollout(
        tmcd,
        "broken",
        phase="Degraded",
        message="spec.trafficRouting.canaryService: required for the gateway-api router",
    )
    p = cli(tmcd, "broken", "--watch")
    assert (p.returncode, p.stdout) == (
        1,
        "Degraded - spec.trafficRouting.canaryService: required for the gateway-api router\n",
    )
    assert p.stderr == "error: canaryrollout.tmc.kcp.io/broken is degraded\n"
    rollout(tmcd, "done", phase="Succeeded", message="released")
    p = cli(tmcd, "done", "--watch", "--timeout", "1h")
    assert (p.returncode, p.stdout, p.stderr) == (0, "Succeeded - released\n", "")


def test_watch_times_out_with_exit_1(tmcd: Tmcd) -> None:
    rollout(tmcd, "slow", phase="Paused", currentStepIndex=3, message="step 4/5: paused until promoted")
    w = Watching(tmcd, "slow", "--timeout", "1.5s")
    assert w.line() == "Paused - step 4/5: paused until promoted"
    code, rest, err = w.end()
    elapsed = time.monotonic() - w.started
    assert (code, rest) == (1, [])
    assert err == "error: timed out after 1.5s waiting for canaryrollout.tmc.kcp.io/slow to finish (still Paused)\n"
    assert 1.5 <= elapsed < 15, elapsed


def test_watch_waits_for_the_controller_to_see_a_new_spec(tmcd: Tmcd) -> None:
    """After a spec change, the last run's Succeeded is not the end: the next one is."""
    rollout(tmcd, "again", phase="Succeeded", message="1.1 is stable")
    changed = patch(tmcd, "again", {"spec": {"canaryVersion": "ghcr.io/acme/web:1.2"}})
    assert changed["metadata"]["generation"] == 2
    w = Watching(tmcd, "again")
    assert w.line() == "Succeeded - waiting for the controller to observe generation 2"
    write(tmcd, "again", phase="Progressing", observedGeneration=2, currentStepIndex=0, message="step 1/5")
    assert w.line() == "Progressing - step 1/5"
    write(tmcd, "again", phase="Succeeded", message="1.2 is stable")
    assert w.end() == (0, ["Succeeded - 1.2 is stable"], "")


def test_watch_of_a_deleted_rollout_fails(tmcd: Tmcd) -> None:
    rollout(tmcd, "gone", phase="Progressing", message="step 1/5")
    w = Watching(tmcd, "gone")
    assert w.line() == "Progressing - step 1/5"
    tmcd.request("tmc.api.delete.canaryrollouts", json.dumps({"namespace": NS, "name": "gone"}).encode())
    assert w.end() == (1, [], "error: canaryrollout.tmc.kcp.io/gone was deleted\n")


# --- pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("500ms", 0.5), ("+2m3s", 123.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "m", "-1s", "1..5s", ".s", "1h 30m", "s5"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="want a duration such as 90s, 5m or 1h30m"):
        parse_duration(text)


def test_format_duration_as_go_prints_it() -> None:
    assert [format_duration(s) for s in (0, 0.5, 1.5, 90, 300, 3600, 5400.5)] == [
        "0s",
        "500ms",
        "1.5s",
        "1m30s",
        "5m0s",
        "1h0m0s",
        "1h30m0.5s",
    ]


def test_status_line_of_odd_objects() -> None:
    assert status_line({}) == "Pending"
    assert status_line({"status": {"phase": "Progressing"}, "spec": {}}) == "Progressing"
    steps = {"steps": [{"setWeight": 5}]}
    assert status_line({"status": {"phase": "Paused", "currentStepIndex": 0}, "spec": steps}) == (
        "Paused - step 1/1: setWeight: 5%"
    )
    stale = {"metadata": {"generation": 4}, "status": {"phase": "Degraded", "observedGeneration": 3}}
    assert status_line(stale) == "Degraded - waiting for the controller to observe generation 4"
    never = {"metadata": {"generation": 4}, "status": {"phase": "Succeeded", "message": "ok"}}
    assert status_line(never) == "Succeeded - ok"  # no observedGeneration written: taken as current


def test_rollout_names_complete(tmcd: Tmcd) -> None:
    from click.testing import CliRunner

    from tmcd.kubectl.root import cli as root

    for name in ("comp-alpha", "comp-beta"):
        rollout(tmcd, name)
    for verb in ("promote", "status"):
        words = f"kubectl-tmc canary {verb} -n {NS} --nats-url {tmcd.nats_url} comp-"
        env = {"_KUBECTL_TMC_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": "7"}
        r = CliRunner().invoke(root, [], prog_name="kubectl-tmc", env=env)
        assert r.stdout.split() == ["plain,comp-alpha", "plain,comp-beta"], (verb, r.output)
    words = "kubectl-tmc canary abort --nats-url nats://127.0.0.1:1 comp-"  # no tmcd: nothing, quickly
    env = {"_KUBECTL_TMC_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": "5"}
    r = CliRunner().invoke(root, [], prog_name="kubectl-tmc", env=env)
    assert r.exit_code == 0 and r.stdout.split() == []


def test_status_over_http(tmcd: Tmcd) -> None:
    rollout(tmcd, "http", phase="Progressing", message="step 2/5: setWeight 10")
    env = {k: v for k, v in os.environ.items() if k not in ("TMC_NATS_URL", "KUBECONFIG")}
    base = [KUBECTL_TMC, "canary", "status", "http", "-n", NS, "--server", tmcd.http_url]
    p = subprocess.run(base, capture_output=True, text=True, timeout=30, env=env)
    assert (p.returncode, p.stdout, p.stderr) == (0, "Progressing - step 2/5: setWeight 10\n", "")
    p = subprocess.run([*base, "--watch"], capture_output=True, text=True, timeout=30, env=env)
    assert (p.returncode, p.stdout, p.stderr) == (1, "", "error: --watch needs NATS: set --nats-url\n")
