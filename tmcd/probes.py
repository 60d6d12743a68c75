"""Named health checks and the kube-apiserver style probe report (pure logic)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

CheckFn = Callable[[], str | None]
"""A check returns None when healthy, or the reason it fails."""


@dataclass(frozen=True)
class Check:
    """One named check and the probes (livez, readyz, healthz) it belongs to."""

    name: str
    fn: CheckFn
    probes: frozenset[str]


@dataclass(frozen=True)
class Report:
    """The outcome of running a probe's checks."""

    ok: bool
    results: tuple[tuple[str, str | None], ...]

    def render(self, probe: str, verbose: bool) -> str:
        """``ok`` or the verbose ``[+]name ok`` / ``[-]name failed: reason`` listing."""
        if not verbose:
            return "ok" if self.ok else self._failed_summary(probe)
        lines = [f"[+]{n} ok" if r is None else f"[-]{n} failed: {r}" for n, r in self.results]
        lines.append(f"{probe} check passed" if self.ok else f"{probe} check failed")
        return "\n".join(lines) + "\n"

    def _failed_summary(self, probe: str) -> str:
        lines = [f"[-]{n} failed: {r}" for n, r in self.results if r is not None]
        lines.append(f"{probe} check failed")
        return "\n".join(lines) + "\n"


class CheckRegistry:
    """Checks registered by the runtime, agents and subsystems."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def register(self, name: str, fn: CheckFn, probes: Iterable[str] = ("readyz", "healthz")) -> None:
        """Add or replace a check."""
        self._checks[name] = Check(name, fn, frozenset(probes))

    def names(self, probe: str) -> list[str]:
        """Checks that belong to ``probe``."""
        return [c.name for c in self._checks.values() if probe in c.probes]

    def run(self, probe: str, exclude: Iterable[str] = (), only: str | None = None) -> Report | None:
        """Run a probe's checks (or the single check ``only``); None when ``only`` is unknown."""
        skip = set(exclude)
        selected = [c for c in self._checks.values() if probe in c.probes and c.name not in skip]
        if only is not None:
            selected = [c for c in selected if c.name == only]
            if not selected:
                return None
        results = []
        for check in selected:
            try:
                reason = check.fn()
            except Exception as exc:
                reason = f"check raised {type(exc).__name__}: {exc}"
            results.append((check.name, reason))
        return Report(all(r is None for _, r in results), tuple(results))
