"""The placement engine: a pure function from a Placement and the known SyncTargets to a Decision.

Every cluster gets exactly one reason, checked in this order (the first that applies wins):

``LabelMismatch``
    no ``locationSelector`` matches the cluster's labels (an empty list matches every cluster).
``Cordoned``
    ``spec.unschedulable`` is set.
``Unhealthy``
    health is Unhealthy or Unknown, or the syncer is not connected -- unless the placement sets
    ``tolerateUnhealthy``, in which case the cluster stays eligible with a penalty of
    :data:`UNHEALTHY_PENALTY`.  Degraded clusters are always eligible, with :data:`DEGRADED_PENALTY`.
``SyncPaused``
    the syncer is paused.  Pausing is a freeze, not an eviction: a paused cluster is not chosen
    anew, but one already in ``previous`` stays eligible, so pausing never reschedules a workload.
``InsufficientCapacity``
    cpu, memory or pods are fully used (``used >= allocatable``) for a resource whose allocatable
    amount is known.  Missing or unparseable quantities count as unknown, never as full.
``Selected`` / ``NotChosen``
    eligible, and ranked within / beyond ``numberOfClusters`` (None chooses every eligible cluster).

Scores are in 0..1, higher is better, ties are broken by cluster name:

* ``LeastLoaded``: ``1 - u`` where ``u`` is the mean utilisation (used/allocatable, clamped to 0..1)
  of cpu, memory and pods over the resources whose allocatable amount is known and positive
  (:data:`UNKNOWN_UTILISATION` when none is).
* ``Binpack``: ``u`` -- fill the fullest cluster that still fits.
* ``Spread``: round-robin over regions (label ``region``), and within a region over zones (label
  ``zone``); each round takes the next-best cluster of every location, best first, clusters being
  ordered by their LeastLoaded score.  Clusters without the label share the location ``""``.  The
  score of the cluster at rank ``i`` of ``n`` is ``(n - 1 - i + s) / n``, ``s`` being its
  LeastLoaded score, so it falls strictly with rank and still shows the load.

The health penalty and the stickiness bonus (:data:`STICKY_BONUS` for clusters in ``previous``, so
that decisions do not churn when scores are close) are added before ranking; the reported score is
clamped to 0..1 and rounded to 4 places, while ranking uses the unrounded value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, get_args

import msgspec

from tmcd.contracts.messages import CandidateScore, PlacementDecision, PlacementResult
from tmcd.resources.meta import Condition, rfc3339
from tmcd.resources.placement import CandidateResult as StatusCandidate
from tmcd.resources.placement import (
    Placement,
    PlacementPhase,
    PlacementPolicy,
    PlacementStatus,
    SelectedCluster,
)
from tmcd.resources.selectors import Selector, from_label_selector, parse_quantity
from tmcd.resources.synctarget import SyncTarget

__all__ = [
    "DEGRADED_PENALTY",
    "LOCATION_LABELS",
    "RESOURCES",
    "STICKY_BONUS",
    "UNHEALTHY_PENALTY",
    "UNKNOWN_UTILISATION",
    "CandidateResult",
    "Decision",
    "Reason",
    "StatusChange",
    "decide",
    "eligibility_facts",
    "fleet_change_matters",
    "fleet_pass_at",
    "needs_decision",
    "scheduled_condition",
    "status_change",
    "to_message",
    "to_status",
    "touches",
    "utilisation",
]

Reason = Literal[
    "Selected",
    "NotChosen",
    "LabelMismatch",
    "Cordoned",
    "Unhealthy",
    "SyncPaused",
    "InsufficientCapacity",
]

STICKY_BONUS = 0.05
"""Added to the score of a cluster that is in the current selection."""
DEGRADED_PENALTY = 0.2
"""Subtracted from the score of a Degraded cluster."""
UNHEALTHY_PENALTY = 0.4
"""Subtracted from the score of an Unhealthy, Unknown or disconnected cluster (tolerateUnhealthy only)."""
UNKNOWN_UTILISATION = 0.5
"""Utilisation assumed for a cluster that reports no usable capacity."""
RESOURCES = ("cpu", "memory", "pods")
"""The resources utilisation and fullness are computed over."""
LOCATION_LABELS = ("region", "zone")
"""The labels Spread spreads over, outermost first."""


class CandidateResult(msgspec.Struct, frozen=True):
    """One cluster and why it was or was not chosen."""

    cluster: str
    selected: bool
    score: float = 0.0
    """Clamped to 0..1 and rounded; 0 for clusters that are not eligible."""
    reason: Reason = "NotChosen"
    message: str = ""
    """Human-readable detail, e.g. the utilisation or the resource that is full."""


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of :func:`decide`."""

    phase: PlacementPhase
    """Bound (at least one cluster selected), Unbound (none qualifies) or Pending (no clusters known)."""
    policy: PlacementPolicy
    selected: list[str]
    """The chosen clusters, best first."""
    candidates: list[CandidateResult]
    """Every known cluster exactly once: eligible ones by rank, then the others by name."""
    decided_at: float
    message: str = ""


class _Eligible(msgspec.Struct, frozen=True):
    """An eligible cluster with its adjusted score (unclamped) and explanation."""

    name: str
    score: float
    location: tuple[str, ...]
    message: str


def _quantity(q: dict[str, str], key: str) -> float | None:
    """``q[key]`` in base units, None if missing or not a quantity."""
    text = q.get(key)
    if text is None:
        return None
    try:
        return parse_quantity(text)
    except ValueError:
        return None


def _full_resource(target: SyncTarget) -> str | None:
    """The first resource with ``used >= allocatable`` as "pods 110/110", or None."""
    st = target.status
    for res in RESOURCES:
        alloc = _quantity(st.allocatable, res)
        if alloc is None:
            continue
        used = _quantity(st.used, res) if res in st.used else 0.0
        if used is not None and used >= alloc:
            return f"{res} {st.used.get(res, '0')}/{st.allocatable[res]} used"
    return None


def utilisation(target: SyncTarget) -> float:
    """Mean used/allocatable (each clamped to 0..1) over cpu, memory and pods with known allocatable."""
    st = target.status
    ratios: list[float] = []
    for res in RESOURCES:
        alloc = _quantity(st.allocatable, res)
        used = _quantity(st.used, res) if res in st.used else 0.0
        if alloc is None or alloc <= 0 or used is None:
            continue
        ratios.append(min(max(used / alloc, 0.0), 1.0))
    return sum(ratios) / len(ratios) if ratios else UNKNOWN_UTILISATION


def _is_unhealthy(target: SyncTarget) -> bool:
    return target.status.health in ("Unhealthy", "Unknown") or not target.status.connected


def _health_text(target: SyncTarget) -> str:
    if not target.status.connected:
        return f"disconnected (health {target.status.health})"
    reason = f" ({target.status.health_reason})" if target.status.health_reason else ""
    return f"health {target.status.health}{reason}"


def _ineligible(
    target: SyncTarget, selectors: Sequence[Selector], tolerate: bool, previous: frozenset[str]
) -> tuple[Reason, str] | None:
    """The reason a cluster cannot be chosen, with detail, or None if it is eligible."""
    if selectors and not any(s.matches(target.metadata.labels) for s in selectors):
        return "LabelMismatch", "no locationSelector matches " + _labels_text(target.metadata.labels)
    if target.spec.unschedulable:
        return "Cordoned", "spec.unschedulable is set"
    if _is_unhealthy(target) and not tolerate:
        return "Unhealthy", _health_text(target)
    if target.status.sync_paused and target.metadata.name not in previous:
        return "SyncPaused", "sync is paused; a paused cluster is not chosen anew"
    full = _full_resource(target)
    if full is not None:
        return "InsufficientCapacity", full
    return None


def _labels_text(labels: dict[str, str]) -> str:
    return "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else "no labels"


def _adjusted(target: SyncTarget, base: float, sticky: bool, basis: str) -> tuple[float, str]:
    """Base score with the health penalty and stickiness bonus, and a message explaining it."""
    score = base
    parts = [f"{basis} {base:.4f}", f"utilisation {utilisation(target):.0%}"]
    if _is_unhealthy(target):
        score -= UNHEALTHY_PENALTY
        parts.append(f"{_health_text(target)} -{UNHEALTHY_PENALTY}")
    elif target.status.health == "Degraded":
        score -= DEGRADED_PENALTY
        parts.append(f"Degraded -{DEGRADED_PENALTY}")
    if sticky:
        score += STICKY_BONUS
        parts.append(f"previously selected +{STICKY_BONUS}")
    if target.status.sync_paused:
        parts.append("sync paused, kept from the previous selection")
    return score, "; ".join(parts)


def _clamp(x: float) -> float:
    return round(min(max(x, 0.0), 1.0), 4)


def _rank_key(e: _Eligible) -> tuple[float, str]:
    return -e.score, e.name


def _interleave(groups: Iterable[list[_Eligible]]) -> list[_Eligible]:
    """Round-robin over groups (each already ranked): round r takes every group's r-th, best first."""
    lists = list(groups)
    out: list[_Eligible] = []
    for r in range(max((len(g) for g in lists), default=0)):
        out.extend(sorted((g[r] for g in lists if len(g) > r), key=_rank_key))
    return out


def _spread_order(eligible: list[_Eligible], depth: int = 0) -> list[_Eligible]:
    """Hierarchical round-robin over LOCATION_LABELS (region, then zone within a region)."""
    if depth >= len(LOCATION_LABELS):
        return sorted(eligible, key=_rank_key)
    groups: dict[str, list[_Eligible]] = {}
    for e in eligible:
        groups.setdefault(e.location[depth], []).append(e)
    return _interleave(_spread_order(g, depth + 1) for _, g in sorted(groups.items()))


def _least_loaded(t: SyncTarget) -> float:
    return 1.0 - utilisation(t)


_BASES: dict[str, tuple[Callable[[SyncTarget], float], str]] = {
    "LeastLoaded": (_least_loaded, "free"),
    "Spread": (_least_loaded, "free"),
    "Binpack": (utilisation, "fill"),
}


def decide(
    placement: Placement, clusters: Sequence[SyncTarget], *, previous: Sequence[str] = (), now: float
) -> Decision:
    """Choose clusters for ``placement`` among ``clusters``; ``previous`` is the current selection.

    Pure and deterministic.  A cluster name that appears twice counts once (the first wins).
    Raises SelectorError for an invalid locationSelector and ValueError for an unknown policy.
    """
    spec = placement.spec
    policy = spec.policy
    if policy not in _BASES:
        raise ValueError(f"unknown placement policy {policy!r}: must be one of {', '.join(get_args(PlacementPolicy))}")
    base_fn, basis = _BASES[policy]
    selectors = [from_label_selector(ls) for ls in spec.location_selectors]
    prev = frozenset(previous)

    seen: set[str] = set()
    targets: list[SyncTarget] = []
    for t in clusters:
        if t.metadata.name not in seen:
            seen.add(t.metadata.name)
            targets.append(t)

    rejected: list[CandidateResult] = []
    eligible: list[_Eligible] = []
    for t in targets:
        name = t.metadata.name
        why = _ineligible(t, selectors, spec.tolerate_unhealthy, prev)
        if why is not None:
            rejected.append(CandidateResult(name, False, 0.0, why[0], why[1]))
            continue
        score, msg = _adjusted(t, base_fn(t), name in prev, basis)
        location = tuple(t.metadata.labels.get(label, "") for label in LOCATION_LABELS)
        eligible.append(_Eligible(name, score, location, msg))

    n = len(eligible)
    if policy == "Spread":
        ranked = _spread_order(eligible)
        shown = [(n - 1 - i + min(max(e.score, 0.0), 1.0)) / n for i, e in enumerate(ranked)]
    else:
        ranked = sorted(eligible, key=_rank_key)
        shown = [e.score for e in ranked]

    want = n if spec.number_of_clusters is None else max(0, min(spec.number_of_clusters, n))
    candidates: list[CandidateResult] = []
    for i, (e, score) in enumerate(zip(ranked, shown, strict=True)):
        chosen = i < want
        msg = f"rank {i + 1} of {n}; {e.message}"
        if not chosen:
            msg += f"; numberOfClusters {spec.number_of_clusters} already filled"
        candidates.append(CandidateResult(e.name, chosen, _clamp(score), "Selected" if chosen else "NotChosen", msg))
    candidates.extend(sorted(rejected, key=lambda c: c.cluster))
    selected = [e.name for e in ranked[:want]]

    phase: PlacementPhase
    if not targets:
        phase, message = "Pending", "no clusters known"
    elif selected:
        phase, message = "Bound", f"selected {len(selected)} of {n} eligible clusters ({len(targets)} known)"
    else:
        counts = Counter(c.reason for c in rejected)
        detail = "".join(f", {v} {k}" for k, v in sorted(counts.items()))
        phase, message = "Unbound", f"no cluster selected among {len(targets)} known{detail}"
    return Decision(
        phase=phase, policy=policy, selected=selected, candidates=candidates, decided_at=now, message=message
    )


_RESULTS: dict[str, PlacementResult] = {"Bound": "bound", "Unbound": "unbound", "Pending": "pending"}


def to_message(
    decision: Decision, placement_name: str, latency_seconds: float, decided_by: str = "scheduler"
) -> PlacementDecision:
    """The ``tmc.placement`` message for a decision."""
    return PlacementDecision(
        placement=placement_name,
        timestamp=decision.decided_at,
        result=_RESULTS[decision.phase],
        selected=list(decision.selected),
        candidates=[
            CandidateScore(cluster=c.cluster, score=c.score, selected=c.selected, reason=c.reason)
            for c in decision.candidates
        ],
        latency_seconds=max(0.0, latency_seconds),
        decided_by=decided_by,
    )


def scheduled_condition(decision: Decision, now: float, previous: Sequence[Condition] = ()) -> Condition:
    """The ``Scheduled`` condition for a decision: True/Bound when clusters were chosen, else
    False/Unbound saying why the candidates were not chosen.  Its ``lastTransitionTime`` stays
    that of ``previous``'s Scheduled condition while its status does not change."""
    total = len(decision.candidates)
    chosen = len(decision.selected)
    message = f"selected {chosen} of {total} candidates"
    rejected = Counter(c.reason for c in decision.candidates if not c.selected and c.reason != "NotChosen")
    if not chosen and rejected:
        message += "; not chosen: " + ", ".join(f"{n} {r}" for r, n in sorted(rejected.items()))
    status = "True" if decision.phase == "Bound" else "False"
    before = next((c for c in previous if c.type == "Scheduled"), None)
    since = before.last_transition_time if before is not None and before.status == status else rfc3339(now)
    return Condition(
        type="Scheduled", status=status, reason=decision.phase, message=message, last_transition_time=since
    )


def to_status(
    decision: Decision, now: float, *, observed_generation: int = 0, previous: Sequence[Condition] = ()
) -> PlacementStatus:
    """The Placement status for a decision, with its ``Scheduled`` condition (other conditions in
    ``previous`` are kept)."""
    scores = {c.cluster: c.score for c in decision.candidates}
    conditions = [c for c in previous if c.type != "Scheduled"]
    conditions.append(scheduled_condition(decision, now, previous))
    return PlacementStatus(
        phase=decision.phase,
        selected_clusters=[
            SelectedCluster(cluster=name, score=scores.get(name, 0.0), reason="Selected") for name in decision.selected
        ],
        candidates=[
            StatusCandidate(cluster=c.cluster, selected=c.selected, score=c.score, reason=c.reason)
            for c in decision.candidates
        ],
        last_decision_time=rfc3339(now),
        observed_generation=observed_generation,
        conditions=conditions,
    )


# -- re-deciding: what the placement agent asks before it decides again ------------------------------

StatusChange = Literal["none", "status", "decision"]
"""How a new decision differs from a recorded status (see :func:`status_change`)."""


def needs_decision(placement: Placement) -> bool:
    """The spec is new or changed since the last decision (or no decision was ever recorded)."""
    return (
        placement.metadata.generation != placement.status.observed_generation or not placement.status.last_decision_time
    )


def eligibility_facts(target: SyncTarget) -> tuple[object, ...]:
    """What about a cluster can change which clusters are chosen: labels, cordon, health, connection,
    pause and fullness.  Load (``used``), heartbeat times, queue depth and error ratio are left out:
    they move with every heartbeat and only shift scores."""
    st = target.status
    labels = tuple(sorted(target.metadata.labels.items()))
    full = _full_resource(target) is not None
    return labels, target.spec.unschedulable, st.health, st.connected, st.sync_paused, full


def fleet_change_matters(before: SyncTarget | None, after: SyncTarget | None) -> bool:
    """A cluster appeared, vanished, or changed one of its :func:`eligibility_facts`."""
    if before is None or after is None:
        return before is not after
    return eligibility_facts(before) != eligibility_facts(after)


def touches(selectors: Sequence[Selector], before: SyncTarget | None, after: SyncTarget | None) -> bool:
    """Whether a changed cluster can concern a placement with these (parsed) locationSelectors: it
    matched one of them before or after the change (an empty list matches every cluster)."""
    if not selectors:
        return True
    return any(t is not None and any(s.matches(t.metadata.labels) for s in selectors) for t in (before, after))


def status_change(status: PlacementStatus, decision: Decision) -> StatusChange:
    """``"decision"`` when the phase or the set of selected clusters differs (worth an event);
    ``"status"`` when only candidates came or went or changed reason (refresh the status quietly);
    ``"none"`` when at most scores or ranks moved."""
    if status.phase != decision.phase or {s.cluster for s in status.selected_clusters} != set(decision.selected):
        return "decision"
    before = {c.cluster: c.reason for c in status.candidates}
    after = {c.cluster: c.reason for c in decision.candidates}
    return "none" if before == after else "status"


def fleet_pass_at(last_pass: float | None, now: float, interval: float) -> float:
    """When the next fleet re-decision may run: at once after a quiet spell, else ``interval`` after
    the last one, so a burst of changes costs one pass at its start and one per interval after."""
    return now if last_pass is None else max(now, last_pass + interval)
