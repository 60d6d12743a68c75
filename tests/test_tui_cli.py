"""The dashboard's entry points: `tmcd tui` and `kubectl tmc dashboard` (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tmcd.tui.connect import DEFAULT_NATS, nats_url

BIN = Path(sys.executable).parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


def test_tmcd_tui_help_lists_the_connection_flags() -> None:
    p = run(str(BIN / "tmcd"), "tui", "--help")
    assert p.returncode == 0, p.stderr
    for flag in ("--nats-url", "--data-dir", "--config", "--read-only"):
        assert flag in p.stdout


def test_tmcd_tui_bad_config_value_is_one_line_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "TMCD_NATS_CONNECT_TIMEOUT": "soon"}
    p = run(str(BIN / "tmcd"), "tui", "--data-dir", str(tmp_path), env=env)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "TMCD_NATS_CONNECT_TIMEOUT" in p.stderr or "connect_timeout" in p.stderr


def test_kubectl_tmc_dashboard_is_a_lazy_command_that_needs_nats() -> None:
    probe = (
        "import sys, atexit\n"
        "from tmcd.kubectl.main import main\n"
        "atexit.register(lambda: sys.stderr.write('\\nLOADED ' + str('textual' in sys.modules)))\n"
        "main(sys.argv[1:])\n"
    )
    p = run(sys.executable, "-c", probe, "dashboard", "--help")
    assert p.returncode == 0, p.stderr
    assert "--read-only" in p.stdout and p.stderr.strip().endswith("LOADED False")
    p = run(str(BIN / "kubectl-tmc"), "dashboard", "--server", "http://127.0.0.1:1")
    assert p.returncode == 2
    assert p.stderr.strip() == "error: the dashboard reads NATS: pass --nats-url (or TMC_NATS_URL), not only --server"
    p = run(str(BIN / "kubectl-tmc"), "--help")
    assert "dashboard" in p.stdout


def test_nats_url_flag_then_data_dir_then_default(tmp_path: Path) -> None:
    assert nats_url("nats://a:1", str(tmp_path)) == "nats://a:1"
    assert nats_url("", str(tmp_path)) == DEFAULT_NATS
    (tmp_path / "nats.url").write_text("nats://127.0.0.1:4999,nats://127.0.0.1:5000\n")
    assert nats_url("", str(tmp_path)) == "nats://127.0.0.1:4999"
