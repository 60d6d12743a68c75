"""``kubectl tmc describe canary``: the rendering (exact lines), then against a real tmcd on a real
nats-server, in-process with CliRunner and as a real ``kubectl-tmc`` subprocess."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tests.helpers import kubectl_tmc, new_object
from tests.tmcd_thread import Tmcd, tmcd_in_thread
from tmcd.contracts.messages import CanaryEvent, RollbackEvent
from tmcd.contracts.subjects import canary_event, rollback_event
from tmcd.kubectl.describe_canary import RecentEvents, describe_canary, evidence_value, step_text
from tmcd.kubectl.output import parse_time
from tmcd.kubectl.root import cli

KUBECTL_TMC = str(Path(sys.executable).parent / "kubectl-tmc")
T0 = "2025-01-15T10:00:00Z"
NOW = (parse_time(T0) or 0.0) + 600.0  # ten minutes after T0

RICH: dict[str, Any] = {
    "apiVersion": "tmc.kcp.io/v1alpha1",
    "kind": "CanaryRollout",
    "metadata": {
        "name": "checkout",
        "namespace": "shop",
        "labels": {"app": "checkout"},
        "generation": 3,
        "resourceVersion": "7",
        "creationTimestamp": T0,
    },
    "spec": {
        "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
        "stableVersion": "ghcr.io/acme/checkout:1.4.2",
        "canaryVersion": "ghcr.io/acme/checkout:1.5.0",
        "clusterSelector": {"matchLabels": {"region": "eu-west-1"}},
        "trafficRouting": {"router": "nats", "route": "checkout"},
        "steps": [
            {"setClusters": {"count": 1}},
            {"setWeight": 10},
            {"analysis": {"templates": ["error-rate", "latency"], "intervals": 5, "interval": 30.0}},
            {"pause": {}},
            {"setClusters": {"percent": 100}},
            {"setWeight": 100},
        ],
        "analysis": {"templates": ["error-rate"], "args": {"service": "checkout"}, "startStep": 1},
        "progressDeadlineSeconds": 900.0,
    },
    "status": {
        "phase": "Progressing",
        "currentStepIndex": 2,
        "currentWeight": 10,
        "canaryClusters": ["sim-001", "sim-002"],
        "stableRevision": 1,
        "canaryRevision": 2,
        "message": "analysis error-rate, interval 2 of 5",
        "observedGeneration": 3,
        "appliedWeight": 5,
        "stableVersion": "ghcr.io/acme/checkout:1.4.2",
        "canaryVersion": "ghcr.io/acme/checkout:1.5.0",
        "canaryPlacement": "checkout-canary",
        "stepStartTime": "2025-01-15T10:05:00Z",
        "progressTime": "2025-01-15T10:06:00Z",
        "conditions": [
            {
                "type": "Progressing",
                "status": "True",
                "reason": "StepAnalysis",
                "message": "",
                "lastTransitionTime": "2025-01-15T10:05:00Z",
            }
        ],
        "analysisRuns": [
            {
                "template": "error-rate",
                "phase": "Successful",
                "stepIndex": None,
                "startTime": "2025-01-15T10:01:00Z",
                "endTime": "2025-01-15T10:04:00Z",
                "message": "",
                "metrics": [
                    {
                        "name": "error-ratio",
                        "phase": "Successful",
                        "value": 0.004,
                        "count": 3,
                        "successful": 3,
                        "failed": 0,
                        "inconclusive": 0,
                        "error": 0,
                        "evidence": {"threshold": {"max": 0.01}, "samples": [0.003, 0.004, 0.004]},
                    }
                ],
            },
            {
                "template": "latency",
                "phase": "Running",
                "stepIndex": 2,
                "startTime": "2025-01-15T10:05:00Z",
                "endTime": "",
                "message": "interval 2 of 5",
                "metrics": [
                    {
                        "name": "latency-vs-stable",
                        "phase": "Inconclusive",
                        "value": 1.03,
                        "count": 2,
                        "successful": 1,
                        "failed": 0,
                        "inconclusive": 1,
                        "error": 0,
                        "consecutiveError": 0,
                        "message": "too few samples",
                        "evidence": {"test": "mann-whitney", "pValue": 0.41, "canarySamples": 12, "passed": None},
                    }
                ],
            },
        ],
    },
}


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _section(lines: list[str], title: str) -> list[str]:
    """The lines of a top-level section (from its title up to the next unindented line)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((j for j in range(start + 1, len(lines)) if not lines[j].startswith(" ")), len(lines))
    return lines[start:end]


# --- rendering ------------------------------------------------------------------------------


def test_rich_canary_header_spec_and_status() -> None:
    lines = _lines(describe_canary(RICH, RecentEvents([]), NOW))
    assert lines[:8] == [
        "Name:               checkout",
        "Namespace:          shop",
        "Labels:             app=checkout",
        "Annotations:        <none>",
        "API Version:        tmc.kcp.io/v1alpha1",
        "Kind:               CanaryRollout",
        f"Created:            {T0} (10m ago)",
        "Resource Version:   7",
    ]
    assert _section(lines, "Spec:") == [
        "Spec:",
        "  Workload:             Deployment/checkout (apps/v1)",
        "  Stable Version:       ghcr.io/acme/checkout:1.4.2",
        "  Canary Version:       ghcr.io/acme/checkout:1.5.0",
        "  Placement Ref:        <none>",
        "  Cluster Selector:     region=eu-west-1",
        "  Traffic Router:       nats",
        "  Traffic Route:        checkout",
        "  Progress Deadline:    15m",
        "  Revision History:     10",
    ]
    assert _section(lines, "Status:") == [
        "Status:",
        "  Phase:                Progressing",
        "  Message:              analysis error-rate, interval 2 of 5",
        "  Step:                 3/6",
        "  Step Started:         2025-01-15T10:05:00Z (5m ago)",
        "  Last Progress:        2025-01-15T10:06:00Z (4m ago)",
        "  Current Weight:       10%",
        "  Applied Weight:       5% (10% set, not yet applied)",
        "  Stable Version:       ghcr.io/acme/checkout:1.4.2",
        "  Canary Version:       ghcr.io/acme/checkout:1.5.0",
        "  Canary Placement:     checkout-canary",
        "  Canary Clusters:      sim-001,sim-002",
        "  Stable Revision:      1",
        "  Canary Revision:      2",
        "  Observed Generation:  3 (generation 3)",
        "  Paused Since:         <none>",
    ]


def test_rich_canary_steps_mark_the_current_one() -> None:
    lines = _lines(describe_canary(RICH, RecentEvents([]), NOW))
    assert _section(lines, "Steps:") == [
        "Steps:",
        "    1  setClusters: 1 cluster",
        "    2  setWeight: 10%",
        "  → 3  analysis: error-rate,latency, 5 intervals every 30s  (current)",
        "    4  pause: until promoted",
        "    5  setClusters: 100% of eligible clusters",
        "    6  setWeight: 100%",
    ]
    assert "Background Analysis:  error-rate from step 2, args service=checkout" in lines


def test_rich_canary_analysis_runs_with_evidence() -> None:
    lines = _lines(describe_canary(RICH, RecentEvents([]), NOW))
    assert _section(lines, "Analysis Runs:") == [
        "Analysis Runs:",
        "  error-rate (background):",
        "    Phase:    Successful",
        "    Started:  2025-01-15T10:01:00Z (9m ago)",
        "    Ended:    2025-01-15T10:04:00Z (6m ago)",
        "    Message:  <none>",
        "    Metrics:",
        "      error-ratio:",
        "        Phase:         Successful",
        "        Value:         0.004",
        "        Measurements:  3 (3 successful, 0 failed, 0 inconclusive, 0 error)",
        "        Evidence:",
        "          samples:    [0.003,0.004,0.004]",
        '          threshold:  {"max":0.01}',
        "  latency (step 3):",
        "    Phase:    Running",
        "    Started:  2025-01-15T10:05:00Z (5m ago)",
        "    Ended:    <none>",
        "    Message:  interval 2 of 5",
        "    Metrics:",
        "      latency-vs-stable:",
        "        Phase:         Inconclusive",
        "        Value:         1.03",
        "        Measurements:  2 (1 successful, 0 failed, 1 inconclusive, 0 error)",
        "        Message:       too few samples",
        "        Evidence:",
        "          canarySamples:  12",
        "          pValue:         0.41",  # sorted as JSON sorts keys (by code point)
        "          passed:         null",
        "          test:           mann-whitney",
    ]


def test_rich_canary_conditions_and_events() -> None:
    t = parse_time(T0) or 0.0
    events = RecentEvents(
        [
            ("canary", {"timestamp": t + 300, "type": "step", "phase": "Progressing", "step_index": 2, "message": ""}),
            ("canary", {"timestamp": t + 420, "type": "analysis", "message": "error-ratio 0.004 <= 0.01"}),
            ("canary", {"timestamp": t + 480, "type": "phase", "phase": "Degraded", "message": "latency up 30%"}),
            ("rollback", {"timestamp": t + 540, "stage": "started", "from_revision": 2, "to_revision": 1}),
        ],
        older=2,
    )
    lines = _lines(describe_canary(RICH, events, NOW))
    assert [line.split() for line in _section(lines, "Conditions:")] == [
        ["Conditions:"],
        ["TYPE", "STATUS", "REASON", "MESSAGE", "AGE"],
        ["Progressing", "True", "StepAnalysis", "<none>", "5m"],
    ]
    ev = _section(lines, "Events:")
    assert ev[0] == "Events:" and ev[1].split() == ["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]
    assert [line.split(maxsplit=4) for line in ev[2:6]] == [
        ["Normal", "StepChanged", "5m", "canary-controller", "phase Progressing, step 3"],
        ["Normal", "AnalysisResult", "3m", "canary-controller", "error-ratio 0.004 <= 0.01"],
        ["Warning", "PhaseChanged", "2m", "canary-controller", "latency up 30%"],
        ["Warning", "RollbackStarted", "60s", "rollback-engine", "(revision 2 → 1)"],
    ]
    assert ev[6:] == ["  (2 older events not shown)"]
    assert lines[-1] == ev[-1]


def test_empty_status_renders_none() -> None:
    obj = copy.deepcopy(RICH)
    obj.pop("status")
    lines = _lines(describe_canary(obj, RecentEvents([]), NOW))
    assert _section(lines, "Status:") == [
        "Status:",
        "  Phase:                Pending",
        "  Message:              <none>",
        "  Step:                 0/6",
        "  Step Started:         <none>",
        "  Last Progress:        <none>",
        "  Current Weight:       0%",
        "  Applied Weight:       <none>",
        "  Stable Version:       <none>",
        "  Canary Version:       <none>",
        "  Canary Placement:     <none>",
        "  Canary Clusters:      <none>",
        "  Stable Revision:      <none>",
        "  Canary Revision:      <none>",
        "  Observed Generation:  0 (generation 3)",
        "  Paused Since:         <none>",
    ]
    assert not any("→" in line or "(current)" in line for line in lines)
    assert lines[-3:] == ["Analysis Runs:  <none>", "Conditions:  <none>", "Events:  <none>"]
    bare = {"apiVersion": "tmc.kcp.io/v1alpha1", "kind": "CanaryRollout", "metadata": {"name": "x"}, "spec": {}}
    lines = _lines(describe_canary(bare, RecentEvents([]), NOW))
    assert "Steps:  <none>" in lines and "Background Analysis:  <none>" in lines
    assert "  Workload:             <none>" in lines and "  Traffic Route:        <none>" in lines


@pytest.mark.parametrize(
    ("status", "want"),
    [
        ({"phase": "Progressing", "currentWeight": 20, "appliedWeight": 20}, "20%"),
        ({"phase": "Progressing", "currentWeight": 20, "appliedWeight": 10}, "10% (20% set, not yet applied)"),
        ({"phase": "RolledBack", "currentWeight": 0, "appliedWeight": 0}, "0%"),
        ({"phase": "Progressing", "currentWeight": 20}, "<unknown> (the router has not reported)"),
        ({"phase": "Pending"}, "<none>"),
    ],
)
def test_applied_weight_against_the_weight_set(status: dict[str, Any], want: str) -> None:
    obj = {**copy.deepcopy(RICH), "status": status}
    lines = _section(_lines(describe_canary(obj, RecentEvents([]), NOW)), "Status:")
    assert f"  Applied Weight:       {want}" in lines


def test_events_unavailable_says_why() -> None:
    text = describe_canary(RICH, RecentEvents([], problem="events are read over NATS: set --nats-url"), NOW)
    assert text.splitlines()[-1] == "Events:  <unknown> (events are read over NATS: set --nats-url)"


@pytest.mark.parametrize(
    ("step", "text"),
    [
        ({"setClusters": {"count": 3}}, "setClusters: 3 clusters"),
        ({"setClusters": {"percent": 25}}, "setClusters: 25% of eligible clusters"),
        ({"setWeight": 0}, "setWeight: 0%"),
        ({"pause": {"duration": 300.0}}, "pause: 5m"),
        ({"pause": {"duration": 0.5}}, "pause: 0.5s"),
        ({"pause": {}}, "pause: until promoted"),
        ({"analysis": {"templates": ["error-rate"]}}, "analysis: error-rate (each metric's interval and count)"),
        ({"analysis": {"templates": ["e"], "interval": 30}}, "analysis: e every 30s"),
        (
            {"analysis": {"templates": ["a"], "intervals": 3, "interval": 90, "args": {"z": "1", "b": "2"}}},
            "analysis: a, 3 intervals every 90s, args b=2,z=1",
        ),
        ({}, "(no action)"),
    ],
)
def test_step_text(step: dict[str, Any], text: str) -> None:
    assert step_text(step) == text


def test_evidence_value() -> None:
    assert evidence_value("mann-whitney") == "mann-whitney"
    assert evidence_value(0.41) == "0.41"
    assert evidence_value(True) == "true"
    assert evidence_value({"b": [1, {"d": 2, "c": 3}], "a": None}) == '{"a":null,"b":[1,{"c":3,"d":2}]}'
    assert evidence_value("") == '""' and evidence_value("two\nlines") == '"two\\nlines"'


# --- against a real tmcd ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tmcd(nats_server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tmcd]:
    """A NATS server and a tmcd (metrics agent only, so stored statuses stay) in a background thread."""
    with tmcd_in_thread(nats_server_bin, tmp_path_factory.mktemp("describe-canary")) as t:
        yield t


def _stored(name: str) -> dict[str, Any]:
    """RICH as a create body: the server sets resourceVersion, creationTimestamp and generation."""
    obj = copy.deepcopy(RICH)
    obj["metadata"] = {"name": name, "namespace": "shop", "labels": {"app": "checkout"}}
    return obj


def test_describe_canary_kind_names_and_events(tmcd: Tmcd) -> None:
    tmcd.create("canaryrollouts", _stored("web"), "shop")
    tmcd.create("canaryrollouts", _stored("other"), "shop")
    now = time.time()
    tmcd.publish(
        canary_event("shop", "web"),
        CanaryEvent(namespace="shop", name="web", timestamp=now, type="step", phase="Progressing", step_index=2),
    )
    tmcd.publish(
        canary_event("shop", "other"),
        CanaryEvent(namespace="shop", name="other", timestamp=now, type="phase", message="not about web"),
    )
    tmcd.publish(
        rollback_event("shop", "web"),
        RollbackEvent(namespace="shop", name="web", timestamp=now, stage="started", reason="analysis failed"),
    )
    outputs = []
    for kind in ("canary", "canaries", "cr", "CanaryRollout", "canaryrollouts", "canaryrollouts.tmc.kcp.io"):
        r = kubectl_tmc(tmcd.nats_url, "describe", kind, "web", "-n", "shop")
        assert r.exit_code == 0, (r.output, r.stderr)
        outputs.append(r.stdout)
    stable = ("Spec:", "Status:", "Steps:")  # no ages in these: the same for every spelling of the kind
    for o in outputs[1:]:
        assert [_section(o.splitlines(), s) for s in stable] == [_section(outputs[0].splitlines(), s) for s in stable]
    lines = outputs[0].splitlines()
    assert lines[:2] == ["Name:               web", "Namespace:          shop"]
    assert "  → 3  analysis: error-rate,latency, 5 intervals every 30s  (current)" in lines
    assert '          threshold:  {"max":0.01}' in lines
    ev = _section(lines, "Events:")
    assert [row.split(maxsplit=4)[:2] + row.split(maxsplit=4)[3:] for row in ev[2:]] == [
        ["Normal", "StepChanged", "canary-controller", "phase Progressing, step 3"],
        ["Warning", "RollbackStarted", "rollback-engine", "analysis failed"],
    ]
    assert "not about web" not in outputs[0]


def test_describe_canary_empty_status_and_several_names(tmcd: Tmcd) -> None:
    tmcd.create("canaryrollouts", new_object("CanaryRollout", name="fresh", namespace="shop"), "shop")
    r = kubectl_tmc(tmcd.nats_url, "describe", "cr", "fresh", "-n", "shop")
    assert r.exit_code == 0, (r.output, r.stderr)
    lines = r.stdout.splitlines()
    assert "  Phase:                Pending" in lines and "  Canary Clusters:      <none>" in lines
    assert lines[-3:] == ["Analysis Runs:  <none>", "Conditions:  <none>", "Events:  <none>"]
    two = kubectl_tmc(tmcd.nats_url, "describe", "cr", "fresh", "fresh", "-n", "shop").stdout
    assert two == r.stdout + "\n" + r.stdout


def test_describe_canary_not_found(tmcd: Tmcd) -> None:
    r = kubectl_tmc(tmcd.nats_url, "describe", "canary", "missing", "-n", "shop")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.startswith("Error from server (NotFound):") and len(r.stderr.splitlines()) == 1
    r = kubectl_tmc(tmcd.nats_url, "describe", "canary", "fresh")  # namespace default
    assert r.exit_code == 1 and r.stderr.startswith("Error from server (NotFound):")


def test_describe_canary_over_http_has_no_events(tmcd: Tmcd) -> None:
    tmcd.create("canaryrollouts", _stored("http"), "shop")
    r = CliRunner().invoke(
        cli, ["describe", "canary", "http", "-n", "shop", "--server", tmcd.http_url], env={"TMC_NATS_URL": ""}
    )
    assert r.exit_code == 0, (r.output, r.stderr)
    assert r.stdout.splitlines()[-1] == "Events:  <unknown> (events are read over NATS: set --nats-url)"


def test_describe_help_and_kind_completion() -> None:
    r = CliRunner().invoke(cli, ["describe", "-h"], prog_name="kubectl tmc")
    assert r.exit_code == 0 and "kubectl tmc describe canary checkout -n shop" in r.stdout
    assert "cluster|placement|canary" in r.stdout
    r = CliRunner().invoke(
        cli,
        [],
        prog_name="kubectl-tmc",
        env={"_KUBECTL_TMC_COMPLETE": "bash_complete", "COMP_WORDS": "kubectl-tmc describe ca", "COMP_CWORD": "2"},
    )
    assert r.stdout.split() == ["plain,canary"]
    r = CliRunner().invoke(cli, ["describe", "deployment", "x"], prog_name="kubectl tmc")
    assert r.exit_code == 2 and "SyncTarget, Placement, CanaryRollout" in r.stderr


# --- a real subprocess ----------------------------------------------------------------------


def test_subprocess_apply_then_describe_canary(tmcd: Tmcd, tmp_path: Path) -> None:
    f = tmp_path / "rollout.yaml"
    f.write_text(yaml.safe_dump(_stored("sub")))
    p = subprocess.run(
        [KUBECTL_TMC, "apply", "-f", str(f), "--nats-url", tmcd.nats_url], capture_output=True, text=True
    )
    assert p.returncode == 0 and p.stdout == "canaryrollout.tmc.kcp.io/sub created\n", p.stderr
    # a create stores no status: the canary controller writes it, through the status subresource
    stored = tmcd.request("tmc.api.get.canaryrollouts", json.dumps({"namespace": "shop", "name": "sub"}).encode())
    assert stored["status"].get("phase", "Pending") == "Pending"
    req = {"namespace": "shop", "name": "sub", "object": {**stored, "status": RICH["status"]}}
    tmcd.request("tmc.api.replacestatus.canaryrollouts", json.dumps(req).encode())
    tmcd.publish(
        canary_event("shop", "sub"),
        CanaryEvent(namespace="shop", name="sub", timestamp=time.time(), type="decision", message="promote"),
    )
    p = subprocess.run(
        [KUBECTL_TMC, "describe", "canary", "sub", "-n", "shop", "--nats-url", tmcd.nats_url],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and p.stderr == "", p.stderr
    lines = p.stdout.splitlines()
    assert lines[:2] == ["Name:               sub", "Namespace:          shop"]
    assert "  Phase:                Progressing" in lines and "  Current Weight:       10%" in lines
    assert "  → 3  analysis: error-rate,latency, 5 intervals every 30s  (current)" in lines
    assert "          pValue:         0.41" in lines
    assert "  Applied Weight:       5% (10% set, not yet applied)" in lines
    assert "  Canary Placement:     checkout-canary" in lines
    assert any(line.startswith("  Step Started:         2025-01-15T10:05:00Z (") for line in lines)
    assert lines[-1].split(maxsplit=4)[:2] == ["Normal", "Decision"] and lines[-1].endswith("promote")
    p = subprocess.run(
        [KUBECTL_TMC, "describe", "canary", "nope", "-n", "shop", "--nats-url", tmcd.nats_url],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1 and p.stdout == "" and len(p.stderr.splitlines()) == 1
    assert p.stderr.startswith("Error from server (NotFound):")


def test_subprocess_get_canaries_wide(tmcd: Tmcd) -> None:
    tmcd.create("canaryrollouts", _stored("wide"), "shop")
    p = subprocess.run(
        [KUBECTL_TMC, "get", "canaries", "wide", "-n", "shop", "-o", "wide", "--nats-url", tmcd.nats_url],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and p.stderr == "", p.stderr
    head, row = (line.split() for line in p.stdout.splitlines())
    assert head == ["NAME", "PHASE", "STEP", "WEIGHT", "AGE", "APPLIED", "CLUSTERS", "STABLE", "CANARY"]
    assert row[:4] + row[5:] == [
        "wide",
        "Progressing",
        "3/6",
        "10",
        "5",
        "sim-001,sim-002",
        "ghcr.io/acme/checkout:1.4.2",
        "ghcr.io/acme/checkout:1.5.0",
    ]
