"""Named health checks and the kube-apiserver style probe report (pure logic)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

CheckFn = Callable[[], str | None]
"""A check returns None when healthy, or the reason it fails."""

ResultListener = Callable[[str, str | None], None]
"""Called with (check name, reason or None) each time a check actually runs."""

PROBES: tuple[str, ...] = ("livez", "readyz", "healthz")
MAX_CACHED_REPORTS = 256
"""Distinct (probe, exclude, only) reports kept; ``?exclude=`` is client-chosen, so bounded."""


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


_Key = tuple[str, frozenset[str], str | None]


class CheckRegistry:
    """Checks registered by the runtime, agents and subsystems.

    With ``cache_ttl`` > 0, reports are reused per (probe, exclude, only) and each check's
    result is reused across probes for ``cache_ttl`` seconds of ``clock``: a probe storm
    runs every check at most once per ``cache_ttl``.
    """

    def __init__(self, *, cache_ttl: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._checks: dict[str, Check] = {}
        self.cache_ttl = cache_ttl
        self._clock = clock
        self._reports: dict[_Key, tuple[float, Report]] = {}
        self._results: dict[str, tuple[float, str | None]] = {}
        self.listeners: list[ResultListener] = []

    def register(self, name: str, fn: CheckFn, probes: Iterable[str] = ("readyz", "healthz")) -> None:
        """Add or replace a check."""
        self._checks[name] = Check(name, fn, frozenset(probes))
        self.invalidate()

    def names(self, probe: str) -> list[str]:
        """Checks that belong to ``probe``."""
        return [c.name for c in self._checks.values() if probe in c.probes]

    def invalidate(self) -> None:
        """Forget cached results (the next run executes the checks)."""
        self._reports.clear()
        self._results.clear()

    def run(self, probe: str, exclude: Iterable[str] = (), only: str | None = None) -> Report | None:
        """Run a probe's checks (or the single check ``only``); None when ``only`` is unknown."""
        skip = frozenset(exclude)
        now = self._clock()
        key: _Key = (probe, skip, only)
        cached = self._reports.get(key)
        if cached is not None and now - cached[0] < self.cache_ttl:
            return cached[1]
        selected = [c for c in self._checks.values() if probe in c.probes and c.name not in skip]
        if only is not None:
            selected = [c for c in selected if c.name == only]
            if not selected:
                return None
        results = tuple((check.name, self._result(check, now)) for check in selected)
        report = Report(all(r is None for _, r in results), results)
        if self.cache_ttl > 0:
            if len(self._reports) >= MAX_CACHED_REPORTS:
                self._reports = {k: v for k, v in self._reports.items() if now - v[0] < self.cache_ttl}
                if len(self._reports) >= MAX_CACHED_REPORTS:
                    self._reports.clear()
            self._reports[key] = (now, report)
        return report

    def run_all(self) -> dict[str, str | None]:
        """Run every check now, bypassing the cache and leaving it as it is (listeners are told)."""
        return {name: self._execute(check) for name, check in list(self._checks.items())}

    def _result(self, check: Check, now: float) -> str | None:
        cached = self._results.get(check.name)
        if cached is not None and now - cached[0] < self.cache_ttl:
            return cached[1]
        reason = self._execute(check)
        if self.cache_ttl > 0:
            self._results[check.name] = (now, reason)
        return reason

    def _execute(self, check: Check) -> str | None:
        try:
            reason = check.fn()
        except Exception as exc:
            reason = f"check raised {type(exc).__name__}: {exc}"
        for listener in list(self.listeners):
            listener(check.name, reason)
        return reason
