"""`kubectl tmc dashboard` in a real terminal (tmux) against a real tmcd and simulator: it opens with
the fleet, switches views with keys, and quits with q -- read back with tmux capture-pane."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path

import pytest

from tests import tools
from tests.helpers import free_port, kill, wait_for, wait_ready

KUBECTL_TMC = str(Path(sys.executable).parent / "kubectl-tmc")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[list[str]]:
    """A tmux server of this test's own (its own socket), killed afterwards."""
    binary = tools.require("tmux")
    base = [binary, "-S", str(tmp_path / "tmux.sock")]
    yield base
    subprocess.run([*base, "kill-server"], capture_output=True, timeout=10)


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """A tmux command: (exit code, stdout)."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def screen(tmux: list[str]) -> str:
    return (await run(*tmux, "capture-pane", "-p", "-t", "dash"))[1]


async def keys(tmux: list[str], key: str) -> None:
    assert (await run(*tmux, "send-keys", "-t", "dash", key))[0] == 0


async def test_the_dashboard_in_a_real_terminal(tmux: list[str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TMCD_NATS_URL", "TMCD_DATA_DIR", "TMC_NATS_URL")}
    env.update(TMCD_HEALTH_STARTUP_GRACE="0", TMCD_HEALTH_SUCCESS_THRESHOLD="0", TMCD_HEALTH_INTERVAL="0.2")
    log = (tmp_path / "tmcd.log").open("wb")
    tmcd = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tmcd.cli.main", "run", "--data-dir", str(data), "--http-listen", f"127.0.0.1:{port}",
        stdout=log, stderr=log, env=env,
    )  # fmt: skip
    sim = None
    try:
        await wait_ready(f"http://127.0.0.1:{port}", tmcd, 60)
        url = (data / "nats.url").read_text().strip()
        sim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tmcd.cli.main", "sim", "--data-dir", str(data), "--clusters", "4", "--rate", "20",
            "--heartbeat-interval", "1", stdout=log, stderr=log, env=env,
        )  # fmt: skip
        term = {**env, "TERM": "xterm-256color"}
        cmd = f"{shutil.which('kubectl') or KUBECTL_TMC} {'tmc ' if shutil.which('kubectl') else ''}dashboard"
        path = f"{Path(sys.executable).parent}:{term.get('PATH', '')}"
        new = [*tmux, "new-session", "-d", "-s", "dash", "-x", "100", "-y", "30", f"{cmd} --nats-url {url}"]
        assert (await run(*new, env={**term, "PATH": path}))[0] == 0

        async def shows(*words: str) -> bool:
            text = (await screen(tmux)).lower()
            return all(w.lower() in text for w in words)

        await wait_for(lambda: shows("sim-001", "sim-004"), timeout=60, step=0.2, what="the fleet on screen")
        await keys(tmux, "5")
        await wait_for(lambda: shows("KIND", "OBJECT", "REASON"), timeout=20, step=0.2, what="the events view")
        await keys(tmux, "1")
        await wait_for(lambda: shows("sim-001", "sim-004"), timeout=20, step=0.2, what="back to the fleet")
        await keys(tmux, "?")
        await wait_for(lambda: shows("this help"), timeout=20, step=0.2, what="the help")
        await keys(tmux, "Escape")
        await wait_for(lambda: _not(shows("this help")), timeout=20, step=0.2, what="the help closed")
        await keys(tmux, "q")  # (after the Escape has been read: ESC then q at once is Alt+q)

        async def gone() -> bool:
            return (await run(*tmux, "has-session", "-t", "dash"))[0] != 0

        await wait_for(gone, timeout=20, step=0.2, what="the dashboard to quit on q")

    finally:
        for p in (sim, tmcd):
            await kill(p)
        log.close()


async def _not(cond: Awaitable[bool]) -> bool:
    return not await cond
