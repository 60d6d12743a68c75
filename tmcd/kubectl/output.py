"""Printers for ``-o table|wide|json|yaml|name`` and kubectl's human ages."""

from __future__ import annotations

import json
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from tmcd.kubectl.kinds import CliKind

    Column = tuple[str, Callable[[dict[str, Any], float], Any]]

FORMATS = ("table", "wide", "json", "yaml", "name")
"""The formats printed here; ``jsonpath=``, ``custom-columns=`` and their ``-file`` forms are
:mod:`tmcd.kubectl.templates`' (imported only when used)."""
TEMPLATE_FORMATS = ("custom-columns", "custom-columns-file", "jsonpath", "jsonpath-file")
NONE = "<none>"


def is_template(fmt: str) -> bool:
    """Whether ``fmt`` is one of the ``-o NAME=ARG`` formats (no import of the template engine)."""
    return fmt.partition("=")[0] in TEMPLATE_FORMATS


def human_duration(seconds: float) -> str:
    """kubectl's ``duration.HumanDuration`` (k8s.io/apimachinery/pkg/util/duration)."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 60 * 2:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        s = secs % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (no calendar/_strptime import)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_time(ts: str) -> float | None:
    """An RFC 3339 UTC timestamp (``2025-01-15T10:00:00Z``, fractions allowed) as Unix seconds."""
    if len(ts) < 19 or ts[4] != "-" or ts[7] != "-" or ts[10] not in "Tt " or ts[13] != ":" or ts[16] != ":":
        return None
    try:
        y, mo, d = int(ts[0:4]), int(ts[5:7]), int(ts[8:10])
        h, mi, s = int(ts[11:13]), int(ts[14:16]), int(ts[17:19])
    except ValueError:
        return None
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return None
    return float(_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s)


def rfc3339(t: float) -> str:
    """Unix seconds as an RFC 3339 UTC timestamp, whole seconds (``2025-01-15T10:00:00Z``)."""
    g = time.gmtime(int(t))
    return f"{g.tm_year:04d}-{g.tm_mon:02d}-{g.tm_mday:02d}T{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d}Z"


def age(ts: str, now: float) -> str:
    """kubectl's age column: ``<unknown>`` without a timestamp."""
    t = parse_time(ts)
    return "<unknown>" if t is None else human_duration(now - t)


def cell(value: Any) -> str:
    """A table cell: ``<none>`` for empty values, lowercase booleans."""
    if value is None or value == "" or value == [] or value == {}:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded like kubectl's tabwriter (3 spaces between columns), UPPERCASE headers."""
    head = [h.upper() for h in headers]
    widths = [len(h) for h in head]
    for row in rows:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = []
    for row in [head, *rows]:
        parts = [c.ljust(widths[i] + 3) if i < len(row) - 1 else c for i, c in enumerate(row)]
        lines.append("".join(parts).rstrip())
    return "\n".join(lines)


def as_list(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several objects as kubectl prints them: ``kind: List``."""
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": list(items)}


def dump_json(obj: Any) -> str:
    """kubectl-style JSON (4-space indent)."""
    return json.dumps(obj, indent=4, ensure_ascii=False)


def dump_yaml(obj: Any) -> str:
    """YAML (PyYAML is imported only here)."""
    import yaml

    return str(yaml.safe_dump(obj, default_flow_style=False, sort_keys=False, allow_unicode=True)).rstrip("\n")


def render(
    kind: CliKind,
    items: Sequence[dict[str, Any]],
    fmt: str,
    columns: Sequence[Column],
    wide: Sequence[Column] = (),
    *,
    single: bool = False,
    with_namespace: bool = False,
    now: float | None = None,
    allow_missing_keys: bool = True,
) -> str:
    """Render objects in one of :data:`FORMATS` or a template format; ``single`` prints one object
    rather than a List.  jsonpath text comes back exactly as the template makes it (no newline
    added: see :func:`newline_after`)."""
    if is_template(fmt):
        from tmcd.kubectl.templates import TemplatePrinter, split_format

        name, arg = split_format(fmt) or (fmt, "")
        printer = TemplatePrinter(name, arg, allow_missing_keys=allow_missing_keys)
        return printer.render(list(items), single=single)
    if fmt == "json":
        return dump_json(items[0] if single and len(items) == 1 else as_list(items))
    if fmt == "yaml":
        return dump_yaml(items[0] if single and len(items) == 1 else as_list(items))
    if fmt == "name":
        return "\n".join(kind.ref(str(o.get("metadata", {}).get("name", ""))) for o in items)
    now = time.time() if now is None else now
    cols: list[Column] = list(columns) + (list(wide) if fmt == "wide" else [])
    if with_namespace:
        cols.insert(0, ("NAMESPACE", lambda o, _n: o.get("metadata", {}).get("namespace")))
    rows = [[cell(fn(o, now)) for _h, fn in cols] for o in items]
    return table([h for h, _fn in cols], rows)


def newline_after(fmt: str) -> bool:
    """Whether a newline ends what :func:`render` returned (not after jsonpath, as kubectl)."""
    return not fmt.startswith("jsonpath")
