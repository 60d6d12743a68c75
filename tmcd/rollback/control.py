"""Whether a rollback request applies, and the rollout's status when it does (pure)."""

from __future__ import annotations

from tmcd.contracts.messages import RollbackControl
from tmcd.resources.canary import CanaryRollout, CanaryRolloutStatus, RolloutRevision
from tmcd.rollback.model import begin

__all__ = ["RUNNING", "refuse_or_begin", "revision_version"]

RUNNING = ("Progressing", "Paused", "Promoting")


def revision_version(rev: RolloutRevision) -> str:
    """The version a revision ran."""
    return rev.spec.version or rev.spec.rollout_spec.canary_version


def refuse_or_begin(
    r: CanaryRollout, req: RollbackControl, revision: RolloutRevision | None, now: float
) -> tuple[CanaryRolloutStatus | None, int, str]:
    """(new status, 200, message) to start the rollback; (None, code, why) to answer without one.

    ``revision`` is the revision asked for (``to_revision``), or for ``to_revision`` 0 on a
    finished rollout the previous stable one; None when there is none.
    """
    st = r.status
    who = f" by {req.requested_by}" if req.requested_by else ""
    why = f"rollback requested{who}" + (f": {req.reason}" if req.reason else "")
    if st.phase == "RollingBack":
        return None, 409, "a rollback is already in progress"
    if st.phase in ("Pending", "Degraded"):
        return None, 409, f"nothing to roll back: the rollout is {st.phase}"
    wanted = req.to_revision or (revision.spec.revision if revision is not None else 0)
    if st.phase in RUNNING:
        if req.to_revision and req.to_revision != st.stable_revision:
            return (
                None,
                409,
                (
                    f"a canary is running: abort returns to the stable revision {st.stable_revision}; roll back to "
                    f"revision {req.to_revision} once the rollout has ended"
                ),
            )
        return begin(r, now, trigger="Manual", reason=why), 200, f"rolling back to revision {st.stable_revision}"
    if req.to_revision == 0 and st.phase == "RolledBack":
        return None, 200, f"already on the stable revision {st.stable_revision} ({st.stable_version}): nothing to do"
    if wanted == st.stable_revision:
        return None, 200, f"revision {wanted} ({st.stable_version}) is already stable: nothing to do"
    if revision is None:
        asked = f"revision {req.to_revision}" if req.to_revision else "a previous stable revision"
        return None, 404, f"{asked} of {r.metadata.name} not found"
    version = revision_version(revision)
    status = begin(
        r,
        now,
        trigger="Manual",
        reason=why,
        to_revision=wanted,
        target_version=version,
        restore_clusters=list(revision.spec.placement),
    )
    return status, 200, f"rolling back to revision {wanted} ({version})"
