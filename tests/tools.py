"""Outside tools some tests need (promtool, prometheus, kubectl, tmux, openssl, a C compiler).

``make test`` installs them where it can (``.ci/install-tools``: Debian/Ubuntu, as root or
with password-less sudo).  Where they are missing, the tests that need them skip, and one
line at the end of the run names what was skipped and how to install it.  Under
``CI=true`` (``.ci/run`` sets it) a missing tool fails the test instead.
"""

from __future__ import annotations

import os
import shutil

import pytest

SKIP_PREFIX = "missing tool: "
"""Reasons of skips for a missing tool start with this (the summary line collects them)."""

PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "kubectl": "kubernetes-client",
    "tmux": "tmux",
    "openssl": "openssl",
    "C extension": "gcc",
}
"""Tool -> the Debian package that provides it."""

INSTALL_HINT = "install them with `sudo .ci/install-tools` (Debian/Ubuntu: apt-get install {packages})"


def in_ci() -> bool:
    """True under CI (``CI`` set to a true value), where every tool is required."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def missing(tool: str) -> None:
    """Skip the test for want of ``tool`` (fail it under CI)."""
    hint = f"{SKIP_PREFIX}{tool} (Debian package {PACKAGES[tool]}; `sudo .ci/install-tools` installs it)"
    if in_ci():
        pytest.fail(hint)
    pytest.skip(hint)


def require(tool: str) -> str:
    """The path of ``tool`` on PATH, or skip (fail under CI)."""
    path = shutil.which(tool)
    if path is None:
        missing(tool)
        raise AssertionError("unreachable")  # pragma: no cover
    return path


def require_c_extension() -> None:
    """Skip (fail under CI) unless the metrics agent's C extension was built."""
    from tmcd.metrics import model as fleet

    if not fleet.SPEEDUPS_AVAILABLE:
        missing("C extension")


def require_compiler() -> None:
    """Skip (fail under CI) without a C compiler to build the extension with."""
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        missing("C extension")


def summary(reasons: list[str]) -> str | None:
    """The one line that names the skipped tools and how to install them (None when none)."""
    tools = sorted({r.split(SKIP_PREFIX, 1)[1].split(" (", 1)[0] for r in reasons if SKIP_PREFIX in r})
    if not tools:
        return None
    count = sum(SKIP_PREFIX in r for r in reasons)
    packages = " ".join(sorted({PACKAGES[t] for t in tools}))
    return f"skipped {count} test(s) for want of {', '.join(tools)}: " + INSTALL_HINT.format(packages=packages)
