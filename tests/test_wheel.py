"""The wheel build: the C speedups are compiled when possible and never break a build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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


def test_no_extensions_builds_a_pure_wheel(source: Path, tmp_path: Path) -> None:
    wheel, _ = build(source, tmp_path / "out", TMCD_NO_EXTENSIONS="1")
    assert wheel.name.endswith("py3-none-any.whl")
    assert extension_files(wheel) == []


def test_a_failing_compiler_warns_and_builds_a_pure_wheel(source: Path, tmp_path: Path) -> None:
    wheel, stderr = build(source, tmp_path / "out", LDSHARED="false")
    assert wheel.name.endswith("py3-none-any.whl")
    assert extension_files(wheel) == []
    assert "C speedups not built" in stderr


def _suffix() -> str:
    import sysconfig

    return str(sysconfig.get_config_var("EXT_SUFFIX"))
