"""``-o jsonpath=...``, ``-o jsonpath-file=FILE``, ``-o custom-columns=...`` and
``-o custom-columns-file=FILE``, as kubectl prints them.

Imported only when one of these formats is asked for.  jsonpath renders the document kubectl
would (the object for ``get KIND NAME``, else a ``List``) and prints exactly what the
template says, with no newline added; custom-columns prints one row per object with the
headers as given and ``<none>`` for a path that finds nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tmcd.kubectl.errors import CliError, UsageError
from tmcd.kubectl.gofmt import go_sprint
from tmcd.kubectl.jsonpath import JsonPath, JsonPathError
from tmcd.kubectl.output import TEMPLATE_FORMATS

_NONE = "<none>"
_MIN_WIDTH, _PADDING = 6, 3  # kubectl's tabwriter (cli-runtime printers.GetNewTabWriter)


def split_format(output: str) -> tuple[str, str] | None:
    """``jsonpath={.a}`` -> (``jsonpath``, ``{.a}``); None when ``output`` is not a template format."""
    name, _, arg = output.partition("=")
    if name in TEMPLATE_FORMATS:
        return name, arg
    return None


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"error reading --{what} {path!r}: {exc.strerror or exc}") from None


class Column:
    """One custom column: its header and the jsonpath of its values."""

    def __init__(self, header: str, path: JsonPath) -> None:
        self.header = header
        self.path = path


def relaxed_path(expr: str) -> str:
    """kubectl's RelaxedJSONPathExpression: ``a.b``, ``.a.b``, ``{a.b}`` and ``{.a.b}`` -> ``{.a.b}``."""
    if not expr:
        return expr
    inner = expr[1:-1] if expr.startswith("{") and expr.endswith("}") else expr
    inner = inner[1:] if inner.startswith(".") else inner
    if not inner or "{" in inner or "}" in inner:
        raise UsageError(
            f"custom-columns path {expr!r}: expected a 'name1.name2', '.name1.name2', '{{name1.name2}}' "
            "or '{.name1.name2}'"
        )
    return "{." + inner + "}"


def _column(header: str, expr: str) -> Column:
    spec = relaxed_path(expr)
    try:
        return Column(header, JsonPath(spec, allow_missing_keys=True))
    except JsonPathError as exc:
        raise UsageError(f"error parsing jsonpath {spec}, {exc}") from None


def parse_columns(spec: str) -> list[Column]:
    """``NAME:.metadata.name,PHASE:.status.phase``."""
    if not spec:
        raise UsageError("custom-columns format specified but no custom columns given")
    columns = []
    for part in spec.split(","):
        header, sep, expr = part.partition(":")
        if not sep:
            raise UsageError(f"unexpected custom-columns spec: {part}, expected <header>:<json-path-expr>")
        columns.append(_column(header, expr))
    return columns


def parse_columns_file(text: str) -> list[Column]:
    """Two lines: the headers, then the paths, each separated by whitespace."""
    lines = text.splitlines()
    if not lines:
        raise UsageError("invalid custom-columns file, missing header line: want one line of headers, one of paths")
    if len(lines) < 2:
        raise UsageError("invalid custom-columns file, missing spec line: want one line of headers, one of paths")
    headers, specs = lines[0].split(), lines[1].split()
    if len(headers) != len(specs):
        raise UsageError(f"number of headers ({len(headers)}) and field specifications ({len(specs)}) don't match")
    return [_column(h, s) for h, s in zip(headers, specs, strict=True)]


class TemplatePrinter:
    """A parsed ``-o jsonpath...``/``-o custom-columns...``; bad templates are usage errors (exit 2)."""

    def __init__(self, name: str, arg: str, *, allow_missing_keys: bool = True) -> None:
        self.name = name
        self.jsonpath: JsonPath | None = None
        self.columns: list[Column] = []
        if name.startswith("jsonpath"):
            template = _read(arg, "template") if name == "jsonpath-file" else arg
            if not template:
                raise UsageError("template format specified but no template given")
            try:
                self.jsonpath = JsonPath(template, allow_missing_keys=allow_missing_keys)
            except JsonPathError as exc:
                raise UsageError(f"error parsing jsonpath {template}, {exc}") from None
        elif name == "custom-columns-file":
            self.columns = parse_columns_file(_read(arg, "custom-columns-file"))
        else:
            self.columns = parse_columns(arg)

    @property
    def newline(self) -> bool:
        """Whether the caller ends the output with a newline (jsonpath prints exactly its template)."""
        return self.jsonpath is None

    def render(self, items: list[dict[str, Any]], *, single: bool) -> str:
        """The text for these objects (``single``: one object asked for by name)."""
        if not (single and len(items) == 1):
            items = go_roundtrip(items)
        if self.jsonpath is not None:
            doc: Any = items[0] if single and len(items) == 1 else _as_list(items)
            try:
                return self.jsonpath.execute(doc)
            except JsonPathError as exc:
                raise CliError(f"error executing jsonpath {json.dumps(self.jsonpath.template)}: {exc}") from None
        rows = [[c.header for c in self.columns]]
        rows += [[_cell(c, obj) for c in self.columns] for obj in items]
        return _tabwriter(rows)


def go_roundtrip(value: Any) -> Any:
    """What kubectl get's List of several objects holds after its JSON round trip through Go:
    a whole float below 1e21 comes back as an integer (``2.0`` -> ``2``, so ``==2`` matches and
    ``1234567.0`` prints ``1234567``); one object asked for by name is printed as decoded."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 1e21 else value
    if isinstance(value, dict):
        return {k: go_roundtrip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [go_roundtrip(v) for v in value]
    return value


def _as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "items": list(items), "kind": "List", "metadata": {"resourceVersion": ""}}


def _cell(column: Column, obj: dict[str, Any]) -> str:
    try:
        results = column.path.find_results(obj)
    except JsonPathError as exc:
        raise CliError(f"custom column {column.header}: {exc}") from None
    values = [go_sprint(v) for r in results for v in r]
    if not results or not results[0]:
        values.insert(0, _NONE)
    return ",".join(v.replace("\x1b", "^[") for v in values)


def _tabwriter(rows: list[list[str]]) -> str:
    """Go's tabwriter as kubectl sets it up: cells padded by 3, at least 6 wide, the last not padded."""
    widths = [max(_MIN_WIDTH, *(len(r[i]) + _PADDING for r in rows)) for i in range(len(rows[0]) - 1)]
    lines = ["".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + r[-1] for r in rows]
    return "\n".join(lines)
