"""What tmcd replicas keep in the ``tmc-leases`` KV bucket: one lease per leader-only agent and
one presence record per running replica.

Keys: ``<durable_prefix>.lease.<agent>`` and ``<durable_prefix>.replica.<identity>``; a
deployment's replicas share the durable prefix (see ``consumer.durable_prefix``), so two
deployments on one NATS account elect their leaders apart.  The bucket's entries expire
``leader.lease_ttl`` seconds after their last write, so a replica that is gone leaves no
record behind.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = [
    "REPLICA_REPORT_EXAMPLE",
    "Lease",
    "ReplicaInfo",
    "ReplicaReport",
    "kv_token",
    "lease_key",
    "lease_prefix",
    "replica_key",
    "replica_prefix",
]


class Lease(msgspec.Struct, kw_only=True, rename="camel"):
    """A leader lease: who leads one agent and until when, unless renewed."""

    holder: Annotated[str, Meta(min_length=1, description="The identity of the replica that holds the lease.")]
    instance: Annotated[str, Meta(description="A random id of the holder's process (tells restarts apart).")] = ""
    acquire_time: Annotated[float, Meta(description="Unix time the holder acquired the lease.")]
    renew_time: Annotated[float, Meta(description="Unix time of the holder's last renewal.")]
    ttl: Annotated[float, Meta(gt=0, description="Seconds after renew_time the lease expires.")]
    transitions: Annotated[int, Meta(ge=0, description="How many times the lease changed holder.")] = 0


class ReplicaInfo(msgspec.Struct, kw_only=True, rename="camel"):
    """A running tmcd replica, renewed with its leases."""

    identity: Annotated[str, Meta(min_length=1, description="The replica's identity (leader.identity).")]
    version: Annotated[str, Meta(description="The tmcd version it runs.")] = ""
    start_time: Annotated[float, Meta(description="Unix time the replica started.")]
    renew_time: Annotated[float, Meta(description="Unix time of its last renewal.")]
    leads: Annotated[list[str], Meta(description="The agents it leads now.")] = msgspec.field(default_factory=list)
    agents: Annotated[list[str], Meta(description="The agents it runs.")] = msgspec.field(default_factory=list)
    ttl: Annotated[float, Meta(ge=0, description="Seconds after renew_time the record counts as gone.")] = 0.0


_UNSAFE = re.compile(r"[^-A-Za-z0-9_=]")


def kv_token(name: str) -> str:
    """``name`` as one KV key token: characters KV keys refuse (and dots) become ``_``."""
    return _UNSAFE.sub("_", name) or "_"


def lease_key(prefix: str, agent: str) -> str:
    """The key of ``agent``'s lease."""
    return f"{kv_token(prefix)}.lease.{kv_token(agent)}"


def lease_prefix(prefix: str) -> str:
    """The key prefix of the deployment's leases (``<prefix>.lease.``)."""
    return f"{kv_token(prefix)}.lease."


def replica_prefix(prefix: str) -> str:
    """The key prefix of the deployment's presence records (``<prefix>.replica.``)."""
    return f"{kv_token(prefix)}.replica."


def replica_key(prefix: str, identity: str) -> str:
    """The key of one replica's presence record."""
    return replica_prefix(prefix) + kv_token(identity)


class ReplicaReport(msgspec.Struct, kw_only=True, rename="camel"):
    """The deployment's replicas and which one leads each agent (``GET /api/v1/replicas``,
    ``tmc.api.get.replicas``)."""

    replicas: Annotated[list[ReplicaInfo], Meta(description="Live replicas, by identity.")] = msgspec.field(
        default_factory=list
    )
    leaders: Annotated[dict[str, str], Meta(description="Agent -> the identity holding its lease.")] = msgspec.field(
        default_factory=dict
    )
    election: Annotated[bool, Meta(description="False when leader election is off (leader.enabled).")] = True


REPLICA_REPORT_EXAMPLE = ReplicaReport(
    replicas=[
        ReplicaInfo(
            identity="tmcd-0",
            version="0.1.0",
            start_time=1736935200.0,
            renew_time=1736935470.0,
            leads=["canary", "health", "placement", "rollback"],
            agents=["metrics", "health", "placement", "canary", "rollback"],
            ttl=15.0,
        ),
        ReplicaInfo(
            identity="tmcd-1",
            version="0.1.0",
            start_time=1736935260.0,
            renew_time=1736935468.0,
            agents=["metrics", "health", "placement", "canary", "rollback"],
            ttl=15.0,
        ),
    ],
    leaders={"canary": "tmcd-0", "health": "tmcd-0", "placement": "tmcd-0", "rollback": "tmcd-0"},
)
"""A two-replica deployment (the API reference's example)."""
