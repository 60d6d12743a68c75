"""Generated schemas do not depend on how a msgspec release treats docstrings or unions."""

from __future__ import annotations

import msgspec

from tmcd.contracts import jsonschema


class Inner(msgspec.Struct):
    """First line of a docstring that wraps
    onto an indented second line.

        An indented example stays indented relative to the text.
    """

    x: int = 0


class Undocumented(msgspec.Struct):
    y: int = 0


class Outer(msgspec.Struct):
    """Outer."""

    inner: Inner | None = None
    other: Undocumented | None = None


def test_descriptions_are_our_cleaned_docstrings() -> None:
    _, schemas = jsonschema.schema_components([Outer], "#/$defs/{name}")
    assert schemas["Inner"]["description"] == (
        "First line of a docstring that wraps\nonto an indented second line.\n\n"
        "    An indented example stays indented relative to the text."
    )
    assert schemas["Outer"]["description"] == "Outer."
    assert "description" not in schemas["Undocumented"]


def test_null_comes_last_in_every_union() -> None:
    out = jsonschema.schema(Outer)
    props = out["$defs"]["Outer"]["properties"]
    for name in ("inner", "other"):
        assert props[name]["anyOf"][-1] == {"type": "null"}, props[name]


def test_raw_msgspec_descriptions_are_overridden() -> None:
    raw = msgspec.json.schema(Inner)
    ours = jsonschema.schema(Inner)
    # whatever msgspec made of the docstring, ours is the cleaned one
    assert ours["$defs"]["Inner"]["description"] == jsonschema.doc_text(Inner.__doc__)
    assert set(raw["$defs"]["Inner"]) == set(ours["$defs"]["Inner"])


def test_any_json_value() -> None:
    class Holder(msgspec.Struct):
        value: object = None

    out = jsonschema.schema(Holder)
    assert out["$defs"]["Holder"]["properties"]["value"]["description"] == "Any JSON value."
