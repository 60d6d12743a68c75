"""The wheel build: the C speedups are compiled when possible and never break a build."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests import tools

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of what the wheel is built from, without any in-place build of the extension."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "hatch_build.py"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "tmcd", src / "tmcd", ignore=shutil.ignore_patterns("*.so", "*.so.tmp", "__pycache__"))
    return src


def build(src: Path, out: Path, **env: str) -> tuple[Path, str]:
    code = "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=src,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out / done.stdout.strip().splitlines()[-1], done.stderr


def extension_files(wheel: Path) -> list[str]:
    return [n for n in zipfile.ZipFile(wheel).namelist() if "_fastagg" in n and n.endswith((".so", ".pyd"))]


def test_wheel_carries_the_compiled_extension(source: Path, tmp_path: Path) -> None:
    tools.require_compiler()
    wheel, _ = build(source, tmp_path / "out")
    assert "py3-none-any" not in wheel.name  # platform-tagged: it holds compiled code
    assert extension_files(wheel) == [f"tmcd/metrics/_fastagg{_suffix()}"]
    # it imports and works from the wheel's contents
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = "from tmcd.metrics import model; print(model.SPEEDUPS_AVAILABLE, model._fastagg.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith(f"True {site}")


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_no_extensions_builds_a_pure_wheel(source: Path, tmp_path: Path, value: str) -> None:
    wheel, _ = build(source, tmp_path / "out", TMCD_NO_EXTENSIONS=value)
    assert wheel.name.endswith("py3-none-any.whl")
    assert extension_files(wheel) == []


def test_no_extensions_is_a_boolean(source: Path, tmp_path: Path) -> None:
    """``TMCD_NO_EXTENSIONS=0`` reads as false, as every tmcd boolean does: the extension is built."""
    tools.require_compiler()
    wheel, _ = build(source, tmp_path / "out", TMCD_NO_EXTENSIONS="0")
    assert extension_files(wheel) == [f"tmcd/metrics/_fastagg{_suffix()}"]


@pytest.mark.parametrize(
    "env",
    [{"LDSHARED": "false"}, {"CC": "false"}, {"CFLAGS": "-fno-such-option-tmcd"}],
    ids=["linker", "compiler", "cflags"],
)
def test_a_failing_compiler_warns_and_builds_a_pure_wheel(source: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """The environment's CC, CFLAGS and LDSHARED reach the build (here: to make it fail)."""
    wheel, stderr = build(source, tmp_path / "out", **env)
    assert wheel.name.endswith("py3-none-any.whl")
    assert extension_files(wheel) == []
    assert "C speedups not built" in stderr


def _suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tmcd_hatch_build", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def var(name: str) -> list[str]:
    return shlex.split(str(sysconfig.get_config_var(name) or ""))


def test_build_commands_are_the_interpreters_own() -> None:
    """sysconfig's CC, CFLAGS, CCSHARED and LDSHARED, with NDEBUG defined."""
    compile_cmd, link_cmd = hook().build_commands(Path("x.c"), Path("x.o"), Path("x.so"), {})
    cc, cflags, ccshared, ldshared = var("CC"), var("CFLAGS") or var("OPT"), var("CCSHARED"), var("LDSHARED")
    assert compile_cmd[: len(cc) + len(cflags)] == cc + cflags
    assert all(flag in compile_cmd for flag in ccshared) and "-DNDEBUG" in compile_cmd
    assert compile_cmd[-4:] == ["-c", "x.c", "-o", "x.o"]
    assert link_cmd == [*ldshared, "x.o", "-o", "x.so"]


def test_build_commands_take_cc_cflags_and_ldshared_from_the_environment() -> None:
    build_commands = hook().build_commands
    env = {"CC": "my-cc --target=x", "CFLAGS": "-O1 -DEXTRA", "LDFLAGS": "-L/opt/lib"}
    compile_cmd, link_cmd = build_commands(Path("x.c"), Path("x.o"), Path("x.so"), env)
    assert compile_cmd[:2] == ["my-cc", "--target=x"]
    # added after the interpreter's flags, so the later -O1 wins over its -O3
    assert compile_cmd.index("-O1") > len(var("CFLAGS") or var("OPT")) and "-DEXTRA" in compile_cmd
    if " ".join(var("LDSHARED")).startswith(" ".join(var("CC"))):  # the linker follows CC too
        assert link_cmd[:2] == ["my-cc", "--target=x"]
    assert link_cmd[-6:] == ["-L/opt/lib", "-O1", "-DEXTRA", "x.o", "-o", "x.so"]
    _, link_cmd = build_commands(Path("x.c"), Path("x.o"), Path("x.so"), {"LDSHARED": "my-ld -shared"})
    assert link_cmd == ["my-ld", "-shared", "x.o", "-o", "x.so"]
