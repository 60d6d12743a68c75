"""Values printed as Go prints them in kubectl: ``fmt.Sprint`` (jsonpath text, custom-columns
cells) and ``json.Marshal`` (maps and lists in jsonpath output).

The differences from Python that show: ``2.0`` prints ``2``, floats use an exponent from 1e6
on (``%v``) or from 1e21 on (JSON), JSON keys are sorted and ``<>&`` escaped, maps print as
``map[k:v]`` and lists as ``[a b]`` in custom columns.
"""

from __future__ import annotations

from typing import Any


def _basic(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return ""


def compare(op: str, a: Any, b: Any) -> bool:
    """Go text/template's eq, ne, lt, le, gt, ge: values of one basic kind only."""
    ka, kb = _basic(a), _basic(b)
    if op not in ("==", "!=", "<", "<=", ">", ">="):
        raise ValueError(f"unrecognized filter operator {op}")
    if not ka or not kb:
        raise ValueError("invalid type for comparison")
    if ka != kb:
        raise ValueError("incompatible types for comparison")
    if op == "==":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if ka == "bool":
        raise ValueError("invalid type for comparison")
    return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])


def go_type(value: Any) -> str:
    """The Go type a decoded JSON value has in client-go (for error messages)."""
    kind = _basic(value)
    if kind in ("int", "float"):
        return kind + "64"
    if kind:
        return kind
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    return "<nil>"


def _digits(f: float) -> tuple[str, int]:
    """Shortest round-trip digits of ``abs(f)`` and the decimal point position (0.DIGITS x 10^dp)."""
    mantissa, _, exp = repr(abs(f)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits, dp = whole + frac, len(whole) + int(exp or 0)
    stripped = digits.lstrip("0")
    dp -= len(digits) - len(stripped)
    return stripped.rstrip("0"), dp


def _float(f: float, exponent: bool, dp_trim: bool = False) -> str:
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if f < 0 or (f == 0 and repr(f).startswith("-")) else ""
    digits, dp = _digits(f)
    if not digits:
        return sign + "0"
    if exponent:
        exp = dp - 1
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        text = f"{mant}e{'-' if exp < 0 else '+'}{abs(exp):0{1 if dp_trim else 2}d}"
        return sign + text
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def go_float(f: float) -> str:
    """``fmt.Sprint`` of a float64 (``%v``: shortest digits, exponent below 1e-4 or from 1e6 on)."""
    if f == f and f not in (float("inf"), float("-inf")) and _digits(f)[0]:
        exp = _digits(f)[1] - 1
        return _float(f, exp < -4 or exp >= 6)
    return _float(f, False)


def _json_float(f: float) -> str:
    a = abs(f)
    return _float(f, a != 0 and (a < 1e-6 or a >= 1e21), dp_trim=True)


_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def go_json(value: Any) -> str:
    """``json.Marshal`` as Go does it: compact, sorted keys, ``<>&`` escaped, ``2.0`` as ``2``."""
    import json

    if isinstance(value, dict):
        return "{" + ",".join(f"{go_json(str(k))}:{go_json(value[k])}" for k in sorted(value, key=str)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return "".join(_HTML.get(c, c) for c in text) if any(c in text for c in _HTML) else text
    if isinstance(value, float):
        return _json_float(value)
    return json.dumps(value)


def go_text(value: Any) -> str:
    """A scalar as jsonpath prints it: strings raw, ``true``, ``null``, Go's float format."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    return str(value)


def go_sprint(value: Any) -> str:
    """``fmt.Sprint`` of a decoded JSON value: ``map[a:1 b:x]``, ``[1 2]``, ``<nil>``."""
    if value is None:
        return "<nil>"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_sprint(value[k])}" for k in sorted(value, key=str)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_sprint(v) for v in value) + "]"
    return go_text(value)
