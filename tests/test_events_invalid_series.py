"""``tmc_events_invalid_total`` has a series for every message kind and reason from start-up, so
alert rules on its rate() see 0 rather than nothing; the lists come from the codec alone."""

from __future__ import annotations

import ast
from pathlib import Path

from prometheus_client import generate_latest

from tests.helpers import sample
from tmcd.contracts.codec import INVALID_KINDS, REASONS
from tmcd.contracts.messages import ALL_MESSAGES
from tmcd.runtime.selfmetrics import SelfMetrics

TMCD = Path(__file__).resolve().parent.parent / "tmcd"


def test_every_kind_and_reason_exported_at_zero() -> None:
    text = generate_latest(SelfMetrics().registry).decode()
    series = [line for line in text.splitlines() if line.startswith("tmc_events_invalid_total{")]
    assert len(series) == len(INVALID_KINDS) * len(REASONS) <= 150  # bounded cardinality
    for kind in INVALID_KINDS:
        for reason in REASONS:
            line = f'tmc_events_invalid_total{{kind="{kind}",reason="{reason}"}} 0.0'
            assert line in series, line
    assert sample(text, "tmc_events_invalid_total", kind="sync_event", reason="too_deep") == 0.0


def test_kinds_are_the_contracts_message_kinds() -> None:
    assert set(INVALID_KINDS) == {m.KIND for m in ALL_MESSAGES} | {"unknown"}
    assert {"too_deep", "handler_error"} <= set(REASONS)


def _reason_literals() -> set[str]:
    """Every reason tmcd gives: InvalidMessage("x", ...) calls and `reason = "x"` assignments."""
    found: set[str] = set()
    for path in TMCD.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) == "InvalidMessage"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(str(node.args[0].value))
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "reason" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and path.parent.name in ("bus", "contracts")
            ):
                found.add(node.value.value)
    return found


def test_every_reason_in_the_code_is_in_the_codecs_list() -> None:
    literals = _reason_literals()
    assert {"malformed_json", "too_deep", "handler_error"} <= literals  # the scan finds them
    assert literals <= set(REASONS), literals - set(REASONS)
