"""Every PromQL expression of the dashboards, the alert rules and the catalog's examples adds
its series up over tmcd replicas the way tmcd/metrics/replicas.py says: events split across
replicas are summed, state every replica exports is taken once (max), leader-only state is
read from the leader, and per-replica views keep ``instance``.  (promtool's unit tests in
config/prometheus/tmc-alerts.test.yaml show the alerts on two replicas' series.)"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from tests.test_alert_rules import ALERTS
from tests.test_dashboards import (
    AGGREGATIONS,
    DASHBOARDS,
    GROUPING,
    KEYWORDS,
    _skip_group,
    _tokens,
    exprs,
    load,
)
from tmcd.metrics import catalog, replicas

REPLICA_LABELS = {"instance", "pod"}
KEEPS_REPLICAS = {"max", "min", "avg", "group"}
"""Aggregations that take one value of series every replica has (sum would count each once per replica)."""


class Agg(NamedTuple):
    name: str
    mode: str  # "by", "without" or "" (everything)
    labels: frozenset[str]

    def drops(self, label: str) -> bool:
        return label in self.labels if self.mode == "without" else label not in self.labels


class Ref(NamedTuple):
    name: str
    aggs: tuple[Agg, ...]  # enclosing aggregations, innermost last
    in_quantile: bool


def refs(expr: str) -> list[Ref]:
    """Each metric selector with the aggregations around it (``by``/``without`` written before
    the argument, as tmcd's files do; a clause after it is rejected)."""
    tokens = _tokens(expr)
    out: list[Ref] = []
    stack: list[tuple[str, Agg | None]] = []
    pending: tuple[str, Agg | None] = ("", None)
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "open" and text in "{[":
            i = _skip_group(tokens, i)
            continue
        if kind == "open":
            stack.append(pending)
            pending = ("", None)
        elif kind == "close":
            stack.pop()
            if nxt[1] in ("by", "without"):
                raise ValueError(f"write {nxt[1]} (...) before the aggregation's argument: {expr}")
        elif kind == "ident" and text.lower() in GROUPING and nxt == ("open", "("):
            end = _skip_group(tokens, i + 1)
            labels = frozenset(t for k, t in tokens[i + 2 : end - 1] if k == "ident")
            if text in ("by", "without") and pending[1] is not None:
                pending = (pending[0], Agg(pending[0], text, labels))
            i = end
            continue
        elif kind == "ident" and text.lower() not in KEYWORDS:
            if text in AGGREGATIONS:
                pending = (text, Agg(text, "", frozenset()))
            elif nxt == ("open", "("):
                pending = (text, None)
            else:
                aggs = tuple(a for _, a in stack if a is not None)
                out.append(Ref(text, aggs, any(f == "histogram_quantile" for f, _ in stack)))
        i += 1
    return out


def problems(expr: str) -> list[str]:
    """What in ``expr`` does not add up over replicas."""
    found: list[str] = []
    for ref in refs(expr):
        base = ref.name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        spec = catalog.BY_NAME.get(ref.name) or catalog.BY_NAME.get(base)
        if spec is None:
            continue  # up, process_*
        how = replicas.across(spec)
        inner = ref.aggs[-1] if ref.aggs else None
        if ref.in_quantile and ref.name.endswith("_bucket") and not all(not a.drops("le") for a in ref.aggs):
            found.append(f"{ref.name}: histogram_quantile needs le kept by every aggregation")
        if how == "replica":
            continue
        if inner is None:
            found.append(f"{ref.name} ({how}): not aggregated over replicas")
            continue
        if not inner.drops("instance"):
            if how == "split" and spec.name in replicas.SPLIT_SELF:
                continue  # tmcd's own consumption, per replica: which replica lags
            found.append(f"{ref.name} ({how}): {inner.name} keeps instance")
            continue
        counted = spec.kind in ("counter", "histogram")
        if how == "split" or (how == "leader" and counted):
            if inner.name != "sum":
                found.append(f"{ref.name} ({how}): summed over replicas, not {inner.name}")
        elif inner.name not in KEEPS_REPLICAS:
            found.append(f"{ref.name} ({how}): every replica has it; take max, not {inner.name}")
        if how == "leader" and not counted and replicas.leader_filter(replicas.leader_agent(spec)) not in expr:
            found.append(f"{ref.name}: from the leader only ({replicas.leader_filter(replicas.leader_agent(spec))})")
    return found


def all_exprs() -> list[tuple[str, str]]:
    out = [(f"{p.name}: {where}", e) for p in DASHBOARDS for where, e in exprs(load(p)) if "variable" not in where]
    out += [(f"alert {a['alert']}", a["expr"]) for a in ALERTS]
    out += [(f"catalog example of {s.name}", s.example) for s in catalog.SPECS]
    return out


@pytest.mark.parametrize(("where", "expr"), all_exprs(), ids=[w for w, _ in all_exprs()])
def test_expression_adds_up_over_replicas(where: str, expr: str) -> None:
    assert not problems(expr), f"{where}: {problems(expr)}\n{expr}"


@pytest.mark.parametrize(
    ("expr", "bad"),
    [
        ("sum by (cluster) (rate(tmc_syncer_resources_synced_total[5m]))", False),
        ("max by (cluster) (rate(tmc_syncer_resources_synced_total[5m]))", True),  # a split counter: sum
        ("sum by (instance) (rate(tmc_syncer_resources_synced_total[5m]))", True),
        ("tmc_syncer_queue_depth > 1000", True),
        ("sum by (cluster) (tmc_syncer_queue_depth)", True),  # once per replica
        ("topk(5, max without (instance, pod) (tmc_syncer_queue_depth))", False),
        ("count by (region) (tmc_cluster_info)", True),
        (
            "histogram_quantile(0.9, max without (instance, pod, le) "
            "(rate(tmc_syncer_heartbeat_interval_seconds_bucket[5m])))",
            True,
        ),
        ("max by (status) (tmc_fleet_clusters)", True),  # a former leader's last values
        ('max by (status) (tmc_fleet_clusters unless on (instance) tmc_leader{agent="health"} == 0)', False),
        ("sum by (instance, le) (rate(tmc_event_lag_seconds_bucket[5m]))", False),
        ("min by (instance) (tmc_nats_connected)", False),
    ],
)
def test_the_checker(expr: str, bad: bool) -> None:
    assert bool(problems(expr)) == bad, problems(expr)


def test_every_metric_says_how_it_adds_up() -> None:
    kinds = {replicas.across(s) for s in catalog.SPECS}
    assert kinds == {"split", "same", "leader", "replica"}
    assert {s.name for s in catalog.SPECS if replicas.across(s) == "leader"} >= {
        "tmc_cluster_health_status",
        "tmc_canary_phase",
        "tmc_rollbacks_total",
    }
    assert set(catalog.BY_NAME) >= replicas.SAME | replicas.SPLIT_SELF
