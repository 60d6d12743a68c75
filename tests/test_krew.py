"""The krew manifest config/krew/tmc.yaml, and the archive config/krew/build.py builds for it.

The fast tests hold the committed manifest to krew's validation rules (krew's
``internal/index/validation``). The slow ones build the archive for this platform, check the
rendered manifest's sha256 against it, install it the way ``kubectl krew install --archive``
does (extract, apply the ``files`` rules, symlink ``bin`` as ``kubectl-tmc``) and run it, both
directly and through the real ``kubectl``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import posixpath
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

import tmcd
from tests import tools
from tmcd.kubectl.main import LAZY_COMMANDS

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "config" / "krew" / "tmc.yaml"
BUILD = ROOT / "config" / "krew" / "build.py"

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
SEMVER_V = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
SHA256 = re.compile(r"^[a-f0-9]{64}$")
SAFE_NAME = re.compile(r"^[\w-]+$")
GOOS = {"linux", "darwin", "windows", "freebsd"}
GOARCH = {"amd64", "arm64", "arm", "386", "ppc64le", "s390x"}
UNREACHABLE = "error: cannot reach tmcd at nats://127.0.0.1:1: "


def _manifest() -> dict[str, Any]:
    doc = yaml.safe_load(MANIFEST.read_text())
    assert isinstance(doc, dict)
    return doc


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("krew_build", BUILD)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # for its dataclass
    spec.loader.exec_module(module)
    return module


def _check_relative(path: str, what: str) -> None:
    assert path, f"{what} is empty"
    assert not path.startswith(("/", "\\")), f"{what} {path!r} is absolute"
    assert ".." not in path.split("/"), f"{what} {path!r} leaves the plugin directory"


# --- the committed manifest, against krew's validation rules -----------------------------


def test_manifest_identity() -> None:
    doc = _manifest()
    assert doc["apiVersion"] == API_VERSION
    assert doc["kind"] == "Plugin"
    name = doc["metadata"]["name"]
    assert name == "tmc"
    assert name == MANIFEST.stem, "krew requires metadata.name to match the manifest's file name"
    assert SAFE_NAME.match(name)


def test_manifest_spec_fields() -> None:
    spec = _manifest()["spec"]
    assert SEMVER_V.match(spec["version"]), f"spec.version {spec['version']!r} is not a v-prefixed semver"
    assert spec["version"] == f"v{tmcd.__version__}", "regenerate with `make krew KREW_ARGS=--write-config`"
    short = spec["shortDescription"]
    assert isinstance(short, str) and short.strip()
    assert "\n" not in short and "\r" not in short
    assert len(short) <= 50, "krew's guide asks for a short description of at most ~50 characters"
    assert urlparse(spec["homepage"]).scheme == "https"
    assert spec["description"].strip()
    caveats = spec["caveats"]
    for needle in ("--nats-url", "TMC_NATS_URL", "--server", "extensions:", "natsURL"):
        assert needle in caveats, f"caveats should explain {needle}"


def test_manifest_platforms() -> None:
    spec = _manifest()["spec"]
    version = spec["version"]
    platforms = spec["platforms"]
    assert isinstance(platforms, list) and platforms
    seen = set()
    for p in platforms:
        labels = p["selector"]["matchLabels"]
        assert set(labels) == {"os", "arch"}, "krew selectors may only use os and arch"
        assert labels["os"] in GOOS and labels["arch"] in GOARCH
        assert (labels["os"], labels["arch"]) not in seen, "duplicate platform selector"
        seen.add((labels["os"], labels["arch"]))

        uri = urlparse(p["uri"])
        assert uri.scheme == "https" and uri.netloc
        archive = posixpath.basename(uri.path)
        assert version in archive
        assert archive == f"kubectl-tmc_{version}_{labels['os']}_{labels['arch']}.tar.gz"
        assert uri.path.endswith(f"/releases/download/{version}/{archive}")
        assert p["uri"].startswith(spec["homepage"] + "/")

        assert SHA256.match(p["sha256"]), "sha256 must be 64 lowercase hex digits"

        _check_relative(p["bin"], "bin")
        assert posixpath.basename(p["bin"]).startswith("kubectl-tmc")

        files = p["files"]
        assert isinstance(files, list) and files, "`files` has to be unspecified or non-empty"
        for op in files:
            _check_relative(op["from"], "files.from")
            _check_relative(op["to"], "files.to")
            assert op["to"] == posixpath.normpath(op["to"]), "krew requires a clean `to` path"


def test_manifest_says_how_it_was_made() -> None:
    header = [line for line in MANIFEST.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert "config/krew/build.py" in text and "make krew" in text
    assert "kubectl krew install --manifest=config/krew/tmc.yaml --archive=dist/kubectl-tmc_" in text


# --- build the archive, install it like krew, run it --------------------------------------


def _move_targets(from_dir: Path, to_dir: Path, frm: str, to: str) -> list[tuple[Path, Path]]:
    """krew's findMoveTargets: a path that exists moves as is, else a glob whose matches keep their names."""
    direct = from_dir / frm
    if direct.exists():
        return [(direct, to_dir / (direct.name if posixpath.normpath(to) == "." else to))]
    matches = sorted(from_dir.glob(frm))
    assert matches, f"no files in the plugin archive matched the glob pattern={frm}"
    return [(m, to_dir / to / m.name) for m in matches]


def _krew_install(archive: Path, platform: dict[str, Any], root: Path) -> SimpleNamespace:
    """What ``kubectl krew install --manifest=... --archive=...`` does, into ``root``."""
    staging, moving = root / "downloads", root / "move"
    install = root / "store" / "tmc" / "version"
    bin_dir = root / "bin"
    for d in (staging, moving, install.parent, bin_dir):
        d.mkdir(parents=True)
    # krew's extractTARGZ: directories and regular files only, no suspicious paths
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            assert ".." not in member.name and not member.name.startswith(("/", "\\")), member.name
            assert member.isdir() or member.isreg(), f"krew cannot extract {member.name} (type {member.type!r})"
            path = staging / member.name
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            path.write_bytes(src.read())
            path.chmod(member.mode)
    for op in platform.get("files") or [{"from": "*", "to": "."}]:
        for src, dst in _move_targets(staging, moving, op["from"], op["to"]):
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)
    moving.rename(install)
    binary = install / platform["bin"]
    assert binary.is_file(), f"bin {platform['bin']} is not in the installed plugin"
    link = bin_dir / "kubectl-tmc"
    link.symlink_to(os.path.relpath(binary, bin_dir))
    return SimpleNamespace(install=install, bin_dir=bin_dir, binary=binary, link=link)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Run config/krew/build.py into a temp dir, then krew-install its archive."""
    if importlib.util.find_spec("PyInstaller") is None:
        pytest.fail("PyInstaller is missing: `make test` installs it (dev extra); or pip install -e '.[dev]'")
    root = tmp_path_factory.mktemp("krew")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(BUILD), "--dist-dir", str(root / "dist"), "--work-dir", str(root / "work")],
        capture_output=True,
        text=True,
        timeout=480,
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    archives = sorted((root / "dist").glob("kubectl-tmc_*.tar.gz"))
    assert len(archives) == 1, archives
    archive = archives[0]
    print(f"\nkrew archive {archive.name}: {archive.stat().st_size / 1e6:.1f} MB, built in {seconds:.1f} s")

    manifest = yaml.safe_load((root / "dist" / "krew" / "tmc.yaml").read_text())
    goos, goarch = _build_module().platform_labels()
    [platform] = [
        p for p in manifest["spec"]["platforms"] if p["selector"]["matchLabels"] == {"os": goos, "arch": goarch}
    ]
    installed = _krew_install(archive, platform, root / "krew-root")
    return SimpleNamespace(archive=archive, manifest=manifest, platform=platform, **vars(installed))


def _env(path: list[Path]) -> dict[str, str]:
    """A plain user's environment: no venv, no kubeconfig, no coverage hooks."""
    keep = {"LANG", "LC_ALL", "TMPDIR", "TERM"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = os.pathsep.join(str(p) for p in path)
    env["HOME"] = str(path[0].parent)
    return env


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def _assert_unreachable(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 1, proc
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(UNREACHABLE), proc.stderr
    assert "Traceback" not in proc.stderr


def _shape(doc: dict[str, Any]) -> dict[str, Any]:
    caveats = re.sub(r"(?m)^The linux build .*\n?", "", doc["spec"]["caveats"])
    return {**doc, "spec": {**doc["spec"], "platforms": None, "caveats": caveats}}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rendered_manifest_matches_built_archive(built: SimpleNamespace) -> None:
    version = f"v{tmcd.__version__}"
    digest = hashlib.sha256(built.archive.read_bytes()).hexdigest()
    assert built.platform["sha256"] == digest
    assert built.manifest["spec"]["version"] == version
    assert built.platform["uri"].endswith(f"/releases/download/{version}/{built.archive.name}")
    # the committed manifest is what build.py renders, but for the platforms (sha256 follows the
    # sources, os/arch the build machine) and the caveat naming the build machine's glibc
    assert _shape(_manifest()) == _shape(built.manifest)
    with tarfile.open(built.archive, "r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid) for m in members} == {(0, 0, 0)}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_installed_binary_runs(built: SimpleNamespace) -> None:
    env = _env([built.bin_dir, Path("/usr/bin"), Path("/bin")])
    for exe in (built.binary, built.link):
        proc = _run([str(exe), "version", "--client"], env)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"Client Version: v{tmcd.__version__}\n", "")
    _assert_unreachable(_run([str(built.link), "get", "clusters", "--nats-url", "nats://127.0.0.1:1"], env))
    # through click and a lazily imported subcommand module
    _assert_unreachable(_run([str(built.link), "describe", "cluster", "x", "--nats-url", "nats://127.0.0.1:1"], env))
    for command in LAZY_COMMANDS:
        proc = _run([str(built.link), command, "--help"], env)
        assert proc.returncode == 0 and "Usage:" in proc.stdout, (command, proc.stderr)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kubectl_runs_the_installed_plugin(built: SimpleNamespace) -> None:
    kubectl = tools.require("kubectl")
    kubectl_dir = Path(kubectl).resolve().parent
    assert not (kubectl_dir / "kubectl-tmc").exists()
    env = _env([built.bin_dir, kubectl_dir, Path("/usr/bin"), Path("/bin")])

    listed = _run([kubectl, "plugin", "list"], env)
    assert str(built.link) in listed.stdout, listed

    proc = _run([kubectl, "tmc", "version", "--client"], env)
    assert (proc.returncode, proc.stdout) == (0, f"Client Version: v{tmcd.__version__}\n"), proc
    _assert_unreachable(_run([kubectl, "tmc", "get", "clusters", "--nats-url", "nats://127.0.0.1:1"], env))
