"""The canary detail (Enter on a rollout in view 4): an Argo-style step tree, the canary weight over
time, the analysis runs with each metric's evidence, and the rollback record."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from tmcd.resources.canary import AnalysisRunSummary, CanaryRollout, MetricResult, RollbackStatus
from tmcd.tui.canaries import (
    StepState,
    WeightPoint,
    canary_row,
    chart_window,
    evidence_lines,
    rollback_stages,
    step_tree,
    weight_chart,
)
from tmcd.tui.models import human_age, parse_time

PHASE_STYLE = {
    "Pending": "dim",
    "Progressing": "cyan",
    "Paused": "yellow",
    "Promoting": "blue",
    "Succeeded": "green",
    "RollingBack": "bold red",
    "RolledBack": "red",
    "Degraded": "bold magenta",
}
ANALYSIS_STYLE = {
    "Pending": "dim",
    "Running": "cyan",
    "Successful": "green",
    "Failed": "bold red",
    "Inconclusive": "yellow",
    "Error": "red",
}
MARK: dict[StepState, tuple[str, str]] = {
    "done": ("✔", "green"),
    "current": ("▶", "bold yellow"),
    "pending": ("○", "dim"),
    "failed": ("✖", "bold red"),
}
"""Step state -> symbol and colour (the symbol alone tells them apart without colour)."""
CHART_HEIGHT = 5
AXIS = 6
"""Columns left of the chart for the y labels."""


def phase_text(phase: str) -> Text:
    """A rollout phase in its colour (the word is always there: NO_COLOR loses nothing)."""
    return Text(phase, PHASE_STYLE.get(phase, ""))


def _ago(stamp: str, now: float) -> str:
    t = parse_time(stamp)
    return "" if t is None else f"{human_age(now - t)} ago"


def _heading(ro: CanaryRollout, now: float) -> Text:
    r = canary_row(ro, now)
    st = ro.status
    applied = "-" if r.applied_weight is None else f"{r.applied_weight}%"
    text = Text.assemble((r.ref, "bold"), "  ", phase_text(r.phase), f"  step {r.step}")
    text.append(f"  weight {r.weight}% (applied {applied})  age {human_age(r.age)}\n")
    stable, canary = st.stable_version or ro.spec.stable_version, st.canary_version or ro.spec.canary_version
    text.append(f"{stable} → {canary}   clusters: {', '.join(r.clusters) or '<none>'}\n")
    why = st.pause_reason or st.abort_reason
    if st.message or why:
        text.append(f"{st.message}{f' ({why})' if why else ''}\n", "italic")
    return text


def _steps(ro: CanaryRollout) -> Text:
    text = Text("\nSteps\n", "bold underline")
    lines = step_tree(ro)
    if not lines:
        text.append("  (no steps: straight to promotion)\n", "dim")
    for line in lines:
        mark, style = MARK[line.state]
        text.append(f"  {mark} ", style)
        text.append(f"{line.number:>2}  {line.text}", "bold" if line.state == "current" else "")
        if line.state in ("current", "failed"):
            text.append("  ◀ " + ("current" if line.state == "current" else "rolled back here"), style)
        text.append("\n")
    return text


def chart(points: Sequence[WeightPoint], now: float, width: int) -> Text:
    """The canary weight over time (as set), with 0/50/100 % marks and the time span under it."""
    text = Text("\nCanary weight over time\n", "bold underline")
    cols = max(10, width - AXIS - 2)
    rows = weight_chart(points, now, cols, CHART_HEIGHT)
    if not rows:
        return text.append("  no weight seen yet\n", "dim")
    labels = {0: "100%", CHART_HEIGHT // 2: "50%", CHART_HEIGHT - 1: "0%"}
    for i, row in enumerate(rows):
        text.append(f"{labels.get(i, ''):>{AXIS - 2}} ┤", "dim")
        text.append(row + "\n", "cyan")
    start, end = chart_window(points, now)
    left = f"-{human_age(end - start)}"
    text.append(" " * (AXIS - 1) + "└" + "─" * cols + "\n", "dim")
    text.append(" " * AXIS + left + "now".rjust(cols - len(left)) + "\n", "dim")
    last = points[-1]
    applied = "-" if last.applied is None else f"{last.applied}%"
    text.append(f"  now {last.weight}% set, {applied} applied; {len(points)} change(s) seen\n")
    return text


def _metric(m: MetricResult, now: float) -> Text:
    text = Text("    ")
    text.append(m.name, "bold")
    text.append("  ")
    text.append(m.phase, ANALYSIS_STYLE.get(m.phase, ""))
    if m.value is not None:
        text.append(f"  value {m.value:.4g}")
    text.append(
        f"  measured {m.count} (ok {m.successful}, failed {m.failed}, inconclusive {m.inconclusive}, error {m.error})"
    )
    when = _ago(m.measured_at, now)
    text.append(f"  last {when}\n" if when else "\n")
    if m.message:
        text.append(f"      {m.message}\n", "italic")
    for line in evidence_lines(m.evidence):
        text.append(f"      {line}\n", "dim" if not line.startswith(("verdict", "reason")) else "")
    return text


def _analysis(runs: Sequence[AnalysisRunSummary], now: float) -> Text:
    text = Text("\nAnalysis\n", "bold underline")
    if not runs:
        return text.append("  no analysis run yet\n", "dim")
    for run in runs:
        where = "background" if run.step_index is None else f"step {run.step_index + 1}"
        text.append(f"  {run.template} ({where})  ")
        text.append(run.phase, ANALYSIS_STYLE.get(run.phase, ""))
        started = _ago(run.start_time, now)
        text.append(f"  started {started}" if started else "")
        text.append(f"  {run.message}\n" if run.message else "\n")
        for m in run.metrics:
            text.append_text(_metric(m, now))
    return text


def _rollback(rb: RollbackStatus, now: float) -> Text:
    text = Text("\nRollback\n", "bold underline")
    text.append("  ")
    text.append(rb.phase, "green" if rb.phase == "Completed" else "bold red")
    text.append(f"  trigger {rb.trigger or '-'}")
    if rb.reason:
        text.append(f": {rb.reason}")
    if rb.to_revision:
        text.append(f"  revision {rb.from_revision} → {rb.to_revision}")
    text.append("\n")
    for stage, state, stamp in rollback_stages(rb):
        mark, style = MARK[state]
        text.append(f"  {mark} ", style)
        when = _ago(stamp, now)
        text.append(f"{stage}{f'  {when}' if when else ''}\n")
    if rb.clusters:
        cells = [
            f"{c.cluster} {c.state}{'' if c.canary_weight is None else f' {c.canary_weight}%'}" for c in rb.clusters
        ]
        text.append(f"  clusters: {', '.join(cells)}\n")
    if rb.message:
        text.append(f"  {rb.message}\n", "italic")
    return text


def detail_text(ro: CanaryRollout, points: Sequence[WeightPoint], now: float, width: int) -> Text:
    """Everything the detail shows about one rollout at ``now``, for a screen ``width`` columns wide."""
    text = _heading(ro, now)
    text.append_text(_steps(ro))
    text.append_text(chart(points, now, width))
    text.append_text(_analysis(ro.status.analysis_runs, now))
    if ro.status.rollback is not None:
        text.append_text(_rollback(ro.status.rollback, now))
    return text


class CanaryDetail(VerticalScroll):
    """The detail of one rollout, scrollable (arrows, PgUp/PgDn, Home/End); hidden until opened."""

    DEFAULT_CSS = """
    CanaryDetail { display: none; height: 1fr; padding: 0 1; }
    CanaryDetail.-shown { display: block; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="detail-body")

    def show(self, ref: str, ro: CanaryRollout | None, points: Sequence[WeightPoint], now: float) -> None:
        """Redraw for the rollout ``ref`` (None: it was deleted)."""
        body = self.query_one("#detail-body", Static)
        if ro is None:
            body.update(Text(f"{ref}: deleted (Esc for the list)", "yellow"))
            return
        body.update(detail_text(ro, points, now, self.screen.size.width - 2))
