"""The Prometheus alerting rules (config/prometheus/tmc-alerts.yaml): structure, annotations, metric names, and
promtool's own check and unit tests (config/prometheus/tmc-alerts.test.yaml).

promtool comes from the Debian package ``prometheus``; without it these tests fail rather than skip."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_dashboards import is_known_series, metric_names, require_promtool

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "config" / "prometheus"
RULES = PROMETHEUS_DIR / "tmc-alerts.yaml"
RULE_TESTS = PROMETHEUS_DIR / "tmc-alerts.test.yaml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"

EXPECTED_ALERTS = {
    "TmcSyncerDown",
    "TmcHeartbeatStale",
    "TmcSyncErrorRatioHigh",
    "TmcSyncQueueBackingUp",
    "TmcNotReady",
    "TmcNatsAccessDenied",
    "TmcEventLagHigh",
    "TmcCanaryRolledBack",
    "TmcLeaderCount",
}
SEVERITIES = {"critical", "warning", "info"}


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def alerts() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


ALERTS = alerts()


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_promtool(), *args], capture_output=True, text=True, check=False, cwd=ROOT)


def test_one_group_named_tmc() -> None:
    groups = load_yaml(RULES)["groups"]
    assert [g["name"] for g in groups] == ["tmc"]


def test_expected_alerts() -> None:
    names = [a["alert"] for a in ALERTS]
    assert len(set(names)) == len(names), "duplicate alert names"
    assert set(names) == EXPECTED_ALERTS


@pytest.mark.parametrize("alert", ALERTS, ids=[a["alert"] for a in ALERTS])
def test_labels_and_annotations(alert: dict[str, Any]) -> None:
    name = alert["alert"]
    assert alert.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity label"
    annotations = alert.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{name}: no {key} annotation"
    assert annotations["runbook_url"] == f"docs/runbooks.md#{name.lower()}"
    assert "$labels." in annotations["summary"], f"{name}: summary should say which {{{{ $labels.* }}}} is affected"
    assert "$labels." in annotations["description"], f"{name}: description should use $labels"


@pytest.mark.parametrize("alert", ALERTS, ids=[a["alert"] for a in ALERTS])
def test_metrics_are_exported_by_tmcd(alert: dict[str, Any]) -> None:
    names = metric_names(alert["expr"])
    assert names, f"{alert['alert']}: no metric in {alert['expr']!r}"
    unknown = sorted(n for n in names if not is_known_series(n))
    assert not unknown, f"{alert['alert']}: metrics tmcd does not export: {unknown}"


def test_promtool_check_rules() -> None:
    proc = run_promtool("check", "rules", str(RULES))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output, output
    assert f"{len(ALERTS)} rules found" in output, output


def test_promtool_unit_tests() -> None:
    proc = run_promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_unit_tests_cover_firing_and_quiet_cases() -> None:
    """Every alert has a promtool case where it fires and one where it must not."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fires == EXPECTED_ALERTS, f"no firing case for {EXPECTED_ALERTS - fires}"
    assert quiet == EXPECTED_ALERTS, f"no non-firing case for {EXPECTED_ALERTS - quiet}"


def test_unit_tests_load_the_rules_file() -> None:
    assert load_yaml(RULE_TESTS)["rule_files"] == [RULES.name]


def test_example_prometheus_config() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert RULES.name in config["rule_files"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "tmcd"]
    assert job["scrape_interval"] == "15s"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["127.0.0.1:8080"]
    # TmcNotReady relies on the job name
    assert any(re.search(r'up\{job="tmcd"\}', a["expr"]) for a in ALERTS)
    proc = run_promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr
