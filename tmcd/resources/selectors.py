"""Kubernetes label selectors (string syntax and LabelSelector objects) and resource quantities.

The string syntax is the one ``kubectl -l`` and the ``labelSelector`` query parameter take::

    a=b   a==b   a!=b   a in (x,y)   a notin (x,y)   a   !a

Terms are separated by commas and ANDed; an empty string matches everything.  As in
Kubernetes, ``a!=b`` and ``a notin (...)`` also match objects without the label ``a``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from tmcd.resources.placement import LabelSelector

__all__ = [
    "Operator",
    "Requirement",
    "Selector",
    "SelectorError",
    "from_label_selector",
    "matches_any",
    "parse_quantity",
    "parse_selector",
]

Operator = Literal["=", "!=", "in", "notin", "exists", "!"]
"""Canonical operators: ``==`` parses to ``=``; ``exists`` is a bare key and ``!`` is ``!key``."""

_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorError(ValueError):
    """A label selector that cannot be parsed or is not valid."""


def _key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        return f"invalid label key {key!r}: prefix must be a DNS subdomain"
    if not name:
        return f"invalid label key {key!r}: name part is empty"
    if len(name) > 63 or not _NAME_RE.match(name):
        return (
            f"invalid label key {key!r}: name must be at most 63 characters of alphanumerics, '-', '_' or '.',"
            " starting and ending with an alphanumeric"
        )
    return None


def _value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None (the empty value is valid)."""
    if value == "" or (len(value) <= 63 and _NAME_RE.match(value)):
        return None
    return (
        f"invalid label value {value!r}: must be empty or at most 63 characters of alphanumerics, '-', '_' or '.',"
        " starting and ending with an alphanumeric"
    )


@dataclass(frozen=True, slots=True)
class Requirement:
    """One term of a selector: ``key op values``."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this term."""
        op = self.operator
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        value = labels.get(self.key)
        if op in ("=", "in"):
            return value is not None and value in self.values
        # "!=" and "notin" match a missing label, as in Kubernetes.
        return value is None or value not in self.values

    def __str__(self) -> str:
        op = self.operator
        if op == "exists":
            return self.key
        if op == "!":
            return f"!{self.key}"
        if op in ("=", "!="):
            return f"{self.key}{op}{self.values[0]}"
        return f"{self.key} {op} ({','.join(self.values)})"


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed label selector: the AND of its requirements (none matches everything)."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every requirement."""
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        """True if the selector matches everything."""
        return not self.requirements

    def __str__(self) -> str:
        """The canonical string: terms sorted by key (stable), set values sorted, ``==`` as ``=``."""
        return ",".join(str(r) for r in self.requirements)


def _make_selector(reqs: Iterable[Requirement]) -> Selector:
    """A Selector with requirements in canonical (key-sorted, stable) order."""
    return Selector(tuple(sorted(reqs, key=lambda r: r.key)))


def _requirement(key: str, op: Operator, values: Iterable[str] = ()) -> Requirement:
    """A validated requirement; set values are deduplicated and sorted."""
    problem = _key_problem(key)
    if problem:
        raise SelectorError(problem)
    vals = tuple(values)
    for v in vals:
        problem = _value_problem(v)
        if problem:
            raise SelectorError(f"{problem} (for key {key!r})")
    if op in ("in", "notin"):
        if not vals:
            raise SelectorError(f"operator {op!r} on key {key!r} needs at least one value")
        vals = tuple(sorted(set(vals)))
    elif op in ("=", "!="):
        if len(vals) != 1:
            raise SelectorError(f"operator {op!r} on key {key!r} needs exactly one value")
    elif vals:
        raise SelectorError(f"operator {op!r} on key {key!r} takes no values")
    return Requirement(key, op, vals)


# --- string syntax ---------------------------------------------------------------------------

_SPECIAL = "!=(),"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["ident", "op", "end"]
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    """Identifiers, the operators ``! != = == ( ) ,`` and an end marker, with positions."""
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in _SPECIAL:
            two = text[i : i + 2]
            if two in ("!=", "=="):
                tokens.append(_Token("op", two, i))
                i += 2
            else:
                tokens.append(_Token("op", c, i))
                i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in _SPECIAL:
                i += 1
            tokens.append(_Token("ident", text[start:i], start))
    tokens.append(_Token("end", "", n))
    return tokens


class _Parser:
    """Recursive-descent parser over the tokens of one selector string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def fail(self, tok: _Token, what: str) -> SelectorError:
        found = "end of input" if tok.kind == "end" else repr(tok.text)
        return SelectorError(f"invalid selector {self.text!r}: {what} at position {tok.pos}, found {found}")

    def parse(self) -> Selector:
        reqs: list[Requirement] = []
        if self.peek().kind == "end":
            return Selector()
        while True:
            reqs.append(self.requirement())
            tok = self.next()
            if tok.kind == "end":
                return _make_selector(reqs)
            if tok.text != ",":
                raise self.fail(tok, "expected ',' or end of input after a term")

    def key(self) -> _Token:
        tok = self.next()
        if tok.kind != "ident":
            raise self.fail(tok, "expected a label key")
        if "<" in tok.text or ">" in tok.text:
            raise self.fail(tok, "the '<' and '>' operators are not supported")
        return tok

    def checked(self, tok: _Token, key: str, op: Operator, values: Sequence[str] = ()) -> Requirement:
        try:
            return _requirement(key, op, values)
        except SelectorError as e:
            raise SelectorError(f"invalid selector {self.text!r}: term at position {tok.pos}: {e}") from None

    def requirement(self) -> Requirement:
        first = self.peek()
        if first.kind == "op" and first.text == "!":
            self.next()
            key = self.key()
            return self.checked(first, key.text, "!")
        key = self.key()
        tok = self.peek()
        if tok.kind == "end" or tok.text == ",":
            return self.checked(key, key.text, "exists")
        self.next()
        if tok.kind == "op" and tok.text in ("=", "==", "!="):
            op: Operator = "!=" if tok.text == "!=" else "="
            return self.checked(key, key.text, op, [self.exact_value()])
        if tok.kind == "ident" and tok.text in ("in", "notin"):
            set_op: Operator = "in" if tok.text == "in" else "notin"
            return self.checked(key, key.text, set_op, self.value_set(tok.text))
        raise self.fail(tok, f"expected one of '=', '==', '!=', 'in', 'notin' after key {key.text!r}")

    def exact_value(self) -> str:
        tok = self.peek()
        if tok.kind == "end" or tok.text == ",":
            return ""  # "a=" selects the empty value, as in Kubernetes
        if tok.kind != "ident":
            raise self.fail(tok, "expected a label value")
        self.next()
        return tok.text

    def value_set(self, op: str) -> list[str]:
        tok = self.next()
        if tok.text != "(" or tok.kind != "op":
            raise self.fail(tok, f"expected '(' after {op!r}")
        values: list[str] = []
        expect_value = True
        while True:
            tok = self.next()
            if tok.kind == "ident" and expect_value:
                values.append(tok.text)
                expect_value = False
            elif tok.kind == "op" and tok.text == ",":
                if expect_value:
                    values.append("")  # "(a,,b)" holds the empty value, as in Kubernetes
                expect_value = True
            elif tok.kind == "op" and tok.text == ")":
                if expect_value:
                    values.append("")  # "()" and "(a,)" hold the empty value, as in Kubernetes
                return values
            elif tok.kind == "end":
                raise self.fail(tok, f"unclosed '(' in {op!r} value list")
            else:
                raise self.fail(tok, f"expected a value, ',' or ')' in {op!r} value list")


def parse_selector(text: str) -> Selector:
    """Parse the Kubernetes selector string syntax; raises SelectorError naming the position and term."""
    return _Parser(text).parse()


# --- LabelSelector objects -------------------------------------------------------------------

_OPERATORS: dict[str, Operator] = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def from_label_selector(ls: LabelSelector) -> Selector:
    """A Selector from matchLabels and matchExpressions (ANDed); an empty LabelSelector matches everything."""
    reqs = [_requirement(k, "=", [v]) for k, v in ls.match_labels.items()]
    for expr in ls.match_expressions:
        op = _OPERATORS.get(expr.operator)
        if op is None:
            raise SelectorError(
                f"invalid matchExpressions operator {expr.operator!r} on key {expr.key!r}:"
                " must be In, NotIn, Exists or DoesNotExist"
            )
        reqs.append(_requirement(expr.key, op, expr.values))
    return _make_selector(reqs)


def matches_any(selectors: Sequence[LabelSelector], labels: Mapping[str, str]) -> bool:
    """Whether any selector matches (ORed); an empty list matches everything."""
    if not selectors:
        return True
    return any(from_label_selector(s).matches(labels) for s in selectors)


# --- quantities ------------------------------------------------------------------------------

_QUANTITY_RE = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exp>[eE][+-]?[0-9]+)|(?P<dec>[numkMGTPE]))?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def parse_quantity(s: str) -> float:
    """A Kubernetes quantity in base units: ``"7500m"`` -> 7.5, ``"32Gi"`` -> 34359738368.0, ``"1e3"`` -> 1000.0.

    Surrounding whitespace is ignored; anything else that is not a quantity raises ValueError.
    """
    m = _QUANTITY_RE.match(s.strip())
    if m is None:
        raise ValueError(f"invalid quantity {s!r}")
    num = float(m["num"])
    if m["bin"]:
        return num * _BINARY[m["bin"]]
    if m["exp"]:
        try:
            return num * 10.0 ** int(m["exp"][1:])
        except OverflowError:
            raise ValueError(f"quantity {s!r} is out of range") from None
    if m["dec"]:
        return num * _DECIMAL[m["dec"]]
    return num
