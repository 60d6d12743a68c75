"""Hypothesis strategies that break tmc messages: a valid example (as JSON data) goes in, the bytes a
broken or hostile publisher would send come out.

A :class:`Mutation` is drawn without knowing the names the test gives the message (so the drawn
data stays the same from run to run and shrinks well) and applied to the example's data afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import strategies as st

from tmcd.contracts.codec import encode
from tmcd.contracts.examples import EXAMPLES
from tmcd.contracts.messages import ALL_MESSAGES

_PLACEHOLDER = "\x00fuzz-placeholder\x00"
_RAW = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b"1" * 5000, b'"\xff\xfe"', b'"\xed\xa0\x80"', b"tru"]
"""What JSON (or UTF-8) does not allow, or msgspec cannot represent, written where a value goes."""
NUMBERS = [-1, -1.5, 0, 2**63, 2**64 + 1, 10**30, -(10**30), 1e12, 1e308, -1e308, 5e-324, 0.1]
"""Huge, negative and odd numbers."""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value."""

_token_chars = st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=".")
token_text = st.text(
    _token_chars | st.sampled_from("*>"),
    min_size=1,
    max_size=40,
) | st.builds(lambda c, n: c * n, st.sampled_from("a*>\u00e9"), st.sampled_from([64, 255, 1000]))
"""A subject token: unicode, NATS wildcard characters, very long; never empty, no dots or whitespace
(a publisher cannot send those: nats-py refuses whitespace, the server drops empty tokens), and short
enough for a JetStream publish (its line holds a reply subject too; see the long-subject test)."""


@dataclass(frozen=True)
class Mutation:
    """What to do to a message's data, as drawn; ``apply`` gives the payload bytes."""

    what: str
    field: int = 0
    """Index into the data's field paths (modulo their number)."""
    arg: Any = None

    def apply(self, data: dict[str, Any]) -> bytes:
        """The payload: ``data`` (the example with the test's names) broken as drawn."""
        return _APPLY[self.what](self, data)


def _paths(data: Any) -> list[tuple[Any, ...]]:
    """Every field path: top-level keys, the keys of nested objects, of the first element of lists."""
    out: list[tuple[Any, ...]] = []
    for key, value in data.items():
        out.append((key,))
        if isinstance(value, dict):
            out += [(key, k) for k in value]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out += [(key, 0, k) for k in value[0]]
    return out


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = data
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _pick(m: Mutation, data: dict[str, Any]) -> tuple[Any, ...]:
    paths = _paths(data)
    return paths[m.field % len(paths)]


def _with(m: Mutation, data: dict[str, Any], value: Any) -> bytes:
    _set(data, _pick(m, data), value)
    return msgspec.json.encode(data)


def _raw(m: Mutation, data: dict[str, Any], raw: bytes) -> bytes:
    _set(data, _pick(m, data), _PLACEHOLDER)
    return msgspec.json.encode(data).replace(msgspec.json.encode(_PLACEHOLDER), raw, 1)


def _drop(m: Mutation, data: dict[str, Any]) -> bytes:
    path = _pick(m, data)
    node: Any = data
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return msgspec.json.encode(data)


def _rename(m: Mutation, data: dict[str, Any]) -> bytes:
    path = _pick(m, data)
    node: Any = data
    for p in path[:-1]:
        node = node[p]
    node[f"{path[-1]}{m.arg}"] = node.pop(path[-1])
    return msgspec.json.encode(data)


def _deep(m: Mutation, data: dict[str, Any]) -> bytes:
    depth, opener = m.arg
    if opener == "{":
        return _raw(m, data, b'{"a":' * depth + b"1" + b"}" * depth)
    return _raw(m, data, b"[" * depth + b"]" * depth)


def _truncate(m: Mutation, data: dict[str, Any]) -> bytes:
    payload = msgspec.json.encode(data)
    return payload[: int(len(payload) * m.arg)]


_APPLY: dict[str, Callable[[Mutation, dict[str, Any]], bytes]] = {
    "none": lambda m, d: msgspec.json.encode(d),
    "drop": _drop,
    "rename": _rename,
    "retype": lambda m, d: _with(m, d, m.arg),
    "number": lambda m, d: _with(m, d, m.arg),
    "raw": lambda m, d: _raw(m, d, m.arg),
    "deep": _deep,
    "unicode": lambda m, d: _with(m, d, m.arg),
    "oversize": lambda m, d: _with(m, d, "x" * m.arg),
    "schema": lambda m, d: msgspec.json.encode({**d, "schema": m.arg}),
    "set": lambda m, d: msgspec.json.encode({**d, m.arg[0]: m.arg[1]}),
    "truncate": _truncate,
    "bytes": lambda m, d: m.arg,
    "othertype": lambda m, d: encode(EXAMPLES[ALL_MESSAGES[m.arg]]),
}

_field = st.integers(0, 63)
mutations: st.SearchStrategy[Mutation] = st.one_of(
    st.builds(Mutation, st.just("drop"), _field),
    st.builds(Mutation, st.just("rename"), _field, st.text(min_size=1, max_size=4)),
    st.builds(Mutation, st.just("retype"), _field, json_values),
    st.builds(Mutation, st.just("number"), _field, st.sampled_from(NUMBERS)),
    st.builds(Mutation, st.just("raw"), _field, st.sampled_from(_RAW)),
    st.builds(Mutation, st.just("deep"), _field, st.tuples(st.sampled_from([40, 500, 3000]), st.sampled_from("[{"))),
    st.builds(Mutation, st.just("unicode"), _field, st.text(min_size=1, max_size=30)),
    st.builds(Mutation, st.just("oversize"), _field, st.sampled_from([70_000, 600_000])),
    st.builds(Mutation, st.just("schema"), st.just(0), st.sampled_from([0, 2, 99, "1", -1, 1.5, None])),
    st.builds(Mutation, st.just("set"), st.just(0), st.tuples(st.just("timestamp"), st.sampled_from(NUMBERS))),
    st.builds(Mutation, st.just("truncate"), st.just(0), st.floats(0, 0.99)),
    st.builds(Mutation, st.just("bytes"), st.just(0), st.binary(max_size=64)),
    st.builds(Mutation, st.just("othertype"), st.just(0), st.integers(0, len(ALL_MESSAGES) - 1)),
)
"""One way to break a message."""
