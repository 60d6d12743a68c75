"""The dashboard's canary rows, from the CanaryRollouts in KV.  Pure: no I/O, time passed in."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tmcd.resources.canary import CanaryRollout, CanaryStep, RollbackStatus
from tmcd.tui.models import RowFilter, next_of, parse_time, sort_by


@dataclass(frozen=True, slots=True)
class CanaryRow:
    """One rollout as the canaries view lists it."""

    namespace: str
    name: str
    phase: str
    step: str
    """1-based as ``kubectl tmc get canaries`` prints it: ``3/7``; ``0/7`` before it starts."""
    weight: int
    """The canary weight the controller set."""
    applied_weight: int | None
    """What the traffic router reports as applied (None until it reports)."""
    clusters: tuple[str, ...]
    age: float | None
    message: str
    labels: Mapping[str, str] = field(default_factory=dict)
    """The rollout's labels (for ``-l key=value`` in the filter)."""

    @property
    def ref(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


def step_label(phase: str, index: int, total: int) -> str:
    """The current step, 1-based (``kubectl tmc`` and the status message say it the same way)."""
    if phase == "Pending" or index < 0 or total == 0:
        return f"0/{total}"
    if phase == "Succeeded":
        return f"{total}/{total}"
    return f"{min(index + 1, total)}/{total}"


def canary_row(ro: CanaryRollout, now: float) -> CanaryRow:
    """The row of one rollout at ``now``."""
    st = ro.status
    created = parse_time(ro.metadata.creation_timestamp)
    return CanaryRow(
        namespace=ro.metadata.namespace,
        name=ro.metadata.name,
        phase=st.phase,
        step=step_label(st.phase, st.current_step_index, len(ro.spec.steps)),
        weight=st.current_weight,
        applied_weight=st.applied_weight,
        clusters=tuple(st.canary_clusters),
        age=None if created is None else max(0.0, now - created),
        message=st.message,
        labels=dict(ro.metadata.labels),
    )


def canary_rows(rollouts: Iterable[CanaryRollout], now: float) -> list[CanaryRow]:
    """Rows by namespace and name."""
    return sorted((canary_row(r, now) for r in rollouts), key=lambda r: (r.namespace, r.name))


# --- sorting and filtering ------------------------------------------------------------------------------------

_PHASE_RANK = {
    "RollingBack": 0,
    "Degraded": 1,
    "RolledBack": 2,
    "Paused": 3,
    "Progressing": 4,
    "Promoting": 5,
    "Pending": 6,
    "Succeeded": 7,
}
"""Bad news first when sorting by phase."""


def _progress(step: str) -> float:
    done, _, total = step.partition("/")
    try:
        return int(done) / int(total) if int(total) else 0.0
    except ValueError:
        return 0.0


CANARY_SORT_KEYS: dict[str, Callable[[CanaryRow], object]] = {
    "name": lambda r: (r.namespace, r.name),
    "phase": lambda r: _PHASE_RANK.get(r.phase, len(_PHASE_RANK)),
    "step": lambda r: _progress(r.step),
    "weight": lambda r: r.weight,
    "applied": lambda r: r.applied_weight,
    "clusters": lambda r: len(r.clusters),
    "age": lambda r: r.age,
}
"""Canaries column -> sort key (in the order the columns are shown)."""
CANARY_SORT_COLUMNS = tuple(CANARY_SORT_KEYS)


def sort_canaries(rows: Iterable[CanaryRow], column: str, descending: bool = False) -> list[CanaryRow]:
    """Rows sorted by ``column`` (ties by namespace/name); unknown values (None) last in either direction."""
    return sort_by(rows, CANARY_SORT_KEYS[column], lambda r: r.ref, descending)


def next_canary_column(column: str) -> str:
    """The column after ``column`` (``s`` cycles through them)."""
    return next_of(CANARY_SORT_COLUMNS, column)


def filter_canaries(rows: Iterable[CanaryRow], flt: RowFilter) -> list[CanaryRow]:
    """The rows ``flt`` (the fleet's filter syntax) lets through: regex on namespace/name, phase, clusters and
    message, ``!`` inverts, ``-l key=value`` on the rollout's labels."""
    out = []
    for r in rows:
        if not flt.selector.matches(r.labels):
            continue
        if flt.pattern is not None:
            hit = flt.pattern.search(f"{r.ref} {r.phase} {' '.join(r.clusters)} {r.message}") is not None
            if hit == flt.invert:
                continue
        out.append(r)
    return out


# --- the weight over time -------------------------------------------------------------------------------------

MAX_POINTS = 120
"""Weight changes kept per rollout (the oldest go first)."""
MIN_SPAN = 60.0
"""The chart covers at least this many seconds."""
_BARS = " ▁▂▃▄▅▆▇█"


@dataclass(frozen=True, slots=True)
class WeightPoint:
    """The canary weight from ``at`` on: as set, and as the router reports it applied."""

    at: float
    weight: int
    applied: int | None


def status_time(ro: CanaryRollout) -> float | None:
    """When the status last changed, as the status itself says (the latest of its timestamps);
    the creation time when it has none.  The dashboard has no clock of its own in the state."""
    st = ro.status
    texts = [st.progress_time, st.step_start_time, st.pause_start_time, st.start_time]
    if st.rollback is not None:
        texts += [st.rollback.start_time, st.rollback.end_time, *st.rollback.stage_times.values()]
    times = [t for t in map(parse_time, texts) if t is not None]
    return max(times) if times else parse_time(ro.metadata.creation_timestamp)


class WeightHistory:
    """Per rollout (``namespace/name``), the last :data:`MAX_POINTS` weight changes.  Fed every status
    update (KV change); only a change of the set or applied weight adds a point."""

    def __init__(self, limit: int = MAX_POINTS) -> None:
        self.limit = limit
        self._points: dict[str, deque[WeightPoint]] = {}

    def record(self, ro: CanaryRollout) -> bool:
        """Note the rollout's weights; True when they changed (a point was added)."""
        at = status_time(ro)
        if at is None:
            return False
        ref = f"{ro.metadata.namespace}/{ro.metadata.name}"
        points = self._points.get(ref)
        if points is None:
            points = self._points[ref] = deque(maxlen=self.limit)
        weight, applied = ro.status.current_weight, ro.status.applied_weight
        if points and (points[-1].weight, points[-1].applied) == (weight, applied):
            return False
        # a status time older than the last point (a retry resets some of them) must not go back
        points.append(WeightPoint(max(at, points[-1].at) if points else at, weight, applied))
        return True

    def forget(self, ref: str) -> None:
        """The rollout was deleted."""
        self._points.pop(ref, None)

    def points(self, ref: str) -> list[WeightPoint]:
        """Oldest first."""
        return list(self._points.get(ref, ()))

    def __len__(self) -> int:
        return len(self._points)


def weight_at(points: Sequence[WeightPoint], t: float) -> int | None:
    """The set weight at ``t`` (None before the first point)."""
    w = None
    for p in points:
        if p.at > t:
            break
        w = p.weight
    return w


def chart_window(points: Sequence[WeightPoint], now: float) -> tuple[float, float]:
    """The chart's (start, end): from the first point (at least :data:`MIN_SPAN` back) to ``now``."""
    end = max(now, points[-1].at) if points else now
    return (min(points[0].at, end - MIN_SPAN) if points else end - MIN_SPAN), end


def weight_chart(points: Sequence[WeightPoint], now: float, width: int, height: int = 5) -> list[str]:
    """A bar chart of the set weight (0-100 %) from the first point to ``now``, ``width`` columns by
    ``height`` rows, top row first; blank before the first point.  No points: no lines."""
    if not points or width < 1 or height < 1:
        return []
    start, end = chart_window(points, now)
    step = (end - start) / width
    levels = [weight_at(points, start + (c + 1) * step) for c in range(width)]
    rows = []
    for r in range(height - 1, -1, -1):
        line = []
        for w in levels:
            fill = 0.0 if w is None else min(1.0, max(0.0, w / 100 * height - r))
            line.append(_BARS[round(fill * 8)])
        rows.append("".join(line))
    return rows


# --- the step tree ---------------------------------------------------------------------------------------------

StepState = Literal["done", "current", "pending", "failed"]


@dataclass(frozen=True, slots=True)
class StepLine:
    """One step of the tree, numbered from 1."""

    number: int
    text: str
    state: StepState


def step_text(step: CanaryStep) -> str:
    """One step as a line: ``setWeight: 10%``, ``pause: until promoted`` (as ``kubectl tmc describe``)."""
    parts = []
    if step.set_clusters is not None:
        sc = step.set_clusters
        if sc.count is not None:
            parts.append(f"setClusters: {sc.count} cluster{'' if sc.count == 1 else 's'}")
        else:
            parts.append(f"setClusters: {sc.percent}% of eligible clusters")
    if step.set_weight is not None:
        parts.append(f"setWeight: {step.set_weight}%")
    if step.pause is not None:
        d = step.pause.duration
        parts.append("pause: until promoted" if d is None else f"pause: {d:g}s")
    if step.analysis is not None:
        a = step.analysis
        text = f"analysis: {', '.join(a.templates)}"
        if a.intervals is not None:
            text += f", {a.intervals} interval{'' if a.intervals == 1 else 's'}"
        if a.interval is not None:
            text += f" every {a.interval:g}s"
        parts.append(text)
    return "; ".join(parts) or "(no action)"


def step_tree(ro: CanaryRollout) -> list[StepLine]:
    """Every step, 1-based: done ones before the current one, the current one (failed when the rollout
    is rolling or rolled back from it), the rest pending; all done once promoting or succeeded."""
    phase, i = ro.status.phase, ro.status.current_step_index
    lines = []
    for n, step in enumerate(ro.spec.steps):
        state: StepState
        if phase in ("Promoting", "Succeeded") or (phase not in ("Pending", "Degraded") and n < i):
            state = "done"
        elif phase in ("Pending", "Degraded") or n > i:
            state = "pending"
        else:
            state = "failed" if phase in ("RollingBack", "RolledBack") else "current"
        lines.append(StepLine(n + 1, step_text(step), state))
    return lines


# --- analysis evidence and the rollback record -----------------------------------------------------------------

_EVIDENCE_ORDER = (
    "verdict",
    "reason",
    "value",
    "statistic",
    "pValue",
    "estimate",
    "difference",
    "interval",
    "threshold",
    "tolerance",
    "confidence",
    "direction",
    "measure",
    "condition",
    "test",
    "method",
    "why",
    "tracks",
    "sequential",
)


def compact(value: Any, depth: int = 0) -> str:
    """A JSON value in one short line: numbers to 4 significant digits, lists ``[a, b]``, objects ``k v, ...``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    if value is None:
        return "-"
    if isinstance(value, list):
        return "[" + ", ".join(compact(v, depth + 1) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k} {compact(v, depth + 1)}" for k, v in value.items())
        return f"{{{inner}}}" if depth else inner
    return str(value)


def evidence_lines(evidence: Mapping[str, Any]) -> list[str]:
    """A measurement's evidence as ``key: value`` lines, the verdict and its numbers first, then the rest
    (one line per track)."""
    lines = []
    keys = [k for k in _EVIDENCE_ORDER if k in evidence] + sorted(k for k in evidence if k not in _EVIDENCE_ORDER)
    for k in keys:
        v = evidence[k]
        if k == "tracks" and isinstance(v, dict):
            lines += [f"{track}: {compact(t)}" for track, t in v.items()]
        else:
            lines.append(f"{k}: {compact(v)}")
    return lines


ROLLBACK_STAGES = ("Reversing", "Restoring", "CleaningUp", "Completed")


def rollback_stages(rb: RollbackStatus) -> list[tuple[str, StepState, str]]:
    """Each stage of a rollback: (stage, state, when it was reached as RFC 3339 or "")."""
    reached = ROLLBACK_STAGES.index(rb.phase) if rb.phase in ROLLBACK_STAGES else -1
    if rb.phase == "Failed":
        reached = max((ROLLBACK_STAGES.index(s) for s in rb.stage_times if s in ROLLBACK_STAGES), default=0)
    out: list[tuple[str, StepState, str]] = []
    for n, stage in enumerate(ROLLBACK_STAGES):
        state: StepState
        if n < reached or rb.phase == "Completed":
            state = "done"
        elif n == reached:
            state = "failed" if rb.phase == "Failed" else "current"
        else:
            state = "pending"
        out.append((stage, state, rb.stage_times.get(stage, "")))
    return out
