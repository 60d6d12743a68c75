"""Control requests on a rollout: promote (--full), abort, pause, resume, retry (pure)."""

from __future__ import annotations

from tmcd.canary.model import ACTIVE, Env, Run
from tmcd.resources.canary import CanaryRollout, CanaryRolloutStatus
from tmcd.resources.meta import rfc3339

__all__ = ["control"]


def control(r: CanaryRollout, action: str, now: float, *, full: bool = False) -> tuple[CanaryRolloutStatus, int, str]:
    """Apply a control request: the new status, an HTTP-like code and a message (code != 200: unchanged)."""
    run = Run(r, Env(now=now))
    st = r.status
    if st.action is not None and st.action.state == "Applying" and action != "abort":
        return st, 409, f"a {st.action.kind} action is being applied; try again in a moment"
    ph = st.phase
    if action == "promote":
        if ph not in ("Progressing", "Paused"):
            return st, 409, f"cannot promote a rollout that is {ph}"
        if full:
            run.terminate_runs()
            run.note("decision", "promote --full: skip the remaining steps", decision="promote", full=True)
            run.phase("Promoting", "promoted in full: 100% on every eligible cluster", pause_reason="")
            return run.st, 200, "promoted in full"
        run.terminate_runs(keep=-1)
        if ph == "Paused":
            run.set(phase="Progressing")
        run.note("decision", f"promoted past {run.steps_text()}", decision="promote")
        run.advance("promoted")
        return run.st, 200, f"promoted to {run.steps_text()}"
    if action == "abort":
        if ph not in ("Pending", *ACTIVE) or ph == "RollingBack":
            return st, 409, f"cannot abort a rollout that is {ph}"
        run.abort("Aborted", "aborted by request")
        return run.st, 200, "aborting: all traffic returns to stable"
    if action == "pause":
        if ph == "Paused":
            return st, 200, "already paused"
        if ph != "Progressing":
            return st, 409, f"cannot pause a rollout that is {ph}"
        run.phase("Paused", f"{run.steps_text()}: paused by request", pause_reason="UserPaused")
        run.set(pause_start_time=rfc3339(now))
        return run.st, 200, "paused"
    if action == "resume":
        if ph != "Paused":
            return st, 409, f"cannot resume a rollout that is {ph} (only Paused)"
        reason = st.pause_reason
        run.set(phase="Progressing", progress_time=rfc3339(now))
        run.note("phase", f"Paused -> Progressing: resumed ({reason})", **{"from": "Paused", "to": "Progressing"})
        if reason == "PauseStep":
            run.advance("resumed")
        else:
            if reason == "InconclusiveAnalysis":  # measure again from scratch
                i = st.current_step_index
                run.set(
                    analysis_runs=[
                        r_
                        for r_ in st.analysis_runs
                        if r_.phase != "Inconclusive" or (r_.step_index is not None and r_.step_index != i)
                    ],
                    step_start_time=rfc3339(now),
                )
            run.set(pause_start_time="", pause_reason="", message=run.steps_text())
        return run.st, 200, f"resumed at {run.steps_text()}"
    if action == "retry":
        if ph != "RolledBack":
            return st, 409, f"cannot retry a rollout that is {ph} (only RolledBack)"
        run.start()
        return run.st, 200, "retrying from step 1"
    return st, 400, f"unknown action {action!r}"
