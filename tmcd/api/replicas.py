"""Who runs and who leads: the replicas' presence records and the leases, read from the
``tmc-leases`` KV bucket (``GET /api/v1/replicas``, ``tmc.api.get.replicas``).  Any replica
answers the same: it reads the shared bucket, not its own memory."""

from __future__ import annotations

from tmcd.api import errors
from tmcd.bus import Bus, BusError
from tmcd.contracts.lease import Lease, ReplicaInfo, ReplicaReport, lease_prefix, replica_prefix

DEFAULT_TTL = 15.0
"""Seconds a record without its own ttl counts as live."""


async def replica_report(bus: Bus, prefix: str, now: float, *, election: bool = True) -> ReplicaReport:
    """The live replicas of the deployment with durable prefix ``prefix``, and each agent's leader."""
    try:
        replicas, _ = await (await bus.kv("leases", ReplicaInfo)).snapshot(replica_prefix(prefix) + ">")
        leases, _ = await (await bus.kv("leases", Lease)).snapshot(lease_prefix(prefix) + ">")
    except BusError as exc:
        raise errors.ApiError(503, "ServiceUnavailable", f"cannot read the leases bucket: {exc}") from exc
    live = sorted(
        (e.value for e in replicas if now - e.value.renew_time < (e.value.ttl or DEFAULT_TTL)),
        key=lambda r: r.identity,
    )
    leaders = {e.key.rpartition(".")[2]: e.value.holder for e in leases if now < e.value.renew_time + e.value.ttl}
    return ReplicaReport(replicas=live, leaders=dict(sorted(leaders.items())), election=election)
