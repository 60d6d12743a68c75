"""Actions the dashboard sends (sync pause/resume/force, canary promote/abort/retry): each is a
request to tmcd's controllers over NATS, answered by a ControlReply.  Pure description here; the
app asks for confirmation, honours ``--read-only`` and sends it through the feed's bus."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tmcd.contracts import subjects
from tmcd.contracts.messages import CanaryControl, Message, SyncControl

__all__ = ["Action", "canary_action", "sync_action"]

REQUESTED_BY = "tmcd-dashboard"


@dataclass(frozen=True)
class Action:
    """One request: what the confirmation asks, where it goes, what it carries."""

    question: str
    subject: str
    message: Message
    target: str
    """What the action is about, for the acknowledgement line (a cluster, namespace/name)."""


def sync_action(cluster: str, verb: str, *, now: float | None = None) -> Action:
    """``pause``, ``resume`` or ``force`` (a full re-sync) of one cluster's syncer."""
    msg = SyncControl(cluster=cluster, action=verb, timestamp=now or time.time(), requested_by=REQUESTED_BY)  # type: ignore[arg-type]
    words = {"pause": "Pause syncing on", "resume": "Resume syncing on", "force": "Force a full re-sync of"}[verb]
    return Action(f"{words} cluster {cluster}?", subjects.ctl_sync(cluster, verb), msg, cluster)


def canary_action(namespace: str, name: str, verb: str, *, full: bool = False, now: float | None = None) -> Action:
    """``promote`` (``full``: to 100 % at once), ``abort`` or ``retry`` of a rollout."""
    msg = CanaryControl(
        namespace=namespace,
        name=name,
        action=verb,  # type: ignore[arg-type]
        timestamp=now or time.time(),
        full=full,
        requested_by=REQUESTED_BY,
    )
    words = {
        "promote": "Promote to the next step:",
        "abort": "Abort (all traffic back to stable):",
        "retry": "Retry from step 1:",
        "pause": "Pause:",
        "resume": "Resume:",
    }[verb]
    if verb == "promote" and full:
        words = "Promote in full (100 % on every cluster, skip the remaining steps):"
    return Action(
        f"{words} canary {namespace}/{name}?", subjects.ctl_canary(namespace, name, verb), msg, f"{namespace}/{name}"
    )
