"""Handing a rollout to the rollback engine (pure)."""

from __future__ import annotations

import msgspec

from tmcd.resources.canary import CanaryRolloutStatus, RollbackStatus
from tmcd.resources.meta import rfc3339

__all__ = ["handoff"]


def handoff(
    st: CanaryRolloutStatus,
    now: float,
    *,
    trigger: str,
    reason: str,
    to_revision: int = 0,
    target_version: str = "",
    restore_clusters: list[str] | None = None,
) -> CanaryRolloutStatus:
    """``st`` handed to the rollback engine: RollingBack, with a Pending rollback record.

    ``to_revision`` 0 returns to the stable revision; ``target_version`` is set for a rollback of
    a finished rollout to an older revision (that version becomes stable again).
    """
    finished = st.phase in ("Succeeded", "RolledBack")
    record = RollbackStatus(
        phase="Pending",
        trigger=trigger,
        reason=reason,
        from_revision=st.stable_revision if finished else st.canary_revision,
        to_revision=to_revision or st.stable_revision,
        start_time=rfc3339(now),
        target_version=target_version,
        restore_clusters=list(restore_clusters or []),
    )
    changes = {"phase": "RollingBack", "message": reason, "abort_reason": trigger, "rollback": record}
    return msgspec.structs.replace(st, pause_start_time="", pause_reason="", **changes)
