"""Subject builders and parsers: the one place that knows how tmc.* subjects are spelled.

Every channel of the contract is a :class:`Channel`: a subject template, the message it
carries, and the JetStream stream that stores it (if any).  Builders validate every name
before it becomes a token; :func:`parse_subject` maps a received subject back to its
channel and parameters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from tmcd.contracts import messages as m
from tmcd.contracts.names import InvalidNameError, validate_name

PREFIX = "tmc"
DEAD_PREFIX = "tmc.dead"


@dataclass(frozen=True)
class Channel:
    """One family of subjects that carries one message type."""

    id: str
    """Stable identifier, e.g. ``syncer.heartbeat``; also the AsyncAPI channel id."""
    template: str
    """Subject with ``{param}`` placeholders, e.g. ``tmc.syncer.{cluster}.heartbeat``."""
    message: type[m.Message]
    """Payload type."""
    description: str
    stream: str | None = None
    """JetStream stream that stores it; None for core NATS (request/reply)."""
    reply: type[m.Message] | None = None
    """Reply payload type for request/reply channels."""
    publisher: str = ""
    """Who publishes on this channel."""
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Parameters whose value is one of a fixed set (e.g. ``action``)."""
    bind: dict[str, str] = field(default_factory=dict)
    """Parameter -> payload field that must hold the same value."""

    @property
    def tokens(self) -> tuple[str, ...]:
        """The template split on dots."""
        return tuple(self.template.split("."))

    @property
    def params(self) -> tuple[str, ...]:
        """Parameter names in template order."""
        return tuple(t[1:-1] for t in self.tokens if t.startswith("{"))

    @property
    def wildcard(self) -> str:
        """A subscription subject matching every subject of this channel."""
        return ".".join("*" if t.startswith("{") else t for t in self.tokens)

    def build(self, **params: str) -> str:
        """Build a subject, validating every parameter; raises InvalidNameError."""
        out = []
        for tok in self.tokens:
            if tok.startswith("{"):
                name = tok[1:-1]
                if name not in params:
                    raise TypeError(f"{self.id}: missing subject parameter {name!r}")
                out.append(self._check(name, params[name]))
            else:
                out.append(tok)
        return ".".join(out)

    def _check(self, name: str, value: str) -> str:
        allowed = self.enums.get(name)
        if allowed is not None:
            if value not in allowed:
                raise InvalidNameError(name, value, f"must be one of {', '.join(allowed)}")
            return value
        return validate_name(value, name)


STREAM_SYNCER = "TMC_SYNCER"
STREAM_PLACEMENT = "TMC_PLACEMENT"
STREAM_WORKLOAD = "TMC_WORKLOAD"
STREAM_EVENTS = "TMC_EVENTS"
STREAM_DEAD = "TMC_DEAD"
STREAM_TRAFFIC = "TMC_TRAFFIC"

SYNCER_HEARTBEAT = Channel(
    "syncer.heartbeat",
    "tmc.syncer.{cluster}.heartbeat",
    m.SyncerHeartbeat,
    "Periodic heartbeat of a cluster's syncer with capacity and queue depth.",
    stream=STREAM_SYNCER,
    publisher="syncer",
    bind={"cluster": "cluster"},
)
SYNCER_SYNC = Channel(
    "syncer.sync",
    "tmc.syncer.{cluster}.sync",
    m.SyncEvent,
    "One object synced down (spec) or up (status), with latency and outcome.",
    stream=STREAM_SYNCER,
    publisher="syncer",
    bind={"cluster": "cluster"},
)
SYNCER_BATCH = Channel(
    "syncer.batch",
    "tmc.syncer.{cluster}.batch",
    m.SyncEventBatch,
    "Sync events of one cluster flushed together (every 100 ms or every 500 events).",
    stream=STREAM_SYNCER,
    publisher="syncer",
    bind={"cluster": "cluster"},
)
SYNCER_CONN = Channel(
    "syncer.conn",
    "tmc.syncer.{cluster}.conn",
    m.ConnectionEvent,
    "The syncer's connection to the control plane changed.",
    stream=STREAM_SYNCER,
    publisher="syncer",
    bind={"cluster": "cluster"},
)
PLACEMENT_DECISION = Channel(
    "placement.decision",
    "tmc.placement.{placement}.decision",
    m.PlacementDecision,
    "A placement decision with every candidate's score and reason.",
    stream=STREAM_PLACEMENT,
    publisher="scheduler, canary controller",
    bind={"placement": "placement"},
)
WORKLOAD_STATS = Channel(
    "workload.stats",
    "tmc.workload.{cluster}.{namespace}.{workload}.{track}",
    m.WorkloadStats,
    "Request statistics of a workload track on a cluster, one window per message.",
    stream=STREAM_WORKLOAD,
    publisher="service mesh",
    enums={"track": ("stable", "canary")},
    bind={"cluster": "cluster", "namespace": "namespace", "workload": "workload", "track": "track"},
)
HEALTH_CHANGE = Channel(
    "health.change",
    "tmc.health.{kind}.{name}",
    m.HealthChange,
    "A health status transition of a cluster, placement, location, the fleet or a component.",
    stream=STREAM_EVENTS,
    publisher="health agent",
    enums={"kind": ("cluster", "placement", "location", "fleet", "component")},
    bind={"kind": "kind", "name": "name"},
)
CANARY_EVENT = Channel(
    "canary.event",
    "tmc.canary.{namespace}.{name}",
    m.CanaryEvent,
    "A canary rollout phase or step change, analysis result or decision.",
    stream=STREAM_EVENTS,
    publisher="canary controller",
    bind={"namespace": "namespace", "name": "name"},
)
ROLLBACK_EVENT = Channel(
    "rollback.event",
    "tmc.rollback.{namespace}.{name}",
    m.RollbackEvent,
    "Progress of a rollback.",
    stream=STREAM_EVENTS,
    publisher="rollback engine",
    bind={"namespace": "namespace", "name": "name"},
)
TRAFFIC_WEIGHTS = Channel(
    "traffic.weights",
    "tmc.traffic.{namespace}.{route}",
    m.TrafficWeights,
    "Desired traffic weights of a route (its whole desired state), published by the NATS traffic router.",
    stream=STREAM_TRAFFIC,
    publisher="canary controller, rollback engine (NATS traffic router)",
    bind={"namespace": "namespace", "route": "route"},
)
TRAFFIC_APPLIED = Channel(
    "traffic.applied",
    "tmc.traffic.applied.{namespace}.{route}",
    m.TrafficApplied,
    "The weights a data plane applied for a route, reported after each TrafficWeights it applied.",
    stream=STREAM_TRAFFIC,
    publisher="service mesh",
    bind={"namespace": "namespace", "route": "route"},
)
CTL_SYNC = Channel(
    "ctl.sync",
    "tmc.ctl.sync.{cluster}.{action}",
    m.SyncControl,
    "Request/reply: pause, resume or force a full re-sync of a cluster's syncer.",
    reply=m.ControlReply,
    publisher="kubectl tmc, dashboard",
    enums={"action": ("pause", "resume", "force")},
    bind={"cluster": "cluster", "action": "action"},
)
CTL_CANARY = Channel(
    "ctl.canary",
    "tmc.ctl.canary.{namespace}.{name}.{action}",
    m.CanaryControl,
    "Request/reply: promote, abort, pause, resume or retry a canary rollout.",
    reply=m.ControlReply,
    publisher="kubectl tmc, dashboard",
    enums={"action": ("promote", "abort", "pause", "resume", "retry")},
    bind={"namespace": "namespace", "name": "name", "action": "action"},
)
CTL_ROLLBACK = Channel(
    "ctl.rollback",
    "tmc.ctl.rollback.{namespace}.{name}",
    m.RollbackControl,
    "Request/reply: roll a rollout back to a revision (0: the previous stable one), answered by the rollback engine.",
    reply=m.ControlReply,
    publisher="kubectl tmc, dashboard",
    bind={"namespace": "namespace", "name": "name"},
)

API_HEALTH = Channel(
    "api.health",
    "tmc.api.get.health",
    m.HealthQuery,
    "Request/reply: the health tree (cluster -> location -> fleet), answered by the health agent.",
    reply=m.HealthReport,
    publisher="tmcd HTTP API, kubectl tmc, dashboard",
)

CHANNELS: tuple[Channel, ...] = (
    SYNCER_HEARTBEAT,
    SYNCER_SYNC,
    SYNCER_BATCH,
    SYNCER_CONN,
    PLACEMENT_DECISION,
    WORKLOAD_STATS,
    HEALTH_CHANGE,
    CANARY_EVENT,
    ROLLBACK_EVENT,
    TRAFFIC_WEIGHTS,
    TRAFFIC_APPLIED,
    CTL_SYNC,
    CTL_CANARY,
    CTL_ROLLBACK,
    API_HEALTH,
)
"""Every channel of the contract."""

StreamName = Literal["TMC_SYNCER", "TMC_PLACEMENT", "TMC_WORKLOAD", "TMC_EVENTS", "TMC_DEAD", "TMC_TRAFFIC"]

STREAM_SUBJECTS: dict[str, tuple[str, ...]] = {
    STREAM_SYNCER: ("tmc.syncer.>",),
    STREAM_PLACEMENT: ("tmc.placement.>",),
    STREAM_WORKLOAD: ("tmc.workload.>",),
    STREAM_EVENTS: ("tmc.health.>", "tmc.canary.>", "tmc.rollback.>"),
    STREAM_DEAD: ("tmc.dead.>",),
    STREAM_TRAFFIC: ("tmc.traffic.>",),
}
"""The JetStream streams tmcd provisions and the subjects each one stores."""

STREAM_MAX_MSGS_PER_SUBJECT: dict[str, int] = {STREAM_TRAFFIC: 1}
"""Streams that keep only the last messages of each subject (the rest keep up to their limits)."""


@dataclass(frozen=True)
class Route:
    """A received subject resolved to its channel and parameters."""

    channel: Channel
    params: dict[str, str]


def _index() -> dict[tuple[int, tuple[tuple[int, str], ...]], Channel]:
    idx: dict[tuple[int, tuple[tuple[int, str], ...]], Channel] = {}
    for ch in CHANNELS:
        fixed = tuple((i, t) for i, t in enumerate(ch.tokens) if not t.startswith("{"))
        idx[(len(ch.tokens), fixed)] = ch
    return idx


_INDEX = _index()


@lru_cache(maxsize=65536)
def parse_subject(subject: str) -> Route | None:
    """Resolve ``subject`` to its channel and validated parameters, or None if it is not one.

    Cached: a fleet publishes on a bounded set of subjects, so the hot path is a dict hit.
    """
    tokens = subject.split(".")
    for (length, fixed), ch in _INDEX.items():
        if length != len(tokens) or any(tokens[i] != t for i, t in fixed):
            continue
        params: dict[str, str] = {}
        try:
            for i, tok in enumerate(ch.tokens):
                if tok.startswith("{"):
                    params[tok[1:-1]] = ch._check(tok[1:-1], tokens[i])
        except InvalidNameError:
            return None
        return Route(ch, params)
    return None


def channel(channel_id: str) -> Channel:
    """The channel with this id; raises KeyError."""
    for ch in CHANNELS:
        if ch.id == channel_id:
            return ch
    raise KeyError(channel_id)


MAX_DEAD_SUBJECT_BYTES = 1024
"""The longest dead-letter subject tmcd publishes.  Its publish line (``HPUB <subject> <sizes>``) must
fit the server's control line (4 KiB by default) or the server closes tmcd's connection; a publisher
can send a subject only a little shorter than that, so ``tmc.dead.`` in front may not fit."""


def dead_letter_subject(subject: str) -> str:
    """Where a malformed message received on ``subject`` is copied: ``tmc.dead.<subject>``.

    A subject too long for that keeps the tokens that fit within :data:`MAX_DEAD_SUBJECT_BYTES`
    and ends in ``_toolong.<hash of the subject>`` (the dead letter's ``Tmc-Subject`` header has it whole).
    """
    dead = f"{DEAD_PREFIX}.{subject}"
    if len(dead.encode("utf-8", "surrogateescape")) <= MAX_DEAD_SUBJECT_BYTES:
        return dead
    digest = hashlib.sha256(subject.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    kept, room = [DEAD_PREFIX], MAX_DEAD_SUBJECT_BYTES - len(DEAD_PREFIX) - len("._toolong.") - len(digest)
    for token in subject.split("."):
        room -= len(token.encode("utf-8", "surrogateescape")) + 1
        if room < 0:
            break
        kept.append(token)
    return ".".join([*kept, "_toolong", digest])


# Builders for the common subjects (each validates its names).


def syncer_heartbeat(cluster: str) -> str:
    """``tmc.syncer.<cluster>.heartbeat``"""
    return SYNCER_HEARTBEAT.build(cluster=cluster)


def syncer_sync(cluster: str) -> str:
    """``tmc.syncer.<cluster>.sync``"""
    return SYNCER_SYNC.build(cluster=cluster)


def syncer_batch(cluster: str) -> str:
    """``tmc.syncer.<cluster>.batch``"""
    return SYNCER_BATCH.build(cluster=cluster)


def syncer_conn(cluster: str) -> str:
    """``tmc.syncer.<cluster>.conn``"""
    return SYNCER_CONN.build(cluster=cluster)


def placement_decision(placement: str) -> str:
    """``tmc.placement.<placement>.decision``"""
    return PLACEMENT_DECISION.build(placement=placement)


def workload_stats(cluster: str, namespace: str, workload: str, track: str) -> str:
    """``tmc.workload.<cluster>.<namespace>.<workload>.<track>``"""
    return WORKLOAD_STATS.build(cluster=cluster, namespace=namespace, workload=workload, track=track)


def health_change(kind: str, name: str) -> str:
    """``tmc.health.<kind>.<name>``"""
    return HEALTH_CHANGE.build(kind=kind, name=name)


def health_changes(kind: str) -> str:
    """``tmc.health.<kind>.*``: every health change of one kind (a subscription subject)."""
    HEALTH_CHANGE._check("kind", kind)
    return f"tmc.health.{kind}.*"


def canary_event(namespace: str, name: str) -> str:
    """``tmc.canary.<namespace>.<name>``"""
    return CANARY_EVENT.build(namespace=namespace, name=name)


def rollback_event(namespace: str, name: str) -> str:
    """``tmc.rollback.<namespace>.<name>``"""
    return ROLLBACK_EVENT.build(namespace=namespace, name=name)


def traffic_weights(namespace: str, route: str) -> str:
    """``tmc.traffic.<namespace>.<route>``"""
    return TRAFFIC_WEIGHTS.build(namespace=namespace, route=route)


def traffic_applied(namespace: str, route: str) -> str:
    """``tmc.traffic.applied.<namespace>.<route>``"""
    return TRAFFIC_APPLIED.build(namespace=namespace, route=route)


def ctl_sync(cluster: str, action: str) -> str:
    """``tmc.ctl.sync.<cluster>.<action>``"""
    return CTL_SYNC.build(cluster=cluster, action=action)


def ctl_canary(namespace: str, name: str, action: str) -> str:
    """``tmc.ctl.canary.<namespace>.<name>.<action>``"""
    return CTL_CANARY.build(namespace=namespace, name=name, action=action)


def ctl_rollback(namespace: str, name: str) -> str:
    """``tmc.ctl.rollback.<namespace>.<name>``"""
    return CTL_ROLLBACK.build(namespace=namespace, name=name)


def api_health() -> str:
    """``tmc.api.get.health``"""
    return API_HEALTH.build()
