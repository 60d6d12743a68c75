"""Idempotent provisioning of tmcd's JetStream streams and KV buckets.

Running it twice changes nothing; changing a retention limit in the config updates the
existing stream in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nats.js import api
from nats.js.errors import NotFoundError

from tmcd.config import Config, StreamLimits
from tmcd.contracts.subjects import STREAM_MAX_MSGS_PER_SUBJECT, STREAM_SUBJECTS

log = logging.getLogger("tmcd.bus")

KV_BUCKETS: dict[str, str] = {
    "clusters": "tmc-clusters",
    "placements": "tmc-placements",
    "canaries": "tmc-canaries",
    "analysistemplates": "tmc-analysistemplates",
    "revisions": "tmc-revisions",
    "leases": "tmc-leases",
}
"""Logical KV name -> bucket name."""

_STREAM_SECTION = {
    "TMC_SYNCER": "syncer",
    "TMC_PLACEMENT": "placement",
    "TMC_WORKLOAD": "workload",
    "TMC_EVENTS": "events",
    "TMC_DEAD": "dead",
    "TMC_TRAFFIC": "traffic",
}


@dataclass(frozen=True)
class StreamSpec:
    """What a stream should look like."""

    name: str
    subjects: tuple[str, ...]
    max_age: float
    max_bytes: int
    replicas: int
    storage: str
    duplicate_window: float = 120.0
    max_msgs_per_subject: int = -1
    """Messages kept per subject; -1 is unlimited (TMC_TRAFFIC keeps the last one: a desired state)."""

    def config(self) -> api.StreamConfig:
        """The nats-py StreamConfig."""
        return api.StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            max_age=self.max_age,
            max_bytes=self.max_bytes,
            num_replicas=self.replicas,
            storage=api.StorageType.FILE if self.storage == "file" else api.StorageType.MEMORY,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_msgs_per_subject=self.max_msgs_per_subject,
            # JetStream refuses a window longer than the stream keeps messages
            duplicate_window=min(self.duplicate_window, self.max_age) if self.max_age > 0 else self.duplicate_window,
        )


def stream_specs(cfg: Config) -> list[StreamSpec]:
    """The streams this config asks for."""
    specs = []
    for name, subjects in STREAM_SUBJECTS.items():
        limits: StreamLimits = getattr(cfg.streams, _STREAM_SECTION[name])
        specs.append(
            StreamSpec(
                name,
                subjects,
                limits.max_age,
                limits.max_bytes,
                limits.replicas,
                limits.storage,
                limits.duplicate_window,
                STREAM_MAX_MSGS_PER_SUBJECT.get(name, -1),
            )
        )
    return specs


def _differs(have: api.StreamConfig, want: api.StreamConfig) -> list[str]:
    diffs = []
    if sorted(have.subjects or []) != sorted(want.subjects or []):
        diffs.append("subjects")
    if abs((have.max_age or 0) - (want.max_age or 0)) > 1e-6:
        diffs.append("max_age")
    if (have.max_bytes or -1) != (want.max_bytes or -1):
        diffs.append("max_bytes")
    if (have.num_replicas or 1) != (want.num_replicas or 1):
        diffs.append("replicas")
    if abs((have.duplicate_window or 0) - (want.duplicate_window or 0)) > 1e-6:
        diffs.append("duplicate_window")
    if (have.max_msgs_per_subject or -1) != (want.max_msgs_per_subject or -1):
        diffs.append("max_msgs_per_subject")
    return diffs


async def ensure_stream(js: Any, spec: StreamSpec) -> str:
    """Create or update one stream; returns 'created', 'updated' or 'unchanged'."""
    want = spec.config()
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(want)
        log.info("created stream %s (%s)", spec.name, ", ".join(spec.subjects))
        return "created"
    diffs = _differs(info.config, want)
    if not diffs:
        return "unchanged"
    if info.config.storage is not None and info.config.storage != want.storage:
        log.warning("stream %s: storage type cannot change in place; keeping %s", spec.name, info.config.storage)
    want.storage = info.config.storage
    await js.update_stream(want)
    log.info("updated stream %s: %s", spec.name, ", ".join(diffs))
    return "updated"


async def ensure_kv(js: Any, bucket: str, history: int, replicas: int, ttl: float | None = None) -> str:
    """Create a KV bucket or update its limits; returns 'created', 'updated' or 'unchanged'."""
    stream_name = f"KV_{bucket}"
    try:
        info = await js.stream_info(stream_name)
    except NotFoundError:
        await js.create_key_value(api.KeyValueConfig(bucket=bucket, history=history, replicas=replicas, ttl=ttl))
        log.info("created KV bucket %s", bucket)
        return "created"
    have = info.config
    if (
        have.max_msgs_per_subject == history
        and (have.num_replicas or 1) == replicas
        and (abs((have.max_age or 0) - (ttl or 0)) < 1e-6)
    ):
        return "unchanged"
    have.max_msgs_per_subject = history
    have.num_replicas = replicas
    have.max_age = ttl or 0
    await js.update_stream(have)
    log.info("updated KV bucket %s", bucket)
    return "updated"


async def provision(js: Any, cfg: Config) -> dict[str, str]:
    """Ensure every stream and KV bucket exists with the configured limits."""
    result: dict[str, str] = {}
    for spec in stream_specs(cfg):
        result[spec.name] = await ensure_stream(js, spec)
    for logical, bucket in KV_BUCKETS.items():
        ttl = cfg.leader.lease_ttl if logical == "leases" else None
        result[bucket] = await ensure_kv(js, bucket, cfg.kv.history, cfg.kv.replicas, ttl)
    return result
