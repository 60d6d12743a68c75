"""Durations in Go's syntax (``time.ParseDuration``), as kubectl's and Argo Rollouts' ``--timeout``
flags take them: ``90s``, ``5m``, ``1h30m``, ``1.5h``, ``500ms``; ``0`` alone needs no unit."""

from __future__ import annotations

from tmcd.kubectl.errors import UsageError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DIGITS = "0123456789"


def parse_duration(text: str, flag: str = "--timeout") -> float:
    """Seconds in ``text`` (Go duration syntax, not negative), else a usage error naming ``flag``."""
    s = text.strip()
    if s in ("0", "+0"):
        return 0.0
    if s.startswith("+"):
        s = s[1:]
    bad = UsageError(f"{flag} {text!r}: want a duration such as 90s, 5m or 1h30m (units ns, us, ms, s, m, h)")
    if not s or s.startswith("-"):
        raise bad
    total, i = 0.0, 0
    while i < len(s):
        start = i
        while i < len(s) and (s[i] in _DIGITS or s[i] == "."):
            i += 1
        number = s[start:i]
        if number in ("", ".") or number.count(".") > 1:
            raise bad
        unit_start = i
        while i < len(s) and s[i] not in _DIGITS and s[i] != ".":
            i += 1
        unit = s[unit_start:i]
        if unit not in _UNITS:
            raise bad
        total += float(number) * _UNITS[unit]
    return total


def format_duration(seconds: float) -> str:
    """Seconds as Go prints a ``time.Duration`` for the common cases: ``90s`` -> ``1m30s``, ``0.5s``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms" if seconds else "0s"
    whole = int(seconds)
    frac = seconds - whole
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if h or m else "")
    return out + f"{s + frac:g}s"
