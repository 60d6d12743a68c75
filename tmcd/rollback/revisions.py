"""A rollout's revision history: which RolloutRevision records must exist and how each reads (pure).

:func:`plan` is level-triggered: from a CanaryRollout (spec and status) and the revision records
stored for it, it returns the writes and deletions that make the history match the rollout, and
an empty plan once it does, so applying it again (after a restart, or by a second replica) changes
nothing.  The time is passed in; it is only written when a record changes phase.

Revision ``N`` of rollout ``R`` is the object ``R-N`` (label ``tmc.kcp.io/rollout=R``,
ownerReference to the rollout).  The numbers are the rollout's own: ``status.stableRevision``
(1 for the version the rollout started from) and ``status.canaryRevision`` (each canary version
tried, a retry included, gets the next number).  Phases:

* ``Active``: serving traffic now: the stable revision, and the canary while it runs
  (Progressing, Paused, Promoting, RollingBack);
* ``Superseded``: no longer served, without having failed: a stable revision replaced by a newer
  one (promoted, or restored by a rollback), a canary replaced by a newer canary version before it
  was promoted, or a stable revision a rollback left (``outcome`` says which);
* ``RolledBackTo``: stable again because a rollback returned to it (it had been Superseded);
* ``Failed``: a canary that was rolled back (or stopped by a spec that cannot run); ``trigger``
  and ``outcome`` say why.

``spec.revisionHistoryLimit`` keeps the newest N records; the stable revision, a running canary's
and those an unfinished rollback names are never deleted, whatever the limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from tmcd.resources.canary import (
    API_VERSION,
    CANARY_ROLLOUT,
    CanaryRollout,
    RolloutRevision,
    RolloutRevisionSpec,
    RolloutRevisionStatus,
)
from tmcd.resources.meta import ObjectMeta, OwnerReference, rfc3339

__all__ = [
    "CREATED_BY",
    "DEFAULT_LIMIT",
    "ROLLOUT_LABEL",
    "Plan",
    "Write",
    "history_limit",
    "needs_eligible",
    "owned",
    "plan",
    "revision_name",
]

ROLLOUT_LABEL = "tmc.kcp.io/rollout"
"""The label naming a revision's rollout (``kubectl tmc history`` and the API filter on it)."""
CREATED_BY = "rollback-engine"
DEFAULT_LIMIT = 10
"""``CanaryRolloutSpec.revisionHistoryLimit``'s default."""
RUNNING = ("Progressing", "Paused", "Promoting")
STABLE_WEIGHTS = {"stable": 100, "canary": 0}
MAX_OUTCOME = 300
"""Characters of an outcome kept (a status message can be long)."""
_NAME_MAX = 63


@dataclass(frozen=True, slots=True)
class Write:
    """One record to create, or to bring to ``revision``'s spec and status."""

    revision: RolloutRevision
    create: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """What makes the stored history match the rollout: deletions first, then writes."""

    writes: tuple[Write, ...] = ()
    deletes: tuple[str, ...] = ()
    """Names of the records to delete (pruned, stale, or of a deleted rollout)."""

    def __bool__(self) -> bool:
        return bool(self.writes or self.deletes)


def revision_name(rollout: str, number: int) -> str:
    """``<rollout>-<number>``, the rollout's part shortened when the name would pass 63 characters."""
    suffix = f"-{number}"
    return rollout[: _NAME_MAX - len(suffix)].rstrip("-") + suffix


def history_limit(spec_limit: int, default: int = DEFAULT_LIMIT) -> int:
    """The number of revisions kept: the spec's value, or ``default`` (``rollback.revision_history_limit``)
    when the spec has the field's default (10; a stored rollout cannot tell it from one left out)."""
    return default if spec_limit == DEFAULT_LIMIT else spec_limit


def owned(rev: RolloutRevision) -> bool:
    """Whether the record belongs to the history (written for a rollout, as :func:`plan` writes them);
    records made by hand without the label and the ownerReference are left alone."""
    return rev.metadata.labels.get(ROLLOUT_LABEL) == rev.spec.rollout and any(
        o.kind == CANARY_ROLLOUT for o in rev.metadata.owner_references
    )


def _same_owner(rev: RolloutRevision, rollout: CanaryRollout) -> bool:
    """False for a record of an earlier rollout of the same name (another uid)."""
    uid = rollout.metadata.uid
    return all(not o.uid or not uid or o.uid == uid for o in rev.metadata.owner_references if o.kind == CANARY_ROLLOUT)


def needs_eligible(rollout: CanaryRollout, existing: Sequence[RolloutRevision]) -> bool:
    """Whether :func:`plan` would record the stable clusters now (a stable revision is written, or a
    canary becomes stable): the caller then passes the eligible clusters if it can tell them."""
    n = rollout.status.stable_revision
    if n <= 0:
        return False
    have = [r for r in existing if r.spec.revision == n and owned(r) and r.spec.rollout == rollout.metadata.name]
    return not have or any(r.status.phase == "Active" and r.spec.trigger == "CanaryStarted" for r in have)


def plan(
    rollout: CanaryRollout | None,
    existing: Sequence[RolloutRevision],
    now: float,
    *,
    default_limit: int = DEFAULT_LIMIT,
    eligible: Sequence[str] | None = None,
) -> Plan:
    """The writes and deletions that make ``existing`` (the records stored for one rollout) match it.

    ``rollout`` None means it was deleted: its records go with it, as its ownerReference says.
    ``eligible``: the rollout's eligible clusters, when known (see :func:`needs_eligible`): the
    clusters a stable revision runs on.
    """
    mine = [r for r in existing if owned(r)]
    if rollout is None:
        return Plan(deletes=tuple(sorted(r.metadata.name for r in mine)))
    name = rollout.metadata.name
    stale = {r.metadata.name for r in mine if r.spec.rollout != name or not _same_owner(r, rollout)}
    current: dict[int, RolloutRevision] = {}
    for r in mine:
        if r.metadata.name in stale:
            continue
        prev = current.get(r.spec.revision)
        if prev is None or r.metadata.name == revision_name(name, r.spec.revision):
            current[r.spec.revision] = r
    desired = _History(rollout, current, now, eligible or ()).desired()
    records = {**current, **desired}
    keep = _kept(rollout, records, history_limit(rollout.spec.revision_history_limit, default_limit))
    writes = []
    for n in sorted(desired):
        if n not in keep:
            continue
        want, have = desired[n], current.get(n)
        if have is None:
            writes.append(Write(want, create=True))
        elif (want.spec, want.status) != (have.spec, have.status):
            writes.append(Write(want, create=False))
    dropped = [records[n].metadata.name for n in sorted(current) if n not in keep]
    extra = [r.metadata.name for r in mine if r.metadata.name not in stale and current.get(r.spec.revision) is not r]
    deletes = sorted({*stale, *dropped, *extra})
    return Plan(tuple(writes), tuple(deletes))


def _kept(rollout: CanaryRollout, records: Mapping[int, RolloutRevision], limit: int) -> set[int]:
    """The newest ``limit`` revisions, and every one that must stay whatever the limit."""
    st = rollout.status
    keep = set(sorted(records, reverse=True)[: max(limit, 0)])
    if st.stable_revision > 0:
        keep.add(st.stable_revision)  # never delete the revision that is stable now
    keep |= {n for n, r in records.items() if r.status.phase in ("Active", "RolledBackTo")}
    rb = st.rollback
    if rb is not None and rb.phase not in ("Completed", "Failed"):
        keep |= {n for n in (rb.from_revision, rb.to_revision) if n > 0}  # the engine reads them
    return keep & set(records)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_OUTCOME else text[: MAX_OUTCOME - 1] + "…"


def _union(a: Iterable[str], b: Iterable[str]) -> list[str]:
    return sorted({*a, *b})


class _History:
    """The desired records of one rollout, from its status and the records stored."""

    def __init__(
        self, rollout: CanaryRollout, current: Mapping[int, RolloutRevision], now: float, eligible: Sequence[str]
    ) -> None:
        self.r = rollout
        self.eligible = eligible
        self.st = rollout.status
        self.current = current
        self.now = rfc3339(now)

    def desired(self) -> dict[int, RolloutRevision]:
        out: dict[int, RolloutRevision] = {}
        stable, canary = self.st.stable_revision, self.st.canary_revision
        if stable > 0:
            out[stable] = self.stable(stable)
        if canary > 0 and canary != stable:
            rec = self.canary(canary)
            if rec is not None:
                out[canary] = rec
        for n, rec in self.current.items():
            if n not in out:
                left = self.left(n, rec)
                if left is not None:
                    out[n] = left
        return out

    def new(self, n: int, version: str, stable_version: str, trigger: str) -> RolloutRevision:
        """A record as it is first written."""
        r = self.r
        meta = ObjectMeta(
            name=revision_name(r.metadata.name, n),
            namespace=r.metadata.namespace,
            labels={ROLLOUT_LABEL: r.metadata.name},
            owner_references=[
                OwnerReference(
                    api_version=API_VERSION,
                    kind=CANARY_ROLLOUT,
                    name=r.metadata.name,
                    namespace=r.metadata.namespace,
                    uid=r.metadata.uid,
                )
            ],
        )
        spec = RolloutRevisionSpec(
            rollout=r.metadata.name,
            revision=n,
            rollout_spec=r.spec,
            created_by=CREATED_BY,
            stable_version=stable_version,
            version=version,
            trigger=trigger,
        )
        return RolloutRevision(metadata=meta, spec=spec, status=RolloutRevisionStatus(start_time=self.now))

    def stable(self, n: int) -> RolloutRevision:
        """The revision stable now: Active, or RolledBackTo when a rollback made it stable again."""
        st, have = self.st, self.current.get(n)
        if have is None:
            version = st.stable_version or self.r.spec.stable_version
            first = n == 1
            rec = self.new(n, version, version, "Initial" if first else "Promoted")
            return _with(
                rec,
                spec={"weights": dict(STABLE_WEIGHTS), "placement": sorted(self.eligible)},
                status={"outcome": "the version the rollout started from" if first else "promoted"},
            )
        spec, status = have.spec, have.status
        start = status.start_time or self.now
        if status.phase == "Active":
            if spec.trigger == "CanaryStarted":  # the canary became stable
                placement = _union(spec.placement, [*st.canary_clusters, *self.eligible])
                return _with(
                    have,
                    spec={"trigger": "Promoted", "weights": dict(STABLE_WEIGHTS), "placement": placement},
                    status={"outcome": "promoted", "start_time": start, "end_time": ""},
                )
            return _with(have, status={"start_time": start, "end_time": ""})
        # stable again though it had been left: only a rollback does that
        outcome = status.outcome
        if status.phase != "RolledBackTo" or not outcome:
            rb = st.rollback
            outcome = "restored by a rollback"
            if rb is not None and rb.to_revision == n:
                if rb.from_revision:
                    outcome += f" from revision {rb.from_revision}"
                if rb.trigger:
                    outcome += f" ({rb.trigger})"
        return _with(
            have,
            spec={"trigger": "RolledBack", "weights": dict(STABLE_WEIGHTS)},
            status={"phase": "RolledBackTo", "outcome": _clip(outcome), "start_time": start, "end_time": ""},
        )

    def canary(self, n: int) -> RolloutRevision | None:
        """The canary revision: Active while it runs or rolls back, Failed once rolled back or stopped."""
        st, have = self.st, self.current.get(n)
        phase = st.phase
        live = phase in RUNNING or phase == "RollingBack"
        if have is None:
            if not (live or phase == "RolledBack"):
                return None  # never ran (Pending, Degraded) or not the canary any more
            spec = self.r.spec
            have = self.new(n, st.canary_version or spec.canary_version, st.stable_version or spec.stable_version, "")
            have = _with(have, spec={"trigger": "CanaryStarted"})
        if have.status.phase != "Active":
            return have  # it ended already: its record stays as written
        start = have.status.start_time or self.now
        if live:
            spec_changes: dict[str, object] = {"placement": _union(have.spec.placement, st.canary_clusters)}
            weight = st.current_weight
            if phase in RUNNING and (weight > 0 or not have.spec.weights):
                spec_changes["weights"] = {"stable": 100 - weight, "canary": weight}
            outcome = "canary in progress"
            if phase == "RollingBack":
                trigger, reason = self.cause(n)
                outcome = f"rolling back: {trigger}" + (f": {reason or st.message}" if reason or st.message else "")
            return _with(have, spec=spec_changes, status={"outcome": _clip(outcome), "start_time": start})
        if phase == "RolledBack":
            trigger, reason = self.cause(n)
            rb = st.rollback
            to = f" to revision {rb.to_revision}" if rb is not None and rb.to_revision else ""
            outcome = f"rolled back{to}: {trigger}" + (f": {reason}" if reason else "")
            if not reason and have.status.outcome.startswith("rolling back: "):
                outcome = f"rolled back{to}: " + have.status.outcome.removeprefix("rolling back: ")
            status = {"phase": "Failed", "outcome": _clip(outcome), "start_time": start, "end_time": self.now}
            return _with(have, spec={"trigger": trigger}, status=status)
        if phase == "Degraded":
            outcome = "stopped: the spec cannot run" + (f": {st.message}" if st.message else "")
            status = {"phase": "Failed", "outcome": _clip(outcome), "start_time": start, "end_time": self.now}
            return _with(have, spec={"trigger": "Degraded"}, status=status)
        return None  # Pending or Succeeded: no longer the canary (see left())

    def cause(self, n: int) -> tuple[str, str]:
        """What rolled revision ``n`` back, and why: the rollback engine's record, else the abort reason."""
        rb = self.st.rollback
        if rb is not None and rb.trigger and rb.from_revision in (0, n):
            return rb.trigger, rb.reason
        trigger = self.st.abort_reason or "RolledBack"
        if trigger == "AnalysisFailed":  # the run that failed says why (the status message no longer does)
            failed = [r for r in self.st.analysis_runs if r.phase in ("Failed", "Error")]
            if failed:
                return trigger, f"analysis {failed[-1].template} {failed[-1].phase}: {failed[-1].message}".rstrip(": ")
        return trigger, ""

    def left(self, n: int, rec: RolloutRevision) -> RolloutRevision | None:
        """A record neither stable nor the running canary: Superseded if it still reads as live."""
        if rec.status.phase not in ("Active", "RolledBackTo"):
            return None
        st, rb = self.st, self.st.rollback
        spec: dict[str, object] = {}
        if rb is not None and rb.from_revision == n and rb.to_revision and rb.to_revision != n:
            trigger = rb.trigger or "RolledBack"
            outcome = f"rolled back to revision {rb.to_revision}: {trigger}" + (f": {rb.reason}" if rb.reason else "")
            spec["trigger"] = trigger
        elif rec.spec.trigger == "CanaryStarted":  # a canary that never became stable
            if st.canary_revision > n:
                outcome = f"replaced by revision {st.canary_revision} before it was promoted"
            else:
                outcome = f"stopped: the rollout is {st.phase}"
        else:
            outcome = f"superseded by revision {st.stable_revision}"
        status = {
            "phase": "Superseded",
            "outcome": _clip(outcome),
            "start_time": rec.status.start_time or self.now,
            "end_time": rec.status.end_time or self.now,
        }
        if rec.status.phase == "RolledBackTo":
            status["end_time"] = self.now
        return _with(rec, spec=spec, status=status)


def _with(
    rec: RolloutRevision, *, spec: Mapping[str, object] | None = None, status: Mapping[str, object] | None = None
) -> RolloutRevision:
    """``rec`` with some spec and status fields replaced."""
    return msgspec.structs.replace(
        rec,
        spec=msgspec.structs.replace(rec.spec, **spec) if spec else rec.spec,
        status=msgspec.structs.replace(rec.status, **status) if status else rec.status,
    )
