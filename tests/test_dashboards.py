"""Lint the Grafana dashboards in config/grafana the way grafana/dashboard-linter does, and check that every metric
their PromQL references is one tmcd exports (or will export: PLANNED_METRICS).

The PromQL helpers here (metric_refs, metric_names, is_known_series, require_promtool) are shared with
test_alert_rules.py."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from tests import tools
from tmcd.metrics.catalog import SPECS, exported_series_names

ROOT = Path(__file__).resolve().parent.parent
GRAFANA_DIR = ROOT / "config" / "grafana"
DASHBOARDS = sorted(GRAFANA_DIR.glob("*.json"))
EXPECTED_DASHBOARDS = {"tmc-fleet-overview.json", "tmc-syncer-detail.json", "tmc-placement.json", "tmc-canary.json"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Metrics the dashboards and alert rules may use before tmcd exports them (none at the moment). name -> kind.
# Move each into tmcd/metrics/catalog.py SPECS when its feature lands, and drop it here.
PLANNED_METRICS: dict[str, str] = {}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def planned_series_names() -> set[str]:
    """Sample names the planned metrics will produce."""
    names: set[str] = set()
    for name, kind in PLANNED_METRICS.items():
        if kind == "histogram":
            names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
        else:
            names.add(name)
    return names


def known_series_names() -> set[str]:
    return exported_series_names() | planned_series_names() | {"up"}


def counter_series_names() -> set[str]:
    """Samples that only make sense under rate()/irate()/increase(): counters and histogram series."""
    names = {s.name for s in SPECS if s.kind == "counter"}
    names |= {n for s in SPECS if s.kind == "histogram" for n in s.series_names}
    names |= {n for n, kind in PLANNED_METRICS.items() if kind == "counter"}
    names |= {n + suffix for n, kind in PLANNED_METRICS.items() if kind == "histogram" for suffix in HISTOGRAM_SUFFIXES}
    return names


def is_known_series(name: str) -> bool:
    """Whether a PromQL expression may reference ``name``."""
    return name in known_series_names() or name.startswith(("process_", "python_"))


# -- a small PromQL metric-name extractor -------------------------------------------------------------------

AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = GROUPING | {"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
RANGE_FUNCTIONS = frozenset({"rate", "irate", "increase"})

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])           # Grafana variables
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\w*) # numbers, durations (5m, 1h30m), hex
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<open>[({\[])
  | (?P<close>[)}\]])
  | (?P<space>\s+)
  | (?P<other>.)
    """,
    re.VERBOSE,
)
_PAIRS = {"(": ")", "{": "}", "[": "]"}


class MetricRef(NamedTuple):
    """A metric name in an expression and the functions/aggregations enclosing it (innermost last)."""

    name: str
    enclosing: tuple[str, ...]


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, m.group()))
    return out


def _skip_group(tokens: list[tuple[str, str]], i: int) -> int:
    """Index just past the bracket group opening at ``tokens[i]``."""
    closers = [_PAIRS[tokens[i][1]]]
    i += 1
    while closers:
        if i >= len(tokens):
            raise ValueError("unbalanced brackets")
        kind, text = tokens[i]
        if kind == "open":
            closers.append(_PAIRS[text])
        elif kind == "close" and text != closers.pop():
            raise ValueError(f"mismatched {text!r}")
        i += 1
    return i


def metric_refs(expr: str) -> list[MetricRef]:
    """Every metric selector in a PromQL expression, skipping functions, aggregations, keywords, label matchers
    (``{...}``), ranges (``[...]``), grouping labels (``by (...)``, ``on (...)``, ...), strings, numbers and
    Grafana variables."""
    tokens = _tokens(expr)
    refs: list[MetricRef] = []
    stack: list[str] = []  # enclosing parentheses: function name, or "" for plain grouping
    pending = ""  # function/aggregation whose "(" comes next (maybe after a by/without clause)
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "open" and text in "{[":
            i = _skip_group(tokens, i)  # label matchers, range or subquery
            continue
        if kind == "open":
            stack.append(pending)
            pending = ""
        elif kind == "close":
            if not stack:
                raise ValueError("unbalanced brackets")
            stack.pop()
        elif kind == "ident":
            word = text.lower()
            if word in GROUPING and nxt == ("open", "("):
                i = _skip_group(tokens, i + 1)  # label list
                continue
            if word in KEYWORDS:
                pass
            elif text in AGGREGATIONS or nxt == ("open", "("):
                pending = text
            else:
                refs.append(MetricRef(text, tuple(f for f in stack if f)))
        i += 1
    if stack:
        raise ValueError("unbalanced brackets")
    return refs


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    return {ref.name for ref in metric_refs(expr)}


def range_selectors(expr: str) -> list[tuple[str, list[str]]]:
    """Each rate()/irate()/increase() call in ``expr`` with the ranges (``[...]`` contents) in its argument."""
    tokens = _tokens(expr)
    calls: list[tuple[str, list[str]]] = []
    for i, (kind, text) in enumerate(tokens):
        if kind == "ident" and text in RANGE_FUNCTIONS and i + 1 < len(tokens) and tokens[i + 1] == ("open", "("):
            end = _skip_group(tokens, i + 1)
            ranges: list[str] = []
            j = i + 2
            while j < end:
                if tokens[j] == ("open", "["):
                    close = _skip_group(tokens, j)
                    ranges.append("".join(t for _, t in tokens[j + 1 : close - 1]))
                    j = close
                else:
                    j += 1
            calls.append((text, ranges))
    return calls


def variable_query_expr(query: str) -> str | None:
    """The PromQL inside a Grafana Prometheus variable query (label_values(expr, label), query_result(expr))."""
    query = query.strip()
    if m := re.fullmatch(r"label_values\((.*),\s*[a-zA-Z_]\w*\s*\)", query, re.DOTALL):
        return m.group(1)
    if re.fullmatch(r"label_values\(\s*[a-zA-Z_]\w*\s*\)|label_names\(.*\)|metrics\(.*\)", query, re.DOTALL):
        return None
    if m := re.fullmatch(r"query_result\((.*)\)", query, re.DOTALL):
        return m.group(1)
    return query


def grafana_to_promql(expr: str) -> str:
    """Substitute Grafana variables so promtool can parse the expression."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return "5m" if name in {"__rate_interval", "__interval", "__range"} else "x"

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def require_promtool() -> str:
    """promtool's path; skips the test without it (fails it under CI)."""
    return tools.require("promtool")


# -- tests of the extractor ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="tmcd"} == 0', {"up"}),
        (
            'sum by (cluster) (rate(tmc_syncer_errors_total{reason!="Other"}[$__rate_interval]))',
            {"tmc_syncer_errors_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(tmc_event_lag_seconds_bucket[5m])))",
            {"tmc_event_lag_seconds_bucket"},
        ),
        ("sum(rate(a_total[5m])) by (le, cluster) / ignoring (le) group_left (region) b_info", {"a_total", "b_info"}),
        (
            "time() - tmc_cluster_last_heartbeat_timestamp_seconds > 60",
            {"tmc_cluster_last_heartbeat_timestamp_seconds"},
        ),
        ('label_replace(up, "cluster", "$1", "instance", "(.*):.*")', {"up"}),
        ("topk(10, foo) or on (cluster) vector(0) and bar unless baz offset 1h", {"foo", "bar", "baz"}),
        ('count_values("version", tmc_build_info) > bool 1', {"tmc_build_info"}),
        ("max_over_time(foo:rate5m[1h:5m]) * -Inf + 1e3 + 0x1f", {"foo:rate5m"}),
        ('{__name__="anything"} + clamp_min(sum without (instance) (x), 1)', {"x"}),
        ('rate(c_total{cluster=~"$cluster", reason="}{"}[${__rate_interval}])', {"c_total"}),
    ],
)
def test_metric_names_extractor(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_metric_refs_know_their_enclosing_functions() -> None:
    refs = metric_refs("histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m]))) / (c_total + g)")
    assert refs == [
        MetricRef("h_bucket", ("histogram_quantile", "sum", "rate")),
        MetricRef("c_total", ()),
        MetricRef("g", ()),
    ]


def test_extractor_rejects_unbalanced_brackets() -> None:
    with pytest.raises(ValueError):
        metric_names("sum(rate(x[5m])")
    with pytest.raises(ValueError):
        metric_names("x{a='b')")


def test_range_selectors() -> None:
    expr = 'sum(rate(a[$__rate_interval])) / sum(increase(b{c="[1m]"}[5m])) + irate(c[1m:10s])'
    assert range_selectors(expr) == [("rate", ["$__rate_interval"]), ("increase", ["5m"]), ("irate", ["1m:10s"])]


def test_variable_query_expr() -> None:
    assert variable_query_expr("label_values(tmc_cluster_info, cluster)") == "tmc_cluster_info"
    assert variable_query_expr('label_values(a{ns="$ns"}, name)') == 'a{ns="$ns"}'
    assert variable_query_expr("label_values(cluster)") is None
    assert variable_query_expr("query_result(topk(5, x))") == "topk(5, x)"


def test_is_known_series() -> None:
    assert is_known_series("tmc_syncer_sync_duration_seconds_bucket")
    assert is_known_series("tmc_workload_request_duration_seconds_count")
    assert is_known_series("tmc_canary_weight")
    assert is_known_series("process_resident_memory_bytes")
    assert is_known_series("up")
    assert not is_known_series("tmc_syncer_sync_duration_seconds")  # histograms are scraped as _bucket/_sum/_count
    assert not is_known_series("tmc_made_up_total")


def test_planned_metrics_are_not_in_the_catalog_yet() -> None:
    """Once a planned metric is in the catalog its entry here is stale: delete it."""
    assert not set(PLANNED_METRICS) & {s.name for s in SPECS}


# -- the dashboards -----------------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def query_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in all_panels(dashboard) if p.get("type") not in {"row", "text"})


def exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable."""
    for panel in query_panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} target {target.get('refId')}", target["expr"]
    for var in dashboard["templating"]["list"]:
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            if (expr := variable_query_expr(query)) is not None:
                yield f"variable {var['name']}", expr


def datasource_refs(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``datasource`` value anywhere in the dashboard JSON."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield path, value
            yield from datasource_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from datasource_refs(item, f"{path}[{i}]")


@pytest.fixture(params=DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    path: Path = request.param
    return load(path)


def test_every_dashboard_is_there() -> None:
    assert {p.name for p in DASHBOARDS} == EXPECTED_DASHBOARDS


def test_uids_and_titles_are_unique() -> None:
    boards = [load(p) for p in DASHBOARDS]
    uids = [b["uid"] for b in boards]
    titles = [b["title"] for b in boards]
    assert len(set(uids)) == len(uids), uids
    assert len(set(titles)) == len(titles), titles


def test_metadata(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard.get("uid"), str) and re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard.get("title", "").strip()
    assert dashboard.get("description", "").strip()
    assert "tmc" in dashboard.get("tags", [])
    assert dashboard.get("schemaVersion", 0) >= 36
    assert dashboard.get("time", {}).get("from") and dashboard["time"].get("to")
    assert dashboard.get("refresh")
    assert dashboard.get("id") is None, "exported dashboards must not carry a database id"


def test_datasource_template_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds is not None, "no `datasource` template variable"
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"


def test_everything_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in query_panels(dashboard):
        assert panel.get("datasource") == DATASOURCE, panel.get("title")
        for target in panel.get("targets", []):
            assert target.get("datasource") == DATASOURCE, (panel.get("title"), target.get("refId"))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            assert var.get("datasource") == DATASOURCE, var["name"]
    bad = [(where, ref) for where, ref in datasource_refs(dashboard) if ref != DATASOURCE]
    assert not bad, f"hard-coded datasources: {bad}"


def test_query_variables_refresh_on_time_range_change(dashboard: dict[str, Any]) -> None:
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            assert var.get("refresh") == 2, var["name"]


def test_panels(dashboard: dict[str, Any]) -> None:
    titles: list[str] = []
    ids: list[int] = []
    for panel in all_panels(dashboard):
        ids.append(panel["id"])
        if panel.get("type") == "row":
            continue
        title = panel.get("title", "").strip()
        assert title, f"panel {panel['id']} has no title"
        titles.append(title)
        assert panel.get("description", "").strip(), f"{title}: no description"
        assert panel.get("targets"), f"{title}: no targets"
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit, f"{title}: no unit (fieldConfig.defaults.unit)"
    duplicates = {t for t in titles if titles.count(t) > 1}
    assert not duplicates, f"duplicate panel titles: {duplicates}"
    assert len(set(ids)) == len(ids), "duplicate panel ids"


def test_layout_fits_and_does_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel.get("title")
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel.get('title')!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel.get("title", "")


def test_rates_use_rate_interval(dashboard: dict[str, Any]) -> None:
    for where, expr in exprs(dashboard):
        for func, ranges in range_selectors(expr):
            assert ranges, f"{where}: {func}() without a range: {expr}"
            assert all(r == "$__rate_interval" for r in ranges), (
                f"{where}: {func}() must use [$__rate_interval]: {expr}"
            )


def test_metrics_are_exported_by_tmcd(dashboard: dict[str, Any]) -> None:
    unknown = {
        (where, name) for where, expr in exprs(dashboard) for name in metric_names(expr) if not is_known_series(name)
    }
    assert not unknown, f"metrics tmcd does not export: {sorted(unknown)}"


def test_counters_are_rated(dashboard: dict[str, Any]) -> None:
    """Counters and histogram series are meaningless raw: they must sit inside rate(), irate() or increase()."""
    counters = counter_series_names()
    for where, expr in exprs(dashboard):
        if where.startswith("variable"):
            continue
        for ref in metric_refs(expr):
            if ref.name in counters:
                assert RANGE_FUNCTIONS & set(ref.enclosing), f"{where}: {ref.name} outside rate()/increase(): {expr}"


def test_heatmaps_use_heatmap_format(dashboard: dict[str, Any]) -> None:
    for panel in query_panels(dashboard):
        if panel["type"] == "heatmap":
            for target in panel["targets"]:
                assert target.get("format") == "heatmap", panel["title"]
                assert "le" in target["expr"], panel["title"]


def test_promql_parses(tmp_path: Path) -> None:
    """Every expression (Grafana variables substituted) parses: promtool checks them as recording rules."""
    promtool = require_promtool()
    rules: list[dict[str, str]] = []
    where_by_rule: dict[str, str] = {}
    for path in DASHBOARDS:
        for where, expr in exprs(load(path)):
            record = f"dashboard_expr_{len(rules)}"
            rules.append({"record": record, "expr": grafana_to_promql(expr)})
            where_by_rule[record] = f"{path.name}: {where}"
    rule_file = tmp_path / "dashboards.rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, check=False)
    output = proc.stdout + proc.stderr
    failing = [where_by_rule[r] for r in sorted(set(re.findall(r"dashboard_expr_\d+", output)), key=len)]
    assert proc.returncode == 0, f"{output}\nin: {failing}"
