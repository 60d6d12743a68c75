"""JSON Schema of msgspec types, with descriptions taken from our own docstrings.

msgspec derives a struct's ``description`` from its docstring, and how it trims that text
has changed between releases (0.23 dedents, earlier ones did not).  Generated files must
not depend on that: :func:`schema_components` replaces every struct's description with
its docstring cleaned by :func:`doc_text` and puts ``null`` last in every ``anyOf``, so
the output is the same on every release.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
from collections.abc import Sequence
from typing import Any

import msgspec
from msgspec import inspect as mi


def schema_hook(tp: type) -> dict[str, Any]:
    """``object`` (any JSON value) needs a non-empty schema for msgspec."""
    if tp is object:
        return {"description": "Any JSON value."}
    raise NotImplementedError


def doc_text(doc: str | None) -> str:
    """A docstring as it belongs in a schema: indentation and surrounding blank lines removed."""
    return inspect.cleandoc(doc) if doc else ""


def struct_types(types: Sequence[Any]) -> list[mi.StructType]:
    """Every struct type reachable from ``types`` (fields, unions, containers), each once."""
    found: dict[type, mi.StructType] = {}
    stack: list[mi.Type] = list(mi.multi_type_info(types))
    while stack:
        t = stack.pop()
        if isinstance(t, mi.StructType):
            if t.cls not in found:
                found[t.cls] = t
                stack.extend(f.type for f in t.fields)
        elif isinstance(t, mi.Metadata):
            stack.append(t.type)
        elif isinstance(t, mi.UnionType):
            stack.extend(t.types)
        elif isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            stack.append(t.item_type)
        elif isinstance(t, mi.DictType):
            stack.extend((t.key_type, t.value_type))
        elif isinstance(t, mi.TupleType):
            stack.extend(t.item_types)
    return list(found.values())


def schema_of(struct: mi.StructType, schemas: dict[str, Any]) -> dict[str, Any] | None:
    """The entry of ``schemas`` (``$defs`` or ``components.schemas``) that describes ``struct``."""
    cls = struct.cls
    found = schemas.get(cls.__name__) or schemas.get(f"{cls.__module__}.{cls.__qualname__}")
    return found if isinstance(found, dict) else None


def set_struct_descriptions(types: Sequence[Any], schemas: dict[str, Any]) -> None:
    """Give each struct's schema its own docstring (cleaned) as description, or none."""
    for st in struct_types(types):
        schema = schema_of(st, schemas)
        if schema is None:
            continue
        doc = doc_text(st.cls.__dict__.get("__doc__"))
        if doc:
            schema["description"] = doc
        else:
            schema.pop("description", None)


def _null_last(node: Any) -> None:
    """Order every ``anyOf`` with ``null`` last (msgspec releases differ in where they put it)."""
    if isinstance(node, dict):
        alts = node.get("anyOf")
        if isinstance(alts, list):
            node["anyOf"] = [a for a in alts if a != {"type": "null"}] + [a for a in alts if a == {"type": "null"}]
        for value in node.values():
            _null_last(value)
    elif isinstance(node, list):
        for value in node:
            _null_last(value)


def canonical(types: Sequence[Any], schemas: dict[str, Any]) -> None:
    """Make generated schemas independent of msgspec's release: our docstrings, ``null`` last."""
    set_struct_descriptions(types, schemas)
    _null_last(schemas)


def schema_components(types: Sequence[Any], ref_template: str) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """``msgspec.json.schema_components`` with our own struct descriptions."""
    refs, schemas = msgspec.json.schema_components(types, ref_template=ref_template, schema_hook=schema_hook)
    canonical(types, schemas)
    return refs, schemas


def schema(tp: Any) -> dict[str, Any]:
    """``msgspec.json.schema`` of one type (``$ref`` + ``$defs``) with our own struct descriptions."""
    out = msgspec.json.schema(tp, schema_hook=schema_hook)
    canonical([tp], out.get("$defs", {}))
    return out


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a class (the string right after a field), by field name."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out: dict[str, str] = {}
    for prev, node in itertools.pairwise(body):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            out[prev.target.id] = " ".join(node.value.value.split())
    return out


def add_field_docs(types: Sequence[Any], schemas: dict[str, Any]) -> None:
    """Give each struct field without a ``Meta`` description its attribute docstring as description."""
    for st in struct_types(types):
        schema = schema_of(st, schemas) or {}
        props = schema.get("properties", {})
        docs = field_docs(st.cls)
        for f in st.fields:
            if f.name in docs and f.encode_name in props and "description" not in props[f.encode_name]:
                props[f.encode_name]["description"] = docs[f.name]
