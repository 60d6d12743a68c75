"""The tmcd command line: CliRunner for behaviour, real subprocesses for exit codes and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from tmcd import __version__
from tmcd.cli.main import cli
from tmcd.contracts.asyncapi import check

ROOT = Path(__file__).resolve().parent.parent


def tmcd(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tmcd.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output == f"tmcd {__version__}\n"


def test_config_show_precedence_and_masking(tmp_path: Path) -> None:
    file = tmp_path / "tmcd.toml"
    file.write_text('log_level = "debug"\n[nats]\nurl = "nats://10.0.0.1:4222"\npassword = "s3cret"\n')
    result = CliRunner().invoke(
        cli,
        ["config", "show", "--config", str(file), "--http-listen", "0.0.0.0:9090"],
        env={"TMCD_NATS_URL": "nats://127.0.0.1:4333", "TMCD_LOG_LEVEL": "warning"},
    )
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.output)
    assert shown["nats"]["url"] == "nats://127.0.0.1:4333"  # env beats file
    assert shown["http"]["listen"] == "0.0.0.0:9090"  # flag beats everything
    assert shown["log_level"] == "warning"
    assert shown["nats"]["password"] == "****"
    assert "s3cret" not in result.output


def test_bad_flag_value_is_one_line_exit_2() -> None:
    proc = tmcd("config", "show", "--agents", "metrics,bogus")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    want = "agents = 'metrics,bogus': expected a comma-separated subset of metrics,health,placement,canary,rollback"
    assert want in proc.stderr


def test_bad_env_value_names_the_variable() -> None:
    proc = tmcd("config", "show", env={"TMCD_HTTP_LISTEN": "nope"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "TMCD_HTTP_LISTEN" in proc.stderr and "http.listen = 'nope'" in proc.stderr


def test_unknown_key_in_file_suggests(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("[nats]\nurll = 'nats://x:1'\n")
    proc = tmcd("config", "show", "--config", str(file))
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("nats.urll: unknown key (did you mean nats.url?)")


def test_unknown_option_is_usage_error_exit_2() -> None:
    proc = tmcd("run", "--bogus")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "No such option '--bogus'" in proc.stderr and "tmcd run --help" in proc.stderr


def test_missing_nats_server_binary_is_one_line_exit_1(tmp_path: Path) -> None:
    proc = tmcd(
        "run",
        "--http-listen",
        "127.0.0.1:0",
        "--data-dir",
        str(tmp_path),
        env={"TMCD_NATS_SERVER_BIN": str(tmp_path / "missing")},
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.splitlines()[-1]
        == f"tmcd: error: TMCD_NATS_SERVER_BIN='{tmp_path / 'missing'}' is not an executable file"
    )


HIDE_MODULE = """\
import sys


class _Hide:
    \"\"\"Makes {name} (and its submodules) fail to import, as if it were not installed.\"\"\"

    def find_spec(self, fullname, path=None, target=None):
        if fullname == {name!r} or fullname.startswith({name!r} + "."):
            raise ModuleNotFoundError(f"No module named {{fullname!r}}", name=fullname)
        return None


sys.meta_path.insert(0, _Hide())
"""

OTLP_GRPC = {"TMCD_OTEL_EXPORTER": "otlp", "TMCD_OTEL_PROTOCOL": "grpc", "TMCD_OTEL_ENDPOINT": "localhost:4317"}


def without_module(tmp_path: Path, name: str) -> dict[str, str]:
    """Environment for a tmcd subprocess in which ``name`` cannot be imported (a sitecustomize hook)."""
    hook = tmp_path / "hide"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HIDE_MODULE.format(name=name))
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)}


def test_missing_grpc_exporter_is_one_line_exit_2(tmp_path: Path) -> None:
    env = without_module(tmp_path, "opentelemetry.exporter.otlp.proto.grpc") | OTLP_GRPC
    proc = tmcd("run", "--http-listen", "127.0.0.1:0", "--data-dir", str(tmp_path), env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stderr == (
        "tmcd: config (TMCD_OTEL_PROTOCOL): otel.protocol = 'grpc': expected http/protobuf, "
        "since the gRPC exporter is not installed (pip install 'tmcd[grpc]' to use grpc)\n"
    )
    assert not (tmp_path / "nats.url").exists()  # nothing was started


def test_broken_grpc_exporter_install_is_one_line_exit_2(tmp_path: Path) -> None:
    # the exporter package is there but grpcio is not: found at validation, fails at start-up
    env = without_module(tmp_path, "grpc") | OTLP_GRPC
    proc = tmcd("run", "--http-listen", "127.0.0.1:0", "--data-dir", str(tmp_path), env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stderr == (
        "tmcd: error: otel.protocol = 'grpc': the OTLP exporter cannot be loaded (No module named 'grpc'); "
        "pip install 'tmcd[grpc]', or set otel.protocol = 'http/protobuf'\n"
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("config", "show"), 0),
        (("run", "--http-listen", "127.0.0.1:0"), 1),
        (("demo", "--http-listen", "127.0.0.1:0"), 1),
        (("sim", "--nats-url", "nats://127.0.0.1:1", "--duration", "1"), 1),
    ],
    ids=["config-show", "run", "demo", "sim"],
)
def test_unknown_env_var_warns_once_with_a_suggestion(tmp_path: Path, args: tuple[str, ...], code: int) -> None:
    # run and demo stop at once (no nats-server binary), the simulator finds no NATS
    env = {"TMCD_NATS_ULR": "nats://x:4222", "TMCD_NATS_SERVER_BIN": str(tmp_path / "missing")}
    proc = tmcd(*args, "--data-dir", str(tmp_path), env=env)
    assert proc.returncode == code, proc.stderr
    warning = "tmcd: warning: unknown environment variable TMCD_NATS_ULR (did you mean TMCD_NATS_URL?)"
    assert proc.stderr.splitlines()[0] == warning
    assert proc.stderr.count("unknown environment variable") == 1
    if args[0] == "config":
        assert tomllib.loads(proc.stdout)["nats"]["url"] == ""  # ignored, as before


def test_sim_unreachable_nats_is_one_line_exit_1() -> None:
    # `tmcd run` retries forever (a sidecar may start before NATS); the simulator does not.
    proc = subprocess.run(
        [sys.executable, "-m", "tmcd.cli.main", "sim", "--nats-url", "nats://127.0.0.1:1", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot reach NATS at nats://127.0.0.1:1")


def test_schema_export_matches_committed(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schema", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "asyncapi.yaml").read_bytes() == (ROOT / "subjects" / "asyncapi.yaml").read_bytes()
    assert check(tmp_path, __version__) == []


def test_kubectl_plugin_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from tmcd.kubectl.main import main; main()", "version", "--client"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and proc.stdout == f"Client Version: v{__version__}\n"


def test_dockerfile_runs_tmcd_as_non_root_with_livez_healthcheck() -> None:
    lines = _dockerfile_instructions(ROOT / "Dockerfile")
    by = {}
    for instr, arg in lines:
        by.setdefault(instr, []).append(arg)
    # a build stage with a compiler makes the wheel (with the C speedups); the image is slim
    assert by["FROM"] == ["python:3.11 AS build", "python:3.11-slim"]
    assert any("pip wheel" in a and "wheel lacks the C speedups" in a for a in by["RUN"])
    assert any(a.startswith("--from=build /wheels") for a in by["COPY"])
    assert by["ENTRYPOINT"] == ['["tmcd"]']
    assert by["EXPOSE"] == ["8080"]
    assert "/livez" in by["HEALTHCHECK"][0]
    user = by["USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    # the image installs the same pinned versions the tests ran with
    assert any("pip install --constraint /tmp/constraints.txt /wheels/tmcd-" in a for a in by["RUN"])
    assert "constraints.txt /tmp/constraints.txt" in by["COPY"]
    assert "PIP_CONSTRAINT=/src/constraints.txt" in by["ENV"]


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        buf += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        instr, _, arg = buf.partition(" ")
        out.append((instr.upper(), arg.strip()))
        buf = ""
    return out
