"""Hatchling build hook: compile tmcd's optional C speedups (tmcd/metrics/_fastagg.c).

The extension makes the metrics agent's per-batch aggregation a single C loop (see
tmcd/metrics/model.py).  It is optional: without a C compiler, or with
``TMCD_NO_EXTENSIONS=1``, the build prints a warning and tmcd uses the pure-Python path.
Wheels that contain it are tagged for the platform; editable installs build it in place.
It is compiled like any extension of this interpreter (see :func:`build_commands`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

EXTENSIONS = {"tmcd/metrics/_fastagg": "tmcd/metrics/_fastagg.c"}


def _var(name: str) -> str:
    return str(sysconfig.get_config_var(name) or "")


def build_commands(src: Path, obj: Path, out: Path, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The compile and link commands for one extension, built as setuptools builds them.

    From the interpreter's sysconfig: ``CC``, ``CFLAGS`` (``OPT`` when empty), ``CCSHARED``
    and ``LDSHARED``.  From the environment: ``CC`` and ``LDSHARED`` replace theirs (a new
    ``CC`` also replaces the compiler at the head of ``LDSHARED``), ``CFLAGS`` and
    ``CPPFLAGS`` are added to both steps and ``LDFLAGS`` to the link.  ``NDEBUG`` is always
    defined (a release build: the assertions in CPython's macros are off), whatever the flags.
    """
    cc, ldshared = _var("CC"), _var("LDSHARED")
    if env.get("CC"):
        if not env.get("LDSHARED") and cc and ldshared.startswith(cc):
            ldshared = env["CC"] + ldshared[len(cc) :]
        cc = env["CC"]
    if env.get("LDSHARED"):
        ldshared = env["LDSHARED"]
    if not cc or not ldshared:
        raise RuntimeError("no C compiler or shared-library linker known to sysconfig (CC, LDSHARED)")
    cflags = shlex.split(_var("CFLAGS") or _var("OPT"))
    extra = [*shlex.split(env.get("CFLAGS", "")), *shlex.split(env.get("CPPFLAGS", ""))]
    paths = sysconfig.get_paths()
    includes = [f"-I{d}" for d in dict.fromkeys((paths["include"], paths["platinclude"]))]
    compile_cmd = [
        *shlex.split(cc),
        *cflags,
        *extra,
        *shlex.split(_var("CCSHARED")),
        "-DNDEBUG",
        *includes,
        "-c",
        str(src),
        "-o",
        str(obj),
    ]
    link_cmd = [*shlex.split(ldshared), *shlex.split(env.get("LDFLAGS", "")), *extra, str(obj), "-o", str(out)]
    return compile_cmd, link_cmd


def compile_extension(root: Path, module: str, source: str) -> Path:
    """Compile one C source into ``<module><EXT_SUFFIX>`` next to it; returns the path."""
    out = root / f"{module}{_var('EXT_SUFFIX')}"
    src = root / source
    # the source and the headers beside it named after it (``_fastagg_*.h``)
    inputs = [src, *src.parent.glob(f"{src.stem}_*.h")]
    if out.exists() and out.stat().st_mtime >= max(p.stat().st_mtime for p in inputs):
        return out
    tmp = Path(str(out) + ".tmp")
    with tempfile.TemporaryDirectory(prefix="tmcd-build-") as work:
        for cmd in build_commands(src, Path(work) / (src.stem + ".o"), tmp, os.environ):
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise RuntimeError(f"{shlex.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
    os.replace(tmp, out)
    return out


def _true(text: str) -> bool:
    """A boolean switch read as tmcd reads every boolean (``tmcd.config.parse_bool``, which this
    hook cannot import: it runs in the build environment): true/1/yes on, anything else off."""
    return text.strip().lower() in ("true", "1", "yes")


class SpeedupsHook(BuildHookInterface):  # type: ignore[type-arg]
    """Builds the C extensions when it can; never fails the build because of them."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or _true(os.environ.get("TMCD_NO_EXTENSIONS", "")):
            return
        root = Path(self.root)
        for module, source in EXTENSIONS.items():
            try:
                built = compile_extension(root, module, source)
            except (OSError, RuntimeError) as exc:
                self.app.display_warning(f"tmcd: C speedups not built ({exc}); using the pure-Python path")
                return
            if version != "editable":
                build_data["force_include"][str(built)] = built.relative_to(root).as_posix()
                build_data["pure_python"] = False
                build_data["infer_tag"] = True
