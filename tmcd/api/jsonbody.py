"""JSON request bodies: nesting beyond :data:`MAX_DEPTH` is a 400, never a RecursionError (a 500).

msgspec's decoder, ``copy.deepcopy``, the merge patch and the encoder all recurse once per level,
and Python's stack holds about 1,000: a body nested deeper than that fails to decode, and one a
little shallower decodes but fails later (copied, patched, stored, read back by the API cache).
tmcd's objects need about 10 levels, so the API refuses anything past :data:`MAX_DEPTH` as soon
as it is decoded.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tmcd.api import errors

MAX_DEPTH = 64
"""Nesting levels (objects and arrays) a request body may have."""


def too_deep(what: str = "the request body") -> errors.ApiError:
    """400: nested deeper than :data:`MAX_DEPTH`."""
    return errors.bad_request(f"{what} is nested too deeply: at most {MAX_DEPTH} levels of objects and arrays")


def nested_deeper(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether decoded JSON ``value`` nests objects and arrays more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def check_depth(value: Any, what: str = "the request body") -> Any:
    """``value`` when it nests at most :data:`MAX_DEPTH` levels; 400 otherwise."""
    if nested_deeper(value):
        raise too_deep(what)
    return value


def decode(data: bytes, what: str = "the request body") -> Any:
    """Decode JSON of any shape: 400 when it is not JSON or nested too deeply."""
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise errors.bad_request(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise too_deep(what) from None
    return check_depth(value, what)
