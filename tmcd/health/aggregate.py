"""Aggregation cluster -> location -> fleet (pure).

A group's status follows its clusters: Unknown when no cluster in it is known;
Unhealthy when at least half of the known clusters are Unhealthy; Degraded when any
known cluster is Degraded or Unhealthy; otherwise Healthy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tmcd.contracts.messages import ClusterHealthSummary, HealthNode, HealthReport

STATUSES = ("Healthy", "Degraded", "Unhealthy", "Unknown")
UNLABELLED = "unknown"


@dataclass(frozen=True)
class ClusterView:
    """What aggregation needs of one cluster."""

    name: str
    status: str
    location: str
    reason: str = ""
    failing: tuple[str, ...] = ()
    since: float = 0.0
    last_heartbeat: float = 0.0


def group_status(counts: dict[str, int]) -> str:
    """The status of a group from its counts per status."""
    known = counts.get("Healthy", 0) + counts.get("Degraded", 0) + counts.get("Unhealthy", 0)
    if known == 0:
        return "Unknown"
    unhealthy = counts.get("Unhealthy", 0)
    if unhealthy * 2 >= known:
        return "Unhealthy"
    if unhealthy or counts.get("Degraded", 0):
        return "Degraded"
    return "Healthy"


def count(statuses: Iterable[str]) -> dict[str, int]:
    """Clusters per status, every status present (0 when none)."""
    out = dict.fromkeys(STATUSES, 0)
    for st in statuses:
        out[st] = out.get(st, 0) + 1
    return out


def report(
    clusters: Iterable[ClusterView],
    *,
    now: float,
    location_label: str,
    only_location: str = "",
    include_clusters: bool = True,
) -> HealthReport:
    """The health tree of the given clusters."""
    views = list(clusters)
    by_location: dict[str, list[ClusterView]] = {}
    for v in views:
        by_location.setdefault(v.location or UNLABELLED, []).append(v)
    locations = []
    for name in sorted(by_location):
        if only_location and name != only_location:
            continue
        members = sorted(by_location[name], key=lambda v: v.name)
        counts = count(v.status for v in members)
        summaries = (
            [
                ClusterHealthSummary(
                    name=v.name,
                    status=v.status,  # type: ignore[arg-type]
                    reason=v.reason,
                    failing=list(v.failing),
                    since=v.since,
                    last_heartbeat=v.last_heartbeat,
                )
                for v in members
            ]
            if include_clusters
            else []
        )
        locations.append(HealthNode(name=name, status=group_status(counts), counts=counts, clusters=summaries))  # type: ignore[arg-type]
    fleet_counts = count(v.status for v in views)
    fleet = HealthNode(name="fleet", status=group_status(fleet_counts), counts=fleet_counts)  # type: ignore[arg-type]
    return HealthReport(timestamp=now, fleet=fleet, location_label=location_label, locations=locations)
