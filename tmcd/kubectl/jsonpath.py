"""kubectl's JSONPath templates (``-o jsonpath=...``), written to behave as client-go's
``util/jsonpath`` does on decoded JSON: the same syntax, results, missing-key rule and
value printing, so a template that works with ``kubectl get`` works here.

Imported only when a template is used (never on ``get``'s fast path).  Parsing follows
client-go's parser character by character (including its quirks: ``['a.b']`` splits at the
dot, ``{.}`` finds nothing); evaluation works on ``json.loads`` values.
"""

from __future__ import annotations

from typing import Any

from tmcd.kubectl.gofmt import compare, go_json, go_text, go_type

Node = tuple[Any, ...]
"""("text", s) ("field", name) ("wild",) ("rec",) ("array", params) ("union", [lists]) ("filter",
left, right, op) ("ident", name) ("lit", value) ("list", [nodes])."""

_TERMINATORS = frozenset(" \t\r\n.,[]$@{}")
_OPERATOR_CHARS = frozenset("!<>=")
_BOOLS = {"true": True, "false": False}


class JsonPathError(Exception):
    """A template that does not parse, or that fails on the object (message as client-go's)."""


# --- parsing --------------------------------------------------------------------------------


class _Parser:
    """client-go's jsonpath parser: ``{...}`` actions between literal text."""

    def __init__(self, text: str) -> None:
        self.input = text
        self.pos = 0
        self.start = 0

    def next(self) -> str:
        if self.pos >= len(self.input):
            self.pos += 1  # as Go's width-1 eof, so backup() stays symmetric
            return ""
        r = self.input[self.pos]
        self.pos += 1
        return r

    def peek(self) -> str:
        return self.input[self.pos] if self.pos < len(self.input) else ""

    def backup(self) -> None:
        self.pos -= 1

    def consume(self) -> str:
        value = self.input[self.start : min(self.pos, len(self.input))]
        self.start = self.pos
        return value

    def parse(self) -> list[Node]:
        root: list[Node] = []
        while True:
            if self.input.startswith("{", self.pos):
                if self.pos > self.start:
                    root.append(("text", self.consume()))
                self.pos += 1
                self.consume()
                action: list[Node] = []
                root.append(("list", action))
                self.inside(action)
                continue
            if self.next() == "":
                break
        self.pos = min(self.pos, len(self.input))
        if self.pos > self.start:
            root.append(("text", self.consume()))
        return root

    def inside(self, cur: list[Node]) -> None:
        """The inside of one action, up to and including its ``}``."""
        while True:
            rest = self.input[self.pos :]
            if rest.startswith("}"):
                self.pos += 1
                self.consume()
                return
            if rest.startswith("[?("):
                self.filter(cur)
                continue
            if rest.startswith(".."):
                if cur and cur[-1][0] == "rec":
                    raise JsonPathError("invalid multiple recursive descent")
                self.pos += 2
                self.consume()
                cur.append(("rec",))
                if _alnum(self.peek()):
                    self.field(cur)
                continue
            r = self.next()
            if r == "" or r in "\r\n":
                raise JsonPathError("unclosed action")
            if r in " @$":
                self.consume()
            elif r == "[":
                self.array(cur)
            elif r in "\"'":
                self.quote(cur, r)
            elif r == ".":
                self.field(cur)
            elif r in "+-" or r.isdigit():
                self.backup()
                self.number(cur)
            elif _alnum(r):
                self.backup()
                self.identifier(cur)
            else:
                raise JsonPathError(f"unrecognized character in action: U+{ord(r):04X} {r!r}")

    def field(self, cur: list[Node]) -> None:
        self.consume()
        while True:
            r = self.next()
            if r == "\\":
                self.next()
            elif r == "" or r in _TERMINATORS:
                self.backup()
                break
        value = self.consume()
        cur.append(("wild",) if value == "*" else ("field", value.replace("\\", "")))

    def array(self, cur: list[Node]) -> None:
        while True:
            r = self.next()
            if r == "" or r == "\n":
                raise JsonPathError("unterminated array")
            if r == "]":
                break
        text = self.consume()[1:-1]
        if text == "*":
            text = ":"
        parts = text.split(",")
        if len(parts) > 1:
            union = [_action(f"[{p.strip(' ')}]") for p in parts]
            cur.append(("union", union))
            return
        if len(text) >= 2 and text[0] == "'" and text[-1] == "'" and "'" not in text[1:-1]:
            cur.extend(_action("." + text[1:-1]))
            return
        cur.append(("array", _slice(text)))

    def filter(self, cur: list[Node]) -> None:
        self.pos += 3
        self.consume()
        begin = end = False
        pair = ""
        while True:
            r = self.next()
            if r == "" or r == "\n":
                raise JsonPathError("unterminated filter")
            if r in "\"'":
                if not begin:
                    begin, pair = True, r
                    continue
                if self.input[self.pos - 2] != "\\" and r == pair:
                    end = True
            elif r == ")" and begin == end:
                break
        if self.next() != "]":
            raise JsonPathError("unclosed array expect ]")
        text = self.consume()[:-2]
        split = _split_filter(text)
        if split is None:
            cur.append(("filter", _action(text), [], "exists"))
        else:
            left, op, right = split
            cur.append(("filter", _action(left), _action(right), op))

    def quote(self, cur: list[Node], end: str) -> None:
        while True:
            r = self.next()
            if r == "" or r == "\n":
                raise JsonPathError("unterminated quoted string")
            if r == "\\":
                r = self.next()
                if r != "" and r != "\n":
                    continue
                break
            if r == end:
                break
        value = self.consume()
        cur.append(("text", _unquote(value)))

    def number(self, cur: list[Node]) -> None:
        if self.peek() in ("+", "-"):
            self.next()
        while self.peek() == "." or self.peek().isdigit():
            self.next()
        value = self.consume()
        try:
            cur.append(("lit", int(value)))
        except ValueError:
            try:
                cur.append(("lit", float(value)))
            except ValueError:
                raise JsonPathError(f"cannot parse number {value}") from None

    def identifier(self, cur: list[Node]) -> None:
        while self.peek() != "" and self.peek() not in _TERMINATORS:
            self.next()
        value = self.consume()
        if value in _BOOLS:
            cur.append(("lit", _BOOLS[value]))
        else:
            cur.append(("ident", value))


def _alnum(r: str) -> bool:
    return r == "_" or (r != "" and r.isalnum())


def _action(text: str) -> list[Node]:
    """The nodes of ``text`` parsed as the inside of one action (client-go's parseAction)."""
    nodes = _Parser("{" + text + "}").parse()
    return list(nodes[0][1]) if nodes and nodes[0][0] == "list" else []


def _slice(text: str) -> tuple[tuple[int, bool, bool], ...]:
    """``[start:stop:step]`` as three (value, known, derived) entries, as client-go's ArrayNode."""
    parts = text.split(":")
    if len(parts) > 3 or not all(_int_text(p) for p in parts):
        raise JsonPathError(f"invalid array index {text}")
    groups = [parts[0], *(":" + p for p in parts[1:])] + [""] * (3 - len(parts))
    out: list[tuple[int, bool, bool]] = []
    for i, group in enumerate(groups):
        if group != "":
            value = group[1:] if i > 0 else group
            if i > 0 and value == "":
                out.append((0, False, False))
                continue
            try:
                out.append((int(value), True, False))
            except ValueError:
                raise JsonPathError(f"array index {value} is not a number") from None
        elif i == 1:
            out.append((out[0][0] + 1, True, True))
        else:
            out.append((0, False, False))
    return tuple(out)


def _int_text(p: str) -> bool:
    digits = p[1:] if p.startswith("-") else p
    return digits == "" or (digits.isdigit() and digits.isascii())


def _split_filter(text: str) -> tuple[str, str, str] | None:
    """``left op right`` as client-go's ``^([^!<>=]+)([!<>=]+)(.+?)$``."""
    i = 0
    while i < len(text) and text[i] not in _OPERATOR_CHARS:
        i += 1
    j = i
    while j < len(text) and text[j] in _OPERATOR_CHARS:
        j += 1
    if i == 0 or j == i or j >= len(text) or "\n" in text:
        return None
    return text[:i], text[i:j], text[j:]


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", "'": "'", '"': '"'}


def _unquote(quoted: str) -> str:
    """A quoted string's value (Go's escapes: ``\\n``, ``\\t``, ``\\xHH``, ``\\uHHHH``, ...)."""
    body, out, i = quoted[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c != "\\" or i + 1 >= len(body):
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        width = {"x": 2, "u": 4, "U": 8}.get(e, 0)
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif width:
            code = body[i + 2 : i + 2 + width]
            if len(code) != width or not all(ch in "0123456789abcdefABCDEF" for ch in code):
                raise JsonPathError(f"unquote string {quoted} error invalid syntax")
            out.append(chr(int(code, 16)))
            i += 2 + width
        elif e in "01234567" and len(body[i + 1 : i + 4]) == 3:
            out.append(chr(int(body[i + 1 : i + 4], 8)))
            i += 4
        else:
            raise JsonPathError(f"unquote string {quoted} error invalid syntax")
    return "".join(out)


def parse(template: str) -> list[Node]:
    """The nodes of a template; raises JsonPathError."""
    return _Parser(template).parse()


# --- evaluation -----------------------------------------------------------------------------


class JsonPath:
    """A parsed template; :meth:`execute` renders it for one decoded JSON document."""

    def __init__(self, template: str, *, allow_missing_keys: bool = True) -> None:
        self.template = template
        self.nodes = parse(template)
        self.allow_missing_keys = allow_missing_keys

    def execute(self, data: Any) -> str:
        """The text kubectl prints (no newline added); raises JsonPathError."""
        return "".join(print_results(r) for r in self._run(self.nodes, data, 0))

    def find_results(self, data: Any) -> list[list[Any]]:
        """The values of each top-level node (custom-columns prints them its own way)."""
        return self._run(self.nodes, data, 0)

    def _run(self, nodes: list[Node], root: Any, depth: int) -> list[list[Any]]:
        full: list[list[Any]] = []
        i = 0
        while i < len(nodes):
            node = nodes[i]
            if node[0] == "text":
                full.append([node[1]])
                i += 1
                continue
            idents = {n[1] for n in node[1] if n[0] == "ident"}
            if "end" in idents and depth == 0:
                raise JsonPathError("not in range, nothing to end")
            values = self._list([root], node[1])
            if "end" in idents:
                return full
            if "range" in idents:
                end = _matching_end(nodes, i)
                body = nodes[i + 1 : end]
                for value in values:
                    full.extend(self._run(body, value, depth + 1))
                # without an {end}, client-go goes on after the {range} with the outer object
                i = i + 1 if end == len(nodes) else end + 1
                continue
            full.append(values)
            i += 1
        return full

    def _list(self, cur: list[Any], nodes: list[Node]) -> list[Any]:
        for node in nodes:
            cur = self._walk(cur, node)
        return cur

    def _walk(self, cur: list[Any], node: Node) -> list[Any]:
        kind = node[0]
        if kind in ("text", "lit"):
            return [node[1] for _ in cur]
        if kind == "list":
            return self._list(cur, node[1])
        if kind == "field":
            return self._field(cur, node[1])
        if kind == "array":
            return _array(cur, node[1])
        if kind == "wild":
            return [c for v in cur for c in _children(v)]
        if kind == "rec":
            return _recursive(cur)
        if kind == "union":
            return [v for part in node[1] for v in self._list(cur, part)]
        if kind == "filter":
            return self._filter(cur, node[1], node[2], node[3])
        if node[1] == "range":
            return cur
        if node[1] == "end":
            return []
        raise JsonPathError(f"unrecognized identifier {node[1]}")

    def _field(self, cur: list[Any], name: str) -> list[Any]:
        if not cur:
            return []
        out = [v[name] for v in cur if isinstance(v, dict) and name in v]
        if not out and not self.allow_missing_keys:
            raise JsonPathError(f"{name} is not found")
        return out

    def _filter(self, cur: list[Any], left: list[Node], right: list[Node], op: str) -> list[Any]:
        out: list[Any] = []
        for value in cur:
            if not isinstance(value, list):
                raise JsonPathError(f"{go_text(value)} is not array or slice and cannot be filtered")
            for item in value:
                if op == "exists":
                    try:
                        found = self._list([item], left)
                    except JsonPathError:
                        found = []
                    if found:
                        out.append(item)
                    continue
                lefts = self._list([item], left)
                if not lefts:
                    continue
                if len(lefts) > 1:
                    raise JsonPathError("can only compare one element at a time")
                rights = self._list([item], right)
                if not rights:
                    continue
                if len(rights) > 1:
                    raise JsonPathError("can only compare one element at a time")
                try:
                    passed = compare(op, lefts[0], rights[0])
                except ValueError as exc:
                    raise JsonPathError(str(exc)) from None
                if passed:
                    out.append(item)
        return out


def _matching_end(nodes: list[Node], start: int) -> int:
    """The index of the ``{end}`` closing the ``{range}`` at ``start`` (``len(nodes)`` if none)."""
    depth = 0
    for j in range(start + 1, len(nodes)):
        if nodes[j][0] != "list":
            continue
        idents = {n[1] for n in nodes[j][1] if n[0] == "ident"}
        if "range" in idents:
            depth += 1
        elif "end" in idents:
            if depth == 0:
                return j
            depth -= 1
    return len(nodes)


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return list(value.encode())  # client-go indexes a string's bytes
    return []


def _recursive(cur: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in cur:
        children = _children(value)
        if children:
            out.append(value)
            out.extend(_recursive(children))
    return out


def _array(cur: list[Any], params: tuple[tuple[int, bool, bool], ...]) -> list[Any]:
    out: list[Any] = []
    (p0, known0, _), (p1, known1, derived1), (p2, known2, _) = params
    for value in cur:
        if value is None:
            continue
        if not isinstance(value, list):
            raise JsonPathError(f"{go_type(value)} is not array or slice")
        n = len(value)
        start = p0 if known0 else 0
        if start < 0:
            start += n
        stop = p1 if known1 else n
        if stop < 0 or (stop == 0 and derived1):
            stop += n
        if stop == start:
            return out
        if start >= n or start < 0:
            raise JsonPathError(f"array index out of bounds: index {start}, length {n}")
        if stop > n or stop < 0:
            raise JsonPathError(f"array index out of bounds: index {stop - 1}, length {n}")
        if start > stop:
            raise JsonPathError(f"starting index {start} is greater than ending index {stop}")
        if known2 and p2 <= 0:
            raise JsonPathError("step must be > 0")
        out.extend(value[start : stop : p2 if known2 else 1])
    return out


def print_results(values: list[Any]) -> str:
    """One node's values, space-separated: maps and lists as JSON, scalars as text."""
    return " ".join(go_json(v) if isinstance(v, dict | list) else go_text(v) for v in values)
