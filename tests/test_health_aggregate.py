"""Aggregation cluster -> location -> fleet (pure)."""

from __future__ import annotations

import pytest

from tmcd.health.aggregate import ClusterView, count, group_status, report


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "Unknown"),
        (["Unknown", "Unknown"], "Unknown"),
        (["Healthy", "Healthy", "Unknown"], "Healthy"),
        (["Healthy", "Degraded"], "Degraded"),
        (["Healthy", "Healthy", "Unhealthy"], "Degraded"),
        (["Healthy", "Unhealthy"], "Unhealthy"),  # half of the known clusters
        (["Unhealthy", "Unhealthy", "Healthy", "Unknown"], "Unhealthy"),
    ],
)
def test_group_status(statuses: list[str], expected: str) -> None:
    assert group_status(count(statuses)) == expected


def test_report_groups_by_location_label_and_counts() -> None:
    views = [
        ClusterView("c-1", "Healthy", "eu"),
        ClusterView("c-2", "Unhealthy", "eu", reason="HeartbeatMissed", failing=("HeartbeatHealthy",)),
        ClusterView("c-3", "Healthy", "us"),
        ClusterView("c-4", "Unknown", ""),
    ]
    rep = report(views, now=5.0, location_label="region")
    assert [n.name for n in rep.locations] == ["eu", "unknown", "us"]
    eu = rep.locations[0]
    assert eu.status == "Unhealthy" and eu.counts["Unhealthy"] == 1 and [c.name for c in eu.clusters] == ["c-1", "c-2"]
    assert eu.clusters[1].failing == ["HeartbeatHealthy"]
    assert rep.fleet.counts == {"Healthy": 2, "Degraded": 0, "Unhealthy": 1, "Unknown": 1}
    assert rep.fleet.status == "Degraded"
    only = report(views, now=5.0, location_label="region", only_location="us", include_clusters=False)
    assert [n.name for n in only.locations] == ["us"] and only.locations[0].clusters == []
    assert only.fleet.counts["Healthy"] == 2  # the fleet is always the whole fleet
