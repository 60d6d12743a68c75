"""TOML helpers for :mod:`tmcd.config`: read a file with one-line errors, emit nested dicts.

The emitter covers what the config tree needs: tables of strings, ints, floats,
bools and lists of those.  Top-level scalars come first, then ``[table]`` and
``[table.sub]`` sections in insertion order.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_AT_LINE = re.compile(r"at line (\d+)")


class TomlReadError(Exception):
    """A TOML file could not be read or parsed; ``str()`` is one line without the file name."""


def read_toml(path: str) -> dict[str, Any]:
    """Parse the TOML file at ``path``; raise :class:`TomlReadError` saying what and where."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise TomlReadError(f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TomlReadError(f"invalid TOML: not UTF-8 (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"invalid TOML: {exc}"
        m = _AT_LINE.search(str(exc))
        lines = text.splitlines()
        if m and 1 <= int(m.group(1)) <= len(lines):
            line = lines[int(m.group(1)) - 1].strip()
            msg += f"; line {m.group(1)} is {line[:80]!r}"
        raise TomlReadError(msg) from None


def dump_toml(data: Mapping[str, Any]) -> str:
    """Render a nested mapping as TOML text (ends with a newline)."""
    lines: list[str] = []
    _emit_table(lines, data, [])
    return "\n".join(lines) + "\n"


def _emit_table(lines: list[str], table: Mapping[str, Any], path: list[str]) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    if path and (scalars or not tables):
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars)
    for k, v in tables:
        _emit_table(lines, v, [*path, k])


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(s: str) -> str:
    # JSON escapes are valid TOML basic-string escapes; TOML also wants DEL escaped.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return repr(v)  # "1.5", "1e-05", "inf", "-inf" are all TOML floats
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table, e.g. one of api.tokens
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot render {type(v).__name__} as TOML: {v!r}")
