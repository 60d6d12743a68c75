"""The rollback plan: a pure state machine over ``status.rollback``, fed by the rollout and a clock.

Stages, in this order and never another:

1. **Reversing**: 100 % stable on every cluster, in one pass (one ``TrafficWeights`` naming no
   cluster), before anything else; done when the router acknowledges it (the applied
   generation) -- each canary cluster's acknowledged canary weight is recorded.
2. **Restoring**: every canary image recorded in ``status.workloadImages`` is put back on its
   cluster's Deployment, then the ``<rollout>-canary`` Placement is emptied and its decision
   published; for a rollback of a finished rollout to an older revision, that revision's version
   becomes stable.
3. **CleaningUp**: the canary Placement, the image records and the rollout's canary-only state are removed.
4. **Completed**: the rollout is RolledBack (or Succeeded on the old revision, for a rollback of a
   finished rollout).

Each stage is recorded (``stageState: Applying``) with compare-and-set before the agent applies
it, and marked ``Applied`` after, so a ``kill -9`` at any point re-applies at most the stage that
was in flight (every stage is idempotent) and never skips one.  See docs/canary.md, Rollback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tmcd.canary.images import restored_text
from tmcd.canary.model import Applied, handoff
from tmcd.canary.schedule import parse_time
from tmcd.resources.canary import CanaryRollout, CanaryRolloutStatus, ClusterRollback, RollbackStatus, WorkloadImage
from tmcd.resources.meta import rfc3339

__all__ = ["STAGE_EVENTS", "Event", "Plan", "RollbackEnv", "advance", "begin", "stage_applied"]

STAGE_EVENTS = {"Reversing": "traffic", "Restoring": "placement", "CleaningUp": "cleanup"}
"""The RollbackEvent stage reported when each stage has been applied."""
NEXT = {"Reversing": "Restoring", "Restoring": "CleaningUp", "CleaningUp": "Completed"}


@dataclass(frozen=True)
class RollbackEnv:
    """What the plan may look at besides the rollout."""

    now: float
    applied: Applied | None = None
    """What the traffic router reports for the rollout's route."""
    next_generation: int = 1


@dataclass(frozen=True, slots=True)
class Event:
    """A RollbackEvent to publish: the stage reached and what it did."""

    stage: str
    reason: str
    clusters: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass
class Plan:
    """The status after :func:`advance`, the events, and whether a stage waits to be applied."""

    status: CanaryRolloutStatus
    events: list[Event] = field(default_factory=list)

    @property
    def applying(self) -> str | None:
        """The stage the agent must apply now, if any."""
        rb = self.status.rollback
        if rb is None or rb.stage_state != "Applying" or rb.phase not in STAGE_EVENTS:
            return None
        return rb.phase


def begin(
    r: CanaryRollout,
    now: float,
    *,
    trigger: str,
    reason: str,
    to_revision: int = 0,
    target_version: str = "",
    restore_clusters: list[str] | None = None,
) -> CanaryRolloutStatus:
    """The status of a rollout handed to the rollback engine (RollingBack, rollback Pending)."""
    return handoff(
        r.status,
        now,
        trigger=trigger,
        reason=reason,
        to_revision=to_revision,
        target_version=target_version,
        restore_clusters=restore_clusters,
    )


def _since(rb: RollbackStatus, stage: str, now: float) -> float:
    t = parse_time(rb.stage_times.get(stage, ""))
    return max(0.0, now - t) if t is not None else 0.0


def advance(r: CanaryRollout, env: RollbackEnv) -> Plan:
    """The rollback's next step (pure): start a stage, move past an acknowledged one, or complete."""
    st, now = r.status, env.now
    rb = st.rollback
    plan = Plan(st)
    if st.phase != "RollingBack" or rb is None or rb.phase in ("Completed", "Failed"):
        return plan
    if rb.phase != "Pending" and rb.stage_state == "Applying":
        return plan  # the agent applies it first
    stamp = rfc3339(now)
    if rb.phase == "Pending":
        prior = st.action.generation if st.action is not None else 0
        gen = max(env.next_generation, prior + 1, rb.generation + 1)
        clusters = [ClusterRollback(cluster=c, canary_weight=st.current_weight) for c in st.canary_clusters]
        known = set(st.canary_clusters)
        clusters += [ClusterRollback(cluster=c, canary_weight=0) for c in rb.restore_clusters if c not in known]
        rb = msgspec.structs.replace(
            rb,
            phase="Reversing",
            stage_state="Applying",
            generation=gen,
            clusters=clusters,
            stage_times={**rb.stage_times, "Reversing": stamp},
            message="returning all traffic to stable",
        )
        plan.events.append(Event("started", f"{rb.trigger}: {rb.reason}", tuple(st.canary_clusters)))
        plan.status = msgspec.structs.replace(st, rollback=rb)
        return plan
    if rb.phase == "Reversing":
        applied = env.applied
        if applied is None or applied.generation < rb.generation:
            return plan  # waiting for the router to acknowledge the reversal
        clusters = [
            msgspec.structs.replace(c, canary_weight=applied.canary.get(c.cluster, 0), state="Reversed")
            for c in rb.clusters
        ]
        took = _since(rb, "Reversing", now)
        rb = msgspec.structs.replace(
            rb,
            clusters=clusters,
            phase="Restoring",
            stage_state="Applying",
            stage_times={**rb.stage_times, "Restoring": stamp},
            message="traffic is on stable everywhere; restoring the placement",
        )
        plan.events.append(Event("traffic", "100% stable acknowledged", tuple(c.cluster for c in clusters), took))
        plan.status = msgspec.structs.replace(st, rollback=rb, current_weight=0, applied_weight=0)
        return plan
    nxt = NEXT[rb.phase]
    if nxt != "Completed":
        rb = msgspec.structs.replace(
            rb, phase=nxt, stage_state="Applying", stage_times={**rb.stage_times, nxt: stamp}, message=_words(nxt)
        )
        plan.status = msgspec.structs.replace(st, rollback=rb)
        return plan
    total = _since(rb, "Reversing", now)
    rb = msgspec.structs.replace(
        rb,
        phase="Completed",
        stage_state="Applied",
        clusters=[msgspec.structs.replace(c, state="Restored") for c in rb.clusters],
        end_time=stamp,
        stage_times={**rb.stage_times, "Completed": stamp},
        message="rolled back",
    )
    changes: dict[str, Any] = {"rollback": rb, "current_weight": 0, "canary_clusters": [], "applied_weight": 0}
    if rb.target_version:
        changes.update(
            phase="Succeeded",
            stable_version=rb.target_version,
            stable_revision=rb.to_revision,
            message=f"rolled back to revision {rb.to_revision} ({rb.target_version}): {rb.reason}",
            abort_reason="",
        )
    else:
        changes.update(
            phase="RolledBack", message=f"all traffic is on {st.stable_version}: {st.abort_reason or rb.trigger}"
        )
    plan.events.append(Event("completed", rb.reason, tuple(c.cluster for c in rb.clusters), total))
    plan.status = msgspec.structs.replace(st, **changes)
    return plan


def stage_applied(
    r: CanaryRollout, now: float, images: Sequence[WorkloadImage] | None = None
) -> tuple[CanaryRolloutStatus, Event | None]:
    """The status once the agent has applied the recorded stage, and its event (the reversal's
    comes when the router acknowledges it, see :func:`advance`); ``images``: the image records
    after Restoring put them back (Restored or Skipped)."""
    rb = r.status.rollback
    if rb is None or rb.stage_state != "Applying" or rb.phase not in STAGE_EVENTS:
        raise ValueError("no rollback stage is being applied")
    took = _since(rb, rb.phase, now)
    changes: dict[str, Any] = {"rollback": msgspec.structs.replace(rb, stage_state="Applied")}
    put_back = restored_text(r, images or [])
    if rb.phase == "Restoring" and images is not None:
        changes["workload_images"] = list(images)
    elif rb.phase == "CleaningUp":
        changes["workload_images"] = []
    status = msgspec.structs.replace(r.status, **changes)
    what = {
        "Reversing": "100% stable sent to every cluster",
        "Restoring": (f"{put_back}; " if put_back else "")
        + "canary placement emptied"
        + (f"; {rb.target_version} is stable again" if rb.target_version else ""),
        "CleaningUp": "canary placement and canary-only state removed",
    }[rb.phase]
    if rb.phase == "Reversing":
        return status, None
    clusters = tuple(x.cluster for x in images or [] if x.state == "Restored") if rb.phase == "Restoring" else ()
    return status, Event(STAGE_EVENTS[rb.phase], what, clusters, took)


def _words(stage: str) -> str:
    return {"Restoring": "restoring the placement", "CleaningUp": "cleaning up"}.get(stage, stage)
