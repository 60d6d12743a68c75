#!/usr/bin/env python3
"""Build the ``kubectl-tmc`` release archive for this platform and render its krew manifest.

    python config/krew/build.py [--dist-dir DIR] [--work-dir DIR] [--write-config] [--no-build]

(``make krew`` runs it with the venv's python.) Steps:

1. PyInstaller *onedir* build of the ``kubectl-tmc`` entry point (``tmcd.kubectl.main:main``)
   into ``<work-dir>``: an executable plus ``_internal/`` with Python 3.11, click and PyYAML,
   so the plugin needs no Python on the user's machine. Onedir, not onefile: a onefile
   executable unpacks itself to a temp directory on every run, which costs start-up time.
2. A deterministic ``<dist-dir>/kubectl-tmc_v<version>_<os>_<arch>.tar.gz`` (os/arch in
   krew's GOOS/GOARCH spelling): one top directory ``kubectl-tmc/``, entries sorted, only
   directories and regular files (krew's tar extractor takes nothing else), mtime
   ``SOURCE_DATE_EPOCH`` (default 0), uid/gid 0, normalised modes, gzip mtime 0.
3. The krew manifest ``<dist-dir>/krew/tmc.yaml`` with one platform per
   ``kubectl-tmc_v<version>_*.tar.gz`` in ``<dist-dir>`` (so a release job that gathers the
   per-platform archives into one dist/ and runs ``--no-build`` gets a multi-platform
   manifest), each with the archive's real sha256; ``--write-config`` also writes it to
   ``config/krew/tmc.yaml``.

PyInstaller comes from the ``release`` (and ``dev``) extra: ``pip install -e '.[release]'``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG_MANIFEST = ROOT / "config" / "krew" / "tmc.yaml"

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
PLUGIN = "tmc"
BIN = "kubectl-tmc"
HOMEPAGE = "https://github.com/tmc-dev/tmcd"
RELEASE_URL = HOMEPAGE + "/releases/download/v{version}/{archive}"
SHORT_DESCRIPTION = "Inspect and steer TMC multi-cluster placement"

GOOS = {"linux": "linux", "darwin": "darwin", "windows": "windows", "freebsd": "freebsd"}
GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}
ARCHIVE_RE = re.compile(r"^kubectl-tmc_v(?P<version>[^_]+)_(?P<os>[a-z0-9]+)_(?P<arch>[a-z0-9]+)\.tar\.gz$")
LICENSE_GLOBS = ("LICENSE*", "LICENCE*", "COPYING*", "NOTICE*")


@dataclass(frozen=True)
class Archive:
    path: Path
    os: str
    arch: str
    sha256: str

    @property
    def bin(self) -> str:
        return BIN + (".exe" if self.os == "windows" else "")


def package_version() -> str:
    """tmcd's version (``tmcd/__init__.py``), which must agree with pyproject.toml."""
    text = (ROOT / "tmcd" / "__init__.py").read_text()
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if not m:
        raise SystemExit("error: no __version__ in tmcd/__init__.py")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    if project != m.group(1):
        raise SystemExit(f"error: tmcd.__version__ {m.group(1)!r} != pyproject.toml version {project!r}")
    return m.group(1)


def platform_labels() -> tuple[str, str]:
    """This machine's (os, arch) as krew spells them (Go's GOOS/GOARCH)."""
    system, machine = platform.system().lower(), platform.machine().lower()
    if system not in GOOS or machine not in GOARCH:
        raise SystemExit(f"error: no GOOS/GOARCH spelling for {system}/{machine}")
    return GOOS[system], GOARCH[machine]


def build_onedir(work: Path) -> Path:
    """PyInstaller onedir build of the kubectl-tmc entry point; returns the bundle directory."""
    if importlib.util.find_spec("PyInstaller") is None:
        raise SystemExit(f"error: PyInstaller is not installed; run: {sys.executable} -m pip install -e '.[release]'")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    entry = work / f"{BIN}.py"
    entry.write_text("from tmcd.kubectl.main import main\n\nmain()\n")
    cmd = [
        sys.executable,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--onedir",
        "--name",
        BIN,
        "--paths",
        str(ROOT),
        # subcommands are imported by name (tmcd.kubectl.main.LAZY_COMMANDS), invisible to the analysis
        "--collect-submodules",
        "tmcd.kubectl",
        "--noupx",
        "--distpath",
        str(work / "dist"),
        "--workpath",
        str(work / "build"),
        "--specpath",
        str(work),
        "--log-level",
        "WARN",
    ]
    if platform.system() != "Windows" and shutil.which("strip"):
        cmd.append("--strip")  # 46 MB -> 20 MB unpacked on linux/amd64
    # a fixed hash seed fixes the order of base_library.zip, so a rebuild gives the same archive
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run([*cmd, str(entry)], check=True, cwd=work, env=env)
    bundle = work / "dist" / BIN
    exe = bundle / (BIN + (".exe" if platform.system() == "Windows" else ""))
    if not exe.is_file():
        raise SystemExit(f"error: PyInstaller produced no {exe}")
    return bundle


def _tarinfo(name: str, mtime: int, *, directory: bool, size: int = 0, executable: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.type = tarfile.REGTYPE
        info.size = size
        info.mode = 0o755 if executable else 0o644
    return info


def pack(bundle: Path, archive: Path) -> None:
    """Write ``archive`` (tar.gz) with ``bundle`` as ``kubectl-tmc/`` plus the repo's license files."""
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    members: dict[str, Path | None] = {BIN: None}  # arcname -> file (None: directory)
    for path in bundle.rglob("*"):
        if path.is_symlink() and path.is_dir():
            raise SystemExit(f"error: {path} is a symlinked directory; krew's tar extractor cannot make one")
        # krew extracts only directories and regular files: store file symlinks as their targets
        members[f"{BIN}/{path.relative_to(bundle).as_posix()}"] = None if path.is_dir() else path
    for pattern in LICENSE_GLOBS:
        for path in ROOT.glob(pattern):
            if path.is_file():
                members[f"{BIN}/{path.name}"] = path
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(members):
            src = members[name]
            if src is None:
                tar.addfile(_tarinfo(name, mtime, directory=True))
                continue
            st = src.stat()
            info = _tarinfo(name, mtime, directory=False, size=st.st_size, executable=bool(st.st_mode & 0o111))
            with open(src, "rb") as f:
                tar.addfile(info, f)
    tmp.replace(archive)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_archives(dist: Path, version: str) -> list[Archive]:
    found = []
    for path in sorted(dist.glob(f"{BIN}_v{version}_*.tar.gz")):
        m = ARCHIVE_RE.match(path.name)
        if m and m["version"] == version:
            found.append(Archive(path, m["os"], m["arch"], sha256_of(path)))
    return sorted(found, key=lambda a: (a.os, a.arch))


def _block(text: str, indent: int) -> str:
    pad = " " * indent
    return "\n".join(pad + line if line else "" for line in text.strip("\n").splitlines())


DESCRIPTION = """\
kubectl tmc is the command line of tmcd, the observability and
progressive-delivery daemon for TMC multi-cluster Kubernetes. It lists and
describes the fleet's clusters, placements, canary rollouts and revisions
(-o table|wide|json|yaml|name, -l selectors, -w to watch), applies and deletes
placements, simulates and explains placement decisions, and pauses, resumes or
forces a re-sync of a cluster's syncer.

The archive is a self-contained PyInstaller build (Python 3.11 included); it
talks to tmcd over NATS or tmcd's HTTP API, not to the Kubernetes API server.
"""

CAVEATS = """\
kubectl tmc needs a running tmcd. Point it at one with
  --nats-url nats://HOST:4222   (or TMC_NATS_URL), or
  --server https://HOST          (tmcd's HTTP API, or TMC_SERVER; --token / TMC_TOKEN)
Without either it reads <TMCD_DATA_DIR or .tmcd>/nats.url written by a local
`tmcd run`, else uses nats://127.0.0.1:4222.

A kubeconfig context can name its tmcd, so --context picks it:
  contexts:
  - name: prod-eu
    context:
      cluster: prod-eu
      user: admin
      extensions:
      - name: tmc
        extension:
          natsURL: nats://tmcd.prod-eu.internal:4222
          server: https://tmcd.prod-eu.internal

Try: kubectl tmc version; kubectl tmc get clusters
Shell completion: kubectl tmc completion bash|zsh|fish
"""


def render(version: str, archives: list[Archive], glibc: str | None) -> str:
    """The krew Plugin manifest for ``archives`` (hand-laid-out YAML, checked by parsing it back)."""
    caveats = CAVEATS
    if any(a.os == "linux" for a in archives):
        need = f"glibc {glibc} or newer" if glibc else "a glibc at least as new as the build machine's"
        caveats += f"\nThe linux build links against the system C library: it needs {need}.\n"
    lines = [
        "# krew plugin manifest for `kubectl tmc` -- generated, do not edit: change config/krew/build.py",
        "# and run `make krew KREW_ARGS=--write-config`.",
        f"# Produced by config/krew/build.py from tmcd v{version}: a PyInstaller onedir build of the",
        "# kubectl-tmc entry point (Python included), packed deterministically as",
        *[f"#   {a.path.name}" for a in archives],
        "# Each sha256 below is that archive's; each uri is where that `make krew` output (dist/) is",
        f"# published at release, as an asset of {HOMEPAGE}/releases/tag/v{version}.",
        "# The same sources and toolchain rebuild the same archive; after a change to tmcd, regenerate",
        "# this file together with the archive. Install locally, without a release:",
        "#   make krew KREW_ARGS=--write-config",
        *[f"#   kubectl krew install --manifest=config/krew/tmc.yaml --archive=dist/{a.path.name}" for a in archives],
        "# (`make krew` alone writes the matching manifest to dist/krew/tmc.yaml instead.)",
        f"apiVersion: {API_VERSION}",
        "kind: Plugin",
        "metadata:",
        f"  name: {PLUGIN}",
        "spec:",
        f"  version: v{version}",
        f"  homepage: {HOMEPAGE}",
        f"  shortDescription: {SHORT_DESCRIPTION}",
        "  description: |",
        _block(DESCRIPTION, 4),
        "  caveats: |",
        _block(caveats, 4),
        "  platforms:",
    ]
    for a in archives:
        lines += [
            "  - selector:",
            "      matchLabels:",
            f"        os: {a.os}",
            f"        arch: {a.arch}",
            f"    uri: {RELEASE_URL.format(version=version, archive=a.path.name)}",
            f"    sha256: {a.sha256}",
            "    files:",
            f'    - from: "{BIN}/*"',
            '      to: "."',
            f"    bin: {a.bin}",
        ]
    text = "\n".join(lines) + "\n"
    _check(text, version, archives)
    return text


def _check(text: str, version: str, archives: list[Archive]) -> None:
    import yaml

    doc = yaml.safe_load(text)
    spec = doc["spec"]
    assert doc["apiVersion"] == API_VERSION and doc["kind"] == "Plugin" and doc["metadata"]["name"] == PLUGIN
    assert spec["version"] == f"v{version}" and spec["shortDescription"] == SHORT_DESCRIPTION
    assert spec["description"].strip() == DESCRIPTION.strip()
    assert [p["sha256"] for p in spec["platforms"]] == [a.sha256 for a in archives]
    assert [p["selector"]["matchLabels"] for p in spec["platforms"]] == [{"os": a.os, "arch": a.arch} for a in archives]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist-dir", type=Path, default=ROOT / "dist", help="archives and krew/tmc.yaml (dist/)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "build" / "krew", help="PyInstaller scratch")
    parser.add_argument("--write-config", action="store_true", help="also write config/krew/tmc.yaml")
    parser.add_argument("--no-build", action="store_true", help="only render the manifest from dist's archives")
    args = parser.parse_args(argv)

    started = time.monotonic()
    version = package_version()
    dist = args.dist_dir.resolve()
    glibc = None
    if not args.no_build:
        goos, goarch = platform_labels()
        bundle = build_onedir(args.work_dir.resolve())
        archive = dist / f"{BIN}_v{version}_{goos}_{goarch}.tar.gz"
        pack(bundle, archive)
        libc, libc_version = platform.libc_ver()
        glibc = libc_version if goos == "linux" and libc == "glibc" and libc_version else None
        print(f"built {archive} ({archive.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - started:.1f} s")
    archives = find_archives(dist, version)
    if not archives:
        raise SystemExit(f"error: no {BIN}_v{version}_<os>_<arch>.tar.gz in {dist}")

    text = render(version, archives, glibc)
    out = dist / "krew" / "tmc.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    targets = [out]
    if args.write_config:
        CONFIG_MANIFEST.write_text(text)
        targets.append(CONFIG_MANIFEST)
    for a in archives:
        print(f"{a.sha256}  {a.path.name}")
    print("wrote " + ", ".join(str(t) for t in targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
