"""Label selectors (string syntax and LabelSelector objects) and Kubernetes quantities."""

from __future__ import annotations

import msgspec
import pytest

from tmcd.resources.placement import LabelSelector, LabelSelectorRequirement
from tmcd.resources.selectors import (
    Requirement,
    Selector,
    SelectorError,
    from_label_selector,
    matches_any,
    parse_quantity,
    parse_selector,
)

EAST = {"region": "us-east", "zone": "us-east-1a", "tier": "gold"}
WEST = {"region": "eu-west", "zone": "eu-west-1b"}
BARE: dict[str, str] = {}


# --- operators -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "east", "west", "bare"),
    [
        ("region=us-east", True, False, False),
        ("region==us-east", True, False, False),
        ("region!=us-east", False, True, True),  # != matches a missing label
        ("region in (us-east,ap-south)", True, False, False),
        ("region notin (us-east,ap-south)", False, True, True),  # notin matches a missing label
        ("tier", True, False, False),
        ("!tier", False, True, True),
        ("region in (us-east,eu-west),!tier", False, True, False),
        ("region,zone notin (eu-west-1b)", True, False, False),
        ("", True, True, True),
        ("   ", True, True, True),
    ],
)
def test_string_operators(text: str, east: bool, west: bool, bare: bool) -> None:
    sel = parse_selector(text)
    assert (sel.matches(EAST), sel.matches(WEST), sel.matches(BARE)) == (east, west, bare)


def test_empty_value_selects_empty_label() -> None:
    sel = parse_selector("tier=")
    assert sel.matches({"tier": ""})
    assert not sel.matches({"tier": "gold"})
    assert not sel.matches({})
    assert parse_selector("tier in (gold,)").matches({"tier": ""})


def test_whitespace_is_insignificant() -> None:
    spaced = parse_selector("  region  in  ( us-east ,  eu-west )  ,  ! tier , zone != x , a == b ")
    tight = parse_selector("region in (us-east,eu-west),!tier,zone!=x,a=b")
    assert spaced == tight
    assert str(spaced) == str(tight)


def test_tabs_and_newlines() -> None:
    assert parse_selector("a=b,\n\tc in (d)") == parse_selector("a=b,c in (d)")


def test_prefixed_keys_and_dotted_values() -> None:
    sel = parse_selector("topology.kubernetes.io/region=us-east-1,app.kubernetes.io/name in (web.v2,api_1)")
    assert sel.matches({"topology.kubernetes.io/region": "us-east-1", "app.kubernetes.io/name": "api_1"})
    assert not sel.matches({"topology.kubernetes.io/region": "us-east-1", "app.kubernetes.io/name": "web"})


def test_keywords_as_keys_and_values() -> None:
    assert parse_selector("in=notin").matches({"in": "notin"})
    assert parse_selector("notin in (in)").matches({"notin": "in"})


# --- canonical string ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        ("a==b", "a=b"),
        ("b=1,a=2", "a=2,b=1"),
        ("z in (y,x,y)", "z in (x,y)"),
        ("a notin ( c , b )", "a notin (b,c)"),
        ("!b, a", "a,!b"),
        ("a=1,a!=2", "a=1,a!=2"),  # the sort by key is stable
        ("a=", "a="),
    ],
)
def test_canonical_string(text: str, canonical: str) -> None:
    sel = parse_selector(text)
    assert str(sel) == canonical
    assert parse_selector(str(sel)) == sel  # round trip


def test_selector_objects() -> None:
    sel = parse_selector("a in (x),!b")
    assert sel.requirements == (Requirement("a", "in", ("x",)), Requirement("b", "!"))
    assert not sel.empty
    assert Selector().empty
    assert Selector().matches({"anything": "goes"})


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("region in us-east", "expected '(' after 'in' at position 10"),
        ("region in (us-east", "unclosed '(' in 'in' value list at position 18"),
        ("region in (a b)", "expected a value, ',' or ')' in 'in' value list at position 13"),
        ("region in (a))", "expected ',' or end of input after a term at position 13"),
        ("=us-east", "expected a label key at position 0"),
        ("!", "expected a label key at position 1"),
        ("a,", "expected a label key at position 2"),
        (",a", "expected a label key at position 0"),
        ("a,,b", "expected a label key at position 2"),
        ("a b", "expected one of '=', '==', '!=', 'in', 'notin' after key 'a' at position 2"),
        ("a=b=c", "at position 3"),
        ("a=(b)", "expected a label value at position 2"),
        ("!a=b", "expected ',' or end of input after a term at position 2"),
        ("a>1", "'<' and '>' operators are not supported at position 0"),
        ("-a=b", "invalid label key '-a'"),
        ("UPPER.case/a=b", "prefix must be a DNS subdomain"),
        ("a=" + "x" * 64, "invalid label value"),
        ("a=b,c=-bad", "term at position 4"),
    ],
)
def test_parse_errors(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value)


def test_selector_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        parse_selector("a in")


# --- LabelSelector objects -------------------------------------------------------------------


def req(key: str, operator: str, *values: str) -> LabelSelectorRequirement:
    return LabelSelectorRequirement(key=key, operator=operator, values=list(values))  # type: ignore[arg-type]


def test_from_label_selector_empty_matches_everything() -> None:
    sel = from_label_selector(LabelSelector())
    assert sel.empty
    assert sel.matches(EAST) and sel.matches(BARE)


def test_from_label_selector_ands_labels_and_expressions() -> None:
    ls = LabelSelector(
        match_labels={"region": "us-east"},
        match_expressions=[req("tier", "In", "gold", "silver"), req("zone", "Exists"), req("legacy", "DoesNotExist")],
    )
    sel = from_label_selector(ls)
    assert sel.matches(EAST)
    assert not sel.matches({**EAST, "legacy": "yes"})
    assert not sel.matches({**EAST, "tier": "bronze"})
    assert not sel.matches({**EAST, "region": "eu-west"})
    assert str(sel) == "!legacy,region=us-east,tier in (gold,silver),zone"


def test_from_label_selector_notin() -> None:
    sel = from_label_selector(LabelSelector(match_expressions=[req("region", "NotIn", "us-east")]))
    assert not sel.matches(EAST)
    assert sel.matches(WEST) and sel.matches(BARE)


def test_from_label_selector_equals_string_form() -> None:
    ls = LabelSelector(match_labels={"a": "1"}, match_expressions=[req("b", "In", "x", "y"), req("c", "DoesNotExist")])
    assert from_label_selector(ls) == parse_selector("a=1,b in (y,x),!c")


def test_from_label_selector_decoded_from_camel_json() -> None:
    raw = b'{"matchLabels":{"region":"us-east"},"matchExpressions":[{"key":"tier","operator":"NotIn","values":["x"]}]}'
    ls = msgspec.json.decode(raw, type=LabelSelector)
    assert from_label_selector(ls).matches(EAST)


@pytest.mark.parametrize(
    ("ls", "fragment"),
    [
        (LabelSelector(match_expressions=[req("a", "In")]), "needs at least one value"),
        (LabelSelector(match_expressions=[req("a", "NotIn")]), "needs at least one value"),
        (LabelSelector(match_expressions=[req("a", "Exists", "x")]), "takes no values"),
        (LabelSelector(match_expressions=[req("a", "DoesNotExist", "x")]), "takes no values"),
        (LabelSelector(match_expressions=[req("a", "Gt", "1")]), "invalid matchExpressions operator 'Gt'"),
        (LabelSelector(match_labels={"bad key": "x"}), "invalid label key 'bad key'"),
        (LabelSelector(match_labels={"a": "bad value"}), "invalid label value 'bad value'"),
    ],
)
def test_from_label_selector_errors(ls: LabelSelector, fragment: str) -> None:
    with pytest.raises(SelectorError, match=fragment):
        from_label_selector(ls)


def test_matches_any_ors_selectors() -> None:
    east = LabelSelector(match_labels={"region": "us-east"})
    west = LabelSelector(match_labels={"region": "eu-west"})
    gold = LabelSelector(match_expressions=[req("tier", "In", "gold")])
    assert matches_any([east, west], EAST)
    assert matches_any([east, west], WEST)
    assert not matches_any([east, west], BARE)
    assert matches_any([west, gold], EAST)  # only the second matches
    assert not matches_any([gold], WEST)


def test_matches_any_empty_list_matches_everything() -> None:
    assert matches_any([], BARE)
    assert matches_any([], EAST)


def test_matches_any_with_an_empty_selector_matches_everything() -> None:
    assert matches_any([LabelSelector(match_labels={"region": "x"}), LabelSelector()], BARE)


# --- quantities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8", 8.0),
        ("0", 0.0),
        ("7500m", 7.5),
        ("250m", 0.25),
        ("0.5", 0.5),
        (".5", 0.5),
        ("1.", 1.0),
        ("+2", 2.0),
        ("-1", -1.0),
        ("110", 110.0),
        ("34359738368", 34359738368.0),
        ("32Gi", 32 * 2**30),
        ("1Ki", 1024.0),
        ("1.5Mi", 1.5 * 2**20),
        ("2Ti", 2 * 2**40),
        ("1Pi", 2.0**50),
        ("1Ei", 2.0**60),
        ("500n", 500e-9),
        ("10u", 10e-6),
        ("1k", 1e3),
        ("2M", 2e6),
        ("32G", 32e9),
        ("1T", 1e12),
        ("1P", 1e15),
        ("1E", 1e18),
        ("1e3", 1e3),
        ("1E3", 1e3),
        ("5e-3", 5e-3),
        ("2.5e+2", 250.0),
        (" 4 ", 4.0),
    ],
)
def test_parse_quantity(text: str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    ["", " ", "abc", "Gi", "1x", "1 Gi", "1gi", "1KI", "1.2.3", "--1", "1e", "1e3Gi", "nan", "inf", "0x10", "1e400"],
)
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)
