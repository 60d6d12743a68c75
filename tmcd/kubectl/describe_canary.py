"""``kubectl tmc describe canary``: spec, status, steps, analysis evidence and recent events.

Imported by :mod:`tmcd.kubectl.describe` only when a canary is described.  Rendering is a
pure function of the object, its events and ``now``; :func:`recent_events` reads the
rollout's canary and rollback events from the TMC_EVENTS stream with
:func:`tmcd.kubectl.events.recent_events`, which also renders the Events table.
"""

from __future__ import annotations

import json
from typing import Any

from tmcd.kubectl.client import Client
from tmcd.kubectl.columns import step_label
from tmcd.kubectl.describe import _conditions, _field, _header, _indent, _selector, _when
from tmcd.kubectl.events import STREAM_EVENTS, RecentEvents, Source, event_age, events_section
from tmcd.kubectl.events import recent_events as read_events
from tmcd.kubectl.output import NONE, cell, human_duration, table

__all__ = ["RecentEvents", "canary_sources", "describe_canary", "evidence_value", "recent_events", "step_text"]

_SUB = 22
_WARNING_PHASES = ("Degraded", "RollingBack", "RolledBack")
_REASONS = {"phase": "PhaseChanged", "step": "StepChanged", "analysis": "AnalysisResult", "decision": "Decision"}


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _sub(label: str, value: Any) -> str:
    return "  " + _field(label, value, _SUB)


def seconds(value: Any) -> str:
    """A duration in seconds as kubectl prints ages (``30s``, ``5m``); fractions as ``0.5s``."""
    v = float(value)
    return human_duration(v) if v >= 1 and v == int(v) else f"{v:g}s"


def _args(args: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(args.items()))


def step_text(step: dict[str, Any]) -> str:
    """One step as a line: ``setWeight: 10%``, ``pause: until promoted``, ..."""
    parts = []
    if "setClusters" in step:
        sc = _dict(step["setClusters"])
        if sc.get("count") is not None:
            n = int(sc["count"])
            parts.append(f"setClusters: {n} cluster{'' if n == 1 else 's'}")
        elif sc.get("percent") is not None:
            parts.append(f"setClusters: {sc['percent']}% of eligible clusters")
        else:
            parts.append(f"setClusters: {NONE}")
    if step.get("setWeight") is not None:
        parts.append(f"setWeight: {step['setWeight']}%")
    if "pause" in step:
        duration = _dict(step["pause"]).get("duration")
        parts.append("pause: until promoted" if duration is None else f"pause: {seconds(duration)}")
    if "analysis" in step:
        a = _dict(step["analysis"])
        text = f"analysis: {cell(a.get('templates'))}"
        if a.get("intervals") is not None:
            n = int(a["intervals"])
            text += f", {n} interval{'' if n == 1 else 's'}"
        if a.get("interval") is not None:
            text += f" every {seconds(a['interval'])}"
        if a.get("intervals") is None and a.get("interval") is None:
            text += " (each metric's interval and count)"
        if a.get("args"):
            text += f", args {_args(_dict(a['args']))}"
        parts.append(text)
    return "; ".join(parts) or "(no action)"


def _steps(steps: list[Any], current: int | None) -> list[str]:
    """Every step, numbered from 1 as the STEP column and the status message count them."""
    if not steps:
        return [f"Steps:  {NONE}"]
    width = len(str(len(steps)))
    lines = ["Steps:"]
    for i, step in enumerate(steps):
        mark, note = ("→", "  (current)") if i == current else (" ", "")
        lines.append(f"  {mark} {i + 1:>{width}}  {step_text(_dict(step))}{note}")
    return lines


def _background(spec: dict[str, Any]) -> str:
    bg = _dict(spec.get("analysis"))
    if not bg:
        return f"Background Analysis:  {NONE}"
    text = f"{cell(bg.get('templates'))} from step {int(bg.get('startStep') or 0) + 1}"
    if bg.get("args"):
        text += f", args {_args(_dict(bg['args']))}"
    return f"Background Analysis:  {text}"


def _spec(spec: dict[str, Any]) -> list[str]:
    ref, tr = _dict(spec.get("workloadRef")), _dict(spec.get("trafficRouting"))
    workload = None
    if ref.get("name"):
        workload = f"{ref.get('kind') or 'Deployment'}/{ref['name']} ({ref.get('apiVersion') or 'apps/v1'})"
    sel = spec.get("clusterSelector")
    # only for a rollout that sets the canary image on its Deployments
    image = (
        [_sub("Canary Image", f"{ref['canaryImage']} (container {ref.get('container')})")]
        if ref.get("canaryImage")
        else []
    )
    return [
        "Spec:",
        _sub("Workload", workload),
        *image,
        _sub("Stable Version", spec.get("stableVersion")),
        _sub("Canary Version", spec.get("canaryVersion")),
        _sub("Placement Ref", spec.get("placementRef")),
        _sub("Cluster Selector", _selector(sel) if isinstance(sel, dict) else None),
        _sub("Traffic Router", tr.get("router")),
        _sub("Traffic Route", tr.get("route")),
        # omitted when they are the defaults (CanaryRolloutSpec)
        _sub("Progress Deadline", seconds(spec.get("progressDeadlineSeconds") or 600.0)),
        _sub("Revision History", int(spec.get("revisionHistoryLimit", 10) or 0)),
    ]


def _current(st: dict[str, Any], steps: list[Any]) -> int | None:
    """The step being executed: none before the rollout starts or after it succeeded."""
    phase = st.get("phase") or "Pending"
    idx = st.get("currentStepIndex")
    if phase in ("Pending", "Succeeded") or not isinstance(idx, int) or not 0 <= idx < len(steps):
        return None
    return idx


def _applied(st: dict[str, Any]) -> str | None:
    """The weight the router reports, and whether it is the one set."""
    applied, current = st.get("appliedWeight"), int(st.get("currentWeight") or 0)
    if not isinstance(applied, int) or isinstance(applied, bool):
        return None if st.get("phase") in (None, "Pending") else "<unknown> (the router has not reported)"
    return f"{applied}%" if applied == current else f"{applied}% ({current}% set, not yet applied)"


def _status(obj: dict[str, Any], steps: list[Any], now: float) -> list[str]:
    st, meta = _dict(obj.get("status")), _dict(obj.get("metadata"))
    observed, generation = int(st.get("observedGeneration") or 0), int(meta.get("generation") or 0)
    paused = str(st.get("pauseStartTime") or "")
    return [
        "Status:",
        _sub("Phase", st.get("phase") or "Pending"),
        _sub("Message", st.get("message")),
        _sub("Step", step_label(st, len(steps))),
        _sub("Step Started", _when(str(st.get("stepStartTime") or ""), now)),
        _sub("Last Progress", _when(str(st.get("progressTime") or ""), now)),
        _sub("Current Weight", f"{int(st.get('currentWeight') or 0)}%"),
        _sub("Applied Weight", _applied(st)),
        _sub("Stable Version", st.get("stableVersion")),
        _sub("Canary Version", st.get("canaryVersion")),
        _sub("Canary Placement", st.get("canaryPlacement")),
        _sub("Canary Clusters", _list(st.get("canaryClusters"))),
        _sub("Stable Revision", st.get("stableRevision") or None),
        _sub("Canary Revision", st.get("canaryRevision") or None),
        _sub("Observed Generation", f"{observed} (generation {generation})" if generation else observed or None),
        _sub("Paused Since", _when(paused, now)),
    ]


def _images(spec: dict[str, Any], st: dict[str, Any]) -> list[str]:
    """``status.workloadImages``: per cluster, the image tmcd set and the one it replaced (nothing
    at all for a rollout that does not set images)."""
    recs = [_dict(x) for x in _list(st.get("workloadImages"))]
    if not recs:
        return [f"Workload Images:  {NONE}"] if _dict(spec.get("workloadRef")).get("canaryImage") else []
    rows = [
        [
            cell(x.get("cluster")),
            cell(f"{x.get('deployment')}/{x.get('container')}"),
            cell(x.get("image")),
            cell(x.get("previous")),
            cell(x.get("state") or "Canary") + (f": {x['message']}" if x.get("message") else ""),
        ]
        for x in recs
    ]
    headers = ["CLUSTER", "DEPLOYMENT/CONTAINER", "IMAGE", "PREVIOUS", "STATE"]
    return ["Workload Images:", *_indent(table(headers, rows))]


def evidence_value(value: Any) -> str:
    """A plain string as is; anything else (numbers, lists, maps) as compact JSON with sorted keys."""
    if isinstance(value, str) and value and "\n" not in value:
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _evidence(evidence: dict[str, Any], pad: str) -> list[str]:
    if not evidence:
        return [f"{pad}Evidence:  {NONE}"]
    width = max(len(str(k)) for k in evidence) + 3
    lines = [f"{pad}Evidence:"]
    for key in sorted(evidence, key=str):
        lines.append(f"{pad}  {str(key) + ':':<{width}}{evidence_value(evidence[key])}")
    return lines


def _metric(m: dict[str, Any]) -> list[str]:
    pad = " " * 8
    counts = ", ".join(f"{int(m.get(k) or 0)} {k}" for k in ("successful", "failed", "inconclusive", "error"))
    if m.get("consecutiveError"):
        counts += f", {int(m['consecutiveError'])} consecutive errors"
    lines = [
        f"      {cell(m.get('name'))}:",
        pad + _field("Phase", m.get("phase") or "Pending", 15),
        pad + _field("Value", m.get("value"), 15),
        pad + _field("Measurements", f"{int(m.get('count') or 0)} ({counts})", 15),
    ]
    if m.get("message"):
        lines.append(pad + _field("Message", m["message"], 15))
    return lines + _evidence(_dict(m.get("evidence")), pad)


def _runs(runs: list[Any], now: float) -> list[str]:
    if not runs:
        return [f"Analysis Runs:  {NONE}"]
    lines = ["Analysis Runs:"]
    for r in map(_dict, runs):
        step = r.get("stepIndex")
        where = "background" if not isinstance(step, int) else f"step {step + 1}"
        metrics = _list(r.get("metrics"))
        lines += [
            f"  {cell(r.get('template'))} ({where}):",
            "    " + _field("Phase", r.get("phase") or "Pending", 10),
            "    " + _field("Started", _when(str(r.get("startTime") or ""), now), 10),
            "    " + _field("Ended", _when(str(r.get("endTime") or ""), now), 10),
            "    " + _field("Message", r.get("message"), 10),
            "    Metrics:" if metrics else "    " + _field("Metrics", None, 10),
        ]
        for m in metrics:
            lines += _metric(_dict(m))
    return lines


# --- events -----------------------------------------------------------------------------------


def _event_row(channel: str, ev: dict[str, Any], now: float) -> list[str]:
    when = event_age(ev, now)
    if channel == "rollback":
        stage = str(ev.get("stage") or "")
        message = str(ev.get("reason") or "")
        if ev.get("to_revision"):
            message = f"{message} (revision {ev.get('from_revision') or 0} → {ev['to_revision']})".strip()
        return ["Warning", "Rollback" + stage.capitalize(), when, "rollback-engine", cell(message)]
    kind, phase = str(ev.get("type") or ""), str(ev.get("phase") or "")
    message = str(ev.get("message") or "")
    if not message:
        step = ev.get("step_index", -1)
        number = f"step {step + 1}" if isinstance(step, int) and step >= 0 else ""
        message = ", ".join(p for p in (f"phase {phase}" if phase else "", number) if p)
    warn = phase in _WARNING_PHASES
    reason = _REASONS.get(kind, kind.capitalize() or "Canary")
    return ["Warning" if warn else "Normal", reason, when, "canary-controller", cell(message)]


def canary_sources(namespace: str, name: str) -> list[Source]:
    """``tmc.canary.<namespace>.<name>`` and ``tmc.rollback.<namespace>.<name>`` (TMC_EVENTS)."""
    return [
        Source(STREAM_EVENTS, f"tmc.canary.{namespace}.{name}", "canary"),
        Source(STREAM_EVENTS, f"tmc.rollback.{namespace}.{name}", "rollback"),
    ]


def recent_events(client: Client, namespace: str, name: str, created: str) -> RecentEvents:
    """The rollout's canary and rollback events from TMC_EVENTS: up to
    :data:`~tmcd.kubectl.events.EVENT_LIMIT` of those in the hour before the newest one, none
    from before ``created`` (an earlier rollout of the same name).  Over HTTP there is no
    event API: the result says so."""
    return read_events(client, canary_sources(namespace, name), created)


def _history_command(obj: dict[str, Any]) -> str:
    meta = _dict(obj.get("metadata"))
    ns = f" -n {meta['namespace']}" if meta.get("namespace") else ""
    return f"kubectl tmc history {meta.get('name') or 'NAME'}{ns}"


def describe_canary(
    obj: dict[str, Any],
    events: RecentEvents,
    now: float,
    revisions: list[dict[str, Any]] | None = None,
    revisions_problem: str = "",
) -> str:
    """A CanaryRollout: spec summary, status, its last rollback and newest revisions (given newest
    first), every step (the current one marked), analysis runs with each metric's evidence,
    conditions and recent events."""
    from tmcd.kubectl.describe_rollback import revisions_section, rollback_section

    spec, st = _dict(obj.get("spec")), _dict(obj.get("status"))
    steps = _list(spec.get("steps"))
    lines = [
        *_header(obj, now),
        *_spec(spec),
        *_status(obj, steps, now),
        *_images(spec, st),
        *rollback_section(st, now),
        *revisions_section(revisions, now, revisions_problem, _history_command(obj)),
        *_steps(steps, _current(st, steps)),
        _background(spec),
        *_runs(_list(st.get("analysisRuns")), now),
        *_conditions(_list(st.get("conditions")), now),
        *events_section(events, now, _event_row),
    ]
    return "\n".join(lines)
