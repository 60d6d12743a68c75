"""RFC 7386 merge patch and RFC 6902 JSON patch, as the fake API server (tests/fakekube.py) applies them."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


class PatchTestFailed(ValueError):
    """A JSON patch ``test`` op found another value."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge_patch(target.get(k), v)
    return target


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(doc: Any, ops: list[Obj]) -> Any:
    """RFC 6902: add, remove, replace, test (what the adapters send)."""
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        kind = op["op"]
        if kind == "test":
            have = node[int(last)] if isinstance(node, list) else node.get(last)
            if have != op["value"]:
                raise PatchTestFailed(f"testing value {op['path']} failed: have {have!r}, want {op['value']!r}")
        elif kind in ("add", "replace"):
            if isinstance(node, list):
                i = len(node) if last == "-" else int(last)
                node[i : i + (kind == "replace")] = [op["value"]]
            else:
                if kind == "replace" and last not in node:
                    raise KeyError(f"replace {op['path']}: missing")
                node[last] = op["value"]
        elif kind == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            raise ValueError(f"unsupported op {kind}")
    return doc
