"""Hatchling build hook: compile tmcd's optional C speedups (tmcd/metrics/_fastagg.c).

The extension makes the metrics agent's per-batch aggregation a single C loop (see
tmcd/metrics/model.py).  It is optional: without a C compiler, or with
``TMCD_NO_EXTENSIONS=1``, the build prints a warning and tmcd uses the pure-Python path.
Wheels that contain it are tagged for the platform; editable installs build it in place.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

EXTENSIONS = {"tmcd/metrics/_fastagg": "tmcd/metrics/_fastagg.c"}


def compile_extension(root: Path, module: str, source: str) -> Path:
    """Compile one C source into ``<module><EXT_SUFFIX>`` next to it; returns the path."""
    out = root / f"{module}{sysconfig.get_config_var('EXT_SUFFIX')}"
    src = root / source
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    ldshared = os.environ.get("LDSHARED") or sysconfig.get_config_var("LDSHARED")
    if not ldshared:
        raise RuntimeError("no shared-library linker known to sysconfig (LDSHARED)")
    ccshared = sysconfig.get_config_var("CCSHARED") or "-fPIC"
    cmd = [
        *shlex.split(ldshared),
        *shlex.split(ccshared),
        "-O2",
        "-Wall",
        "-I",
        sysconfig.get_paths()["include"],
        str(src),
        "-o",
        str(out) + ".tmp",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
    os.replace(str(out) + ".tmp", out)
    return out


class SpeedupsHook(BuildHookInterface):  # type: ignore[type-arg]
    """Builds the C extensions when it can; never fails the build because of them."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("TMCD_NO_EXTENSIONS"):
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
