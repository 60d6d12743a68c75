"""``kubectl tmc describe``."""

from __future__ import annotations

import time
from typing import Any

import click

from tmcd.kubectl.apply import LAST_APPLIED
from tmcd.kubectl.columns import memory
from tmcd.kubectl.common import CONTEXT_SETTINGS, client, global_options, kind_arg, namespace_for
from tmcd.kubectl.output import NONE, age, cell, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tmcd.kubectl.events import RecentEvents


def _field(label: str, value: Any, width: int = 20) -> str:
    return f"{label + ':':<{width}}{cell(value)}"


def _when(ts: str, now: float) -> str:
    return f"{ts} ({age(ts, now)} ago)" if ts else NONE


def _mapping(label: str, data: dict[str, Any], width: int = 20) -> list[str]:
    if not data:
        return [_field(label, None, width)]
    lines = []
    for i, (k, v) in enumerate(sorted(data.items())):
        lines.append(f"{(label + ':') if i == 0 else '':<{width}}{k}={v}")
    return lines


def _quantities(label: str, data: dict[str, Any]) -> list[str]:
    if not data:
        return [f"{label}:  {NONE}"]
    width = max(len(k) for k in data) + 2
    lines = [f"{label}:"]
    for k, v in data.items():
        text = memory(str(v)) if k == "memory" else str(v)
        lines.append(f"  {k + ':':<{width}}{text}")
    return lines


def _indent(text: str) -> list[str]:
    return ["  " + line for line in text.splitlines()]


def _conditions(conds: list[dict[str, Any]], now: float) -> list[str]:
    if not conds:
        return [f"Conditions:  {NONE}"]
    rows = [
        [
            cell(c.get("type")),
            cell(c.get("status")),
            cell(c.get("reason")),
            cell(c.get("message")),
            age(str(c.get("lastTransitionTime") or ""), now),
        ]
        for c in conds
    ]
    return ["Conditions:", *_indent(table(["TYPE", "STATUS", "REASON", "MESSAGE", "AGE"], rows))]


def _header(obj: dict[str, Any], now: float) -> list[str]:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return [
        _field("Name", meta.get("name")),
        *([_field("Namespace", ns)] if ns else []),
        *_mapping("Labels", meta.get("labels") or {}),
        # as kubectl describe, without apply's record of the last manifest
        *_mapping("Annotations", {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}),
        _field("API Version", obj.get("apiVersion")),
        _field("Kind", obj.get("kind")),
        _field("Created", _when(str(meta.get("creationTimestamp") or ""), now)),
        _field("Resource Version", meta.get("resourceVersion")),
    ]


def describe_cluster(obj: dict[str, Any], events: RecentEvents, now: float) -> str:
    """A SyncTarget: health, syncer, capacity/allocatable/used, conditions and recent events
    (health changes, syncer connection events)."""
    from tmcd.kubectl.events import cluster_row, events_section

    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    health = str(st.get("health") or "Unknown")
    reason = str(st.get("healthReason") or "")
    lines = [
        *_header(obj, now),
        _field("Health", f"{health} ({reason})" if reason else health),
        _field("Unschedulable", bool(spec.get("unschedulable", False))),
        _field("Connected", bool(st.get("connected", True))),
        _field("Sync Paused", bool(st.get("syncPaused", False))),
        _field("Queue Depth", int(st.get("queueDepth") or 0)),
        _field("Error Ratio", f"{float(st.get('errorRatio') or 0.0):.2%}"),
        _field("Syncer Version", st.get("syncerVersion")),
        _field("Last Heartbeat", _when(str(st.get("lastSyncerHeartbeatTime") or ""), now)),
        _field("Synced Resources", st.get("syncedResources") or []),
        *_quantities("Capacity", st.get("capacity") or {}),
        *_quantities("Allocatable", st.get("allocatable") or {}),
        *_quantities("Used", st.get("used") or {}),
        *_conditions(st.get("conditions") or [], now),
        *events_section(events, now, cluster_row),
    ]
    return "\n".join(lines)


def _selector(sel: dict[str, Any]) -> str:
    terms = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op, vals = e.get("operator", ""), ",".join(e.get("values") or [])
        if op in ("In", "NotIn"):
            terms.append(f"{e.get('key')} {op.lower().replace('notin', 'notin')} ({vals})")
        elif op == "Exists":
            terms.append(str(e.get("key")))
        else:
            terms.append(f"!{e.get('key')}")
    return ",".join(terms) or "(everything)"


def describe_placement(obj: dict[str, Any], events: RecentEvents, now: float) -> str:
    """A Placement: policy, selectors, decision, every candidate with score and reason,
    conditions and recent events (decisions, health changes)."""
    from tmcd.kubectl.events import events_section, placement_row

    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    sels = spec.get("locationSelectors") or []
    n = spec.get("numberOfClusters")
    lines = [
        *_header(obj, now),
        _field("Policy", spec.get("policy") or "Spread"),
        _field("Clusters Wanted", n if n is not None else "all eligible"),
        _field("Tolerate Unhealthy", bool(spec.get("tolerateUnhealthy", False))),
        "Location Selectors:" + ("" if sels else f"  {NONE} (every cluster)"),
        *[f"  {_selector(s)}" for s in sels],
        _field("Phase", st.get("phase") or "Pending"),
        _field("Last Decision", _when(str(st.get("lastDecisionTime") or ""), now)),
        _field("Selected", [s.get("cluster") for s in st.get("selectedClusters") or []]),
    ]
    cands = st.get("candidates") or []
    if cands:
        rows = [
            [
                cell(c.get("cluster")),
                "yes" if c.get("selected") else "no",
                f"{float(c.get('score') or 0.0):.3f}",
                cell(c.get("reason")),
            ]
            for c in cands
        ]
        lines += ["Candidates:", *_indent(table(["CLUSTER", "SELECTED", "SCORE", "REASON"], rows))]
    else:
        lines.append(f"Candidates:  {NONE}")
    lines += _conditions(st.get("conditions") or [], now)
    lines += events_section(events, now, placement_row)
    return "\n".join(lines)


KINDS = ("SyncTarget", "Placement", "CanaryRollout")
_KIND_WORDS = ("cluster", "placement", "canary")


def _complete_kind(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    return [w for w in _KIND_WORDS if w.startswith(incomplete)]


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("kind", metavar="cluster|placement|canary", shell_complete=_complete_kind)
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@global_options
@click.pass_context
def describe(ctx: click.Context, kind: str, names: tuple[str, ...]) -> None:
    """Show details of a cluster, placement or canary rollout.

    A cluster's health, capacity, sync state, conditions and events (health changes, syncer
    connections); a placement's decision, candidates and events (decisions, health changes);
    a canary's spec, status, steps (the current one marked), analysis evidence and events.
    Events are read from the JetStream event streams, so they need NATS.

    \b
    Examples:
      kubectl tmc describe cluster sim-001
      kubectl tmc describe placement web
      kubectl tmc describe canary checkout -n shop
    """
    k = kind_arg(kind, KINDS)
    c = client(ctx)
    now = time.time()
    ns = namespace_for(ctx, k, c.endpoint)
    objs = [c.call("get", k, namespace=ns, name=name) for name in names]
    out = []
    for obj in objs:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        created = str(meta.get("creationTimestamp") or "")
        if k.kind == "CanaryRollout":
            from tmcd.kubectl.describe_canary import describe_canary, recent_events
            from tmcd.kubectl.errors import CliError
            from tmcd.kubectl.revisions import list_revisions

            rollout_ns = str(meta.get("namespace") or ns)
            revisions, problem = None, ""
            try:
                revisions = list_revisions(c, rollout_ns, name)
            except CliError as exc:
                problem = exc.message
            found = recent_events(c, rollout_ns, name, created)
            out.append(describe_canary(obj, found, now, revisions, problem))
            continue
        from tmcd.kubectl import events

        if k.kind == "SyncTarget":
            # no creation bound: the health agent creates a SyncTarget on its first heartbeat,
            # after the syncer's first connection event
            out.append(describe_cluster(obj, events.recent_events(c, events.cluster_sources(name)), now))
        else:
            found = events.recent_events(c, events.placement_sources(name), created)
            out.append(describe_placement(obj, found, now))
    click.echo("\n\n".join(out))
