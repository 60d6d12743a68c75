"""The two patch formats of the API: JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

Both work on plain JSON data.  A JSON patch that is not a list of operations is a 400; one
that cannot be applied (a missing path, a failed ``test``) a 422, as kube-apiserver answers.
"""

from __future__ import annotations

import copy
from typing import Any

from tmcd.api import errors, jsonbody

MERGE = "merge"
JSON = "json"
PATCH_TYPES = (MERGE, JSON)
MEDIA_TYPES = {"application/merge-patch+json": MERGE, "application/json-patch+json": JSON, "application/json": MERGE}
"""PATCH body media types; plain ``application/json`` is a merge patch (as tmcd always took it)."""
_OPS = frozenset(("add", "remove", "replace", "move", "copy", "test"))


def decode(raw: bytes) -> Any:
    """A patch document from a request body: 400 when it is not JSON or is nested too deeply."""
    return jsonbody.decode(raw, "the patch")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def check(patch_type: str, patch: Any) -> None:
    """400 for a patch document of the wrong shape (or nested too deeply)."""
    jsonbody.check_depth(patch, "the patch")
    if patch_type == MERGE:
        if not isinstance(patch, dict):
            raise errors.bad_request("a merge patch must be a JSON object")
        return
    if patch_type != JSON:
        raise errors.bad_request(f"unknown patch type {patch_type!r}: want merge or json")
    if not isinstance(patch, list):
        raise errors.bad_request("a JSON patch must be an array of operations")
    for i, op in enumerate(patch):
        if (
            not isinstance(op, dict)
            or not isinstance(op.get("op"), str)
            or op["op"] not in _OPS
            or not isinstance(op.get("path"), str)
        ):
            raise errors.bad_request(f"JSON patch operation {i}: want {{op, path[, value|from]}} with op one of "
                                     + ", ".join(sorted(_OPS)))  # fmt: skip
        if op["op"] in ("add", "replace", "test") and "value" not in op:
            raise errors.bad_request(f"JSON patch operation {i} ({op['op']}): value is required")
        if op["op"] in ("move", "copy") and not isinstance(op.get("from"), str):
            raise errors.bad_request(f"JSON patch operation {i} ({op['op']}): from is required")


def apply(patch_type: str, target: Any, patch: Any) -> Any:
    """``target`` patched (a new object; ``target`` is left alone)."""
    check(patch_type, patch)
    if patch_type == MERGE:
        return merge_patch(target, patch)
    doc = copy.deepcopy(target)
    for i, op in enumerate(patch):
        try:
            doc = _apply_op(doc, op)
        except _PatchError as exc:
            cause = errors.StatusCause(field=op["path"], message=f"JSON patch operation {i} ({op['op']}): {exc}")
            raise errors.ApiError(422, "Invalid", f"the JSON patch cannot be applied: {exc}", causes=[cause]) from None
    return doc


def touches(patch_type: str, patch: Any, top: str) -> bool:
    """Whether the patch sets anything under the top-level field ``top`` (e.g. ``status``)."""
    if patch_type == MERGE:
        return isinstance(patch, dict) and top in patch
    return isinstance(patch, list) and any(
        isinstance(op, dict) and str(op.get("path", "")).split("/")[1:2] == [top] for op in patch
    )


class _PatchError(Exception):
    pass


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise _PatchError(f"path {pointer!r} must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, adding: bool) -> int:
    if adding and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise _PatchError(f"{token!r} is not an array index")
    i = int(token)
    if i > len(container) or (i == len(container) and not adding):
        raise _PatchError(f"index {i} is out of range")
    return i


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for t in tokens[:-1]:
        if isinstance(node, dict) and t in node:
            node = node[t]
        elif isinstance(node, list):
            node = node[_index(node, t, adding=False)]
        else:
            raise _PatchError(f"path element {t!r} does not exist")
    return node


def _get(doc: Any, pointer: str) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchError(f"{pointer!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, adding=False)]
    raise _PatchError(f"{pointer!r} does not exist")


def _remove(doc: Any, pointer: str) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        raise _PatchError("cannot remove the whole document")
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, adding=False))
    raise _PatchError(f"{pointer!r} does not exist")


def _add(doc: Any, pointer: str, value: Any, *, replace: bool = False) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise _PatchError(f"{pointer!r} does not exist")
        parent[last] = value
    elif isinstance(parent, list):
        i = _index(parent, last, adding=not replace)
        if replace:
            parent[i] = value
        else:
            parent.insert(i, value)
    else:
        raise _PatchError(f"the parent of {pointer!r} is not an object or array")
    return doc


def _apply_op(doc: Any, op: dict[str, Any]) -> Any:
    kind, path = op["op"], op["path"]
    if kind == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    if kind == "replace":
        return _add(doc, path, copy.deepcopy(op["value"]), replace=True)
    if kind == "remove":
        _remove(doc, path)
        return doc
    if kind == "test":
        if _get(doc, path) != op["value"]:
            raise _PatchError(f"test failed: {path!r} is not the given value")
        return doc
    if kind == "copy":
        return _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
    if path.startswith(op["from"] + "/"):
        raise _PatchError(f"cannot move {op['from']!r} into itself")
    return _add(doc, path, _remove(doc, op["from"]))  # move
