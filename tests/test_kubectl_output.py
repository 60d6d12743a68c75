"""kubectl tmc printers: kubectl's ages at every boundary, table/none/wide/json/yaml/name."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tmcd.kubectl import columns
from tmcd.kubectl.kinds import CLI_KINDS, resolve
from tmcd.kubectl.output import age, cell, human_duration, parse_time, render, table
from tmcd.resources.kinds import KINDS

M, H, D, Y = 60, 3600, 86400, 365 * 86400


@pytest.mark.parametrize(
    ("seconds", "want"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (-0.5, "0s"),
        (0, "0s"),
        (95, "95s"),
        (119, "119s"),
        (120, "2m"),
        (121, "2m1s"),
        (302, "5m2s"),
        (599, "9m59s"),
        (600, "10m"),
        (47 * M + 30, "47m"),
        (3 * H - 1, "179m"),
        (3 * H, "3h"),
        (5 * H + 3 * M + 59, "5h3m"),
        (8 * H - 1, "7h59m"),
        (8 * H, "8h"),
        (48 * H - 1, "47h"),
        (48 * H, "2d"),
        (3 * D + 4 * H + 59, "3d4h"),
        (8 * D - 1, "7d23h"),
        (8 * D, "8d"),
        (2 * Y - 1, "729d"),
        (2 * Y, "2y"),
        (2 * Y + 10 * D, "2y10d"),
        (8 * Y - 1, "7y364d"),
        (8 * Y, "8y"),
        (20 * Y, "20y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, want: str) -> None:
    assert human_duration(seconds) == want


def test_age_and_timestamps() -> None:
    now = parse_time("2025-01-15T10:05:02Z")
    assert now is not None
    assert age("2025-01-15T10:00:00Z", now) == "5m2s"
    assert age("2025-01-15T10:00:00.123456Z", now) == "5m2s"
    assert age("", now) == "<unknown>"
    assert age("yesterday", now) == "<unknown>"
    assert parse_time("1970-01-01T00:00:00Z") == 0.0


def test_cells_and_table() -> None:
    assert [cell(v) for v in (None, "", [], {}, True, False, 3, 0.5, ["a", "b"])] == [
        "<none>",
        "<none>",
        "<none>",
        "<none>",
        "true",
        "false",
        "3",
        "0.5",
        "a,b",
    ]
    out = table(["name", "status"], [["a", "Healthy"], ["longer-name", "<none>"]])
    assert out.splitlines() == ["NAME          STATUS", "a             Healthy", "longer-name   <none>"]


CLUSTER = {
    "apiVersion": "workload.kcp.io/v1alpha1",
    "kind": "SyncTarget",
    "metadata": {"name": "c1", "labels": {"region": "eu"}, "creationTimestamp": "2025-01-15T10:00:00Z"},
    "status": {
        "health": "Healthy",
        "queueDepth": 3,
        "syncPaused": False,
        "lastSyncerHeartbeatTime": "2025-01-15T10:04:25Z",
        "capacity": {"cpu": "128", "memory": "549755813888"},
    },
}
NOW = 1736935502.0  # 2025-01-15T10:05:02Z


def test_render_table_and_wide() -> None:
    kind = resolve("cl")
    assert kind is not None
    out = render(kind, [CLUSTER], "table", columns.CLUSTERS, columns.CLUSTERS_WIDE, now=NOW)
    head, row = out.splitlines()
    assert head.split() == ["NAME", "STATUS", "REGION", "PAUSED", "QUEUE", "LAST", "HEARTBEAT", "AGE"]
    assert row.split() == ["c1", "Healthy", "eu", "false", "3", "37s", "5m2s"]
    wide = render(kind, [CLUSTER], "wide", columns.CLUSTERS, columns.CLUSTERS_WIDE, now=NOW).splitlines()
    assert wide[0].split()[-5:] == ["ZONE", "PROVIDER", "CPU", "MEMORY", "VERSION"]
    assert wide[1].split()[-5:] == ["<none>", "<none>", "128", "512Gi", "<none>"]


def test_render_namespace_column() -> None:
    kind = resolve("canaries")
    assert kind is not None
    obj = {"metadata": {"name": "co", "namespace": "shop"}, "spec": {"steps": [{}, {}]}, "status": {"phase": "Paused"}}
    out = render(kind, [obj], "table", columns.CANARIES, with_namespace=True, now=NOW).splitlines()
    assert out[0].split() == ["NAMESPACE", "NAME", "PHASE", "STEP", "WEIGHT", "AGE"]
    assert out[1].split() == ["shop", "co", "Paused", "1/2", "0", "<unknown>"]


def test_render_canaries_wide() -> None:
    """WEIGHT is the weight set; -o wide adds the one the router applied, the canary clusters and
    the versions (the spec's until the controller has written them)."""
    kind = resolve("canaries")
    assert kind is not None
    spec = {"steps": [{}, {}, {}], "stableVersion": "1.4", "canaryVersion": "1.5"}
    running = {
        "metadata": {"name": "co", "creationTimestamp": "2025-01-15T10:00:00Z"},
        "spec": spec,
        "status": {
            "phase": "Progressing",
            "currentStepIndex": 1,
            "currentWeight": 20,
            "appliedWeight": 10,
            "canaryClusters": ["sim-001", "sim-002"],
            "stableVersion": "1.3",
            "canaryVersion": "1.4",
        },
    }
    fresh = {"metadata": {"name": "new", "creationTimestamp": "2025-01-15T10:05:00Z"}, "spec": spec, "status": {}}
    out = render(kind, [running, fresh], "table", columns.CANARIES, columns.CANARIES_WIDE, now=NOW).splitlines()
    assert [line.split() for line in out] == [
        ["NAME", "PHASE", "STEP", "WEIGHT", "AGE"],
        ["co", "Progressing", "2/3", "20", "5m2s"],
        ["new", "<none>", "0/3", "0", "2s"],
    ]
    out = render(kind, [running, fresh], "wide", columns.CANARIES, columns.CANARIES_WIDE, now=NOW).splitlines()
    assert [line.split() for line in out] == [
        ["NAME", "PHASE", "STEP", "WEIGHT", "AGE", "APPLIED", "CLUSTERS", "STABLE", "CANARY"],
        ["co", "Progressing", "2/3", "20", "5m2s", "10", "sim-001,sim-002", "1.3", "1.4"],
        ["new", "<none>", "0/3", "0", "2s", "<none>", "<none>", "1.4", "1.5"],
    ]


@pytest.mark.parametrize(
    ("status", "want"),
    [
        ({}, "0/7"),
        ({"phase": "Pending", "currentStepIndex": 0}, "0/7"),
        ({"phase": "Progressing", "currentStepIndex": 0}, "1/7"),
        ({"phase": "Progressing", "currentStepIndex": 2}, "3/7"),
        ({"phase": "Paused", "currentStepIndex": 6}, "7/7"),
        ({"phase": "Progressing", "currentStepIndex": 7}, "7/7"),
        ({"phase": "Succeeded", "currentStepIndex": 7}, "7/7"),
        ({"phase": "Degraded", "currentStepIndex": 4}, "5/7"),
    ],
)
def test_canary_step_is_one_based(status: dict[str, Any], want: str) -> None:
    assert columns.step_label(status, 7) == want


def test_step_column_describe_and_status_message_agree() -> None:
    """The example rollout's message says "step 3/7" at index 2: the STEP column and describe too."""
    import msgspec

    from tmcd.kubectl.describe_canary import describe_canary
    from tmcd.kubectl.events import RecentEvents
    from tmcd.resources.examples import example

    obj = msgspec.to_builtins(example("CanaryRollout"))
    kind = resolve("cr")
    assert kind is not None
    step = render(kind, [obj], "table", columns.CANARIES, now=NOW).splitlines()[1].split()[2]
    assert obj["status"]["message"].startswith(f"step {step}:")
    text = describe_canary(obj, RecentEvents([]), NOW)
    assert f"  Step:                 {step}" in text.splitlines()
    number = step.split("/")[0]
    assert any(line.startswith(f"  → {number}  ") for line in text.splitlines())


def test_render_json_yaml_name() -> None:
    kind = resolve("clusters")
    assert kind is not None
    single = json.loads(render(kind, [CLUSTER], "json", [], single=True))
    assert single == CLUSTER
    lst = json.loads(render(kind, [CLUSTER, CLUSTER], "json", []))
    assert lst["kind"] == "List" and lst["apiVersion"] == "v1" and lst["items"] == [CLUSTER, CLUSTER]
    y = yaml.safe_load(render(kind, [CLUSTER], "yaml", []))
    assert y["kind"] == "List" and y["items"] == [CLUSTER]
    assert yaml.safe_load(render(kind, [CLUSTER], "yaml", [], single=True)) == CLUSTER
    assert render(kind, [CLUSTER], "name", []) == "synctarget.workload.kcp.io/c1"


def test_cli_kinds_match_resource_kinds() -> None:
    assert [(k.kind, k.plural, k.singular, k.api_version, k.namespaced) for k in CLI_KINDS] == [
        (k.kind, k.plural, k.singular, k.api_version, k.namespaced) for k in KINDS
    ]
    for k in KINDS:
        for name in (k.kind, k.plural, k.singular, *k.short_names):
            hit = resolve(name)
            assert hit is not None and hit.kind == k.kind
    for alias, kind in [("canaries", "CanaryRollout"), ("cr", "CanaryRollout"), ("revisions", "RolloutRevision")]:
        hit = resolve(alias)
        assert hit is not None and hit.kind == kind
    assert resolve("nope") is None
