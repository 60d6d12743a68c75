"""A canary rollout's revision history as ``kubectl tmc`` reads and shows it (``history``, ``describe``).

The records are RolloutRevisions labelled ``tmc.kcp.io/rollout=<rollout>``, listed through the API
like ``get revisions -l ...`` and shown newest first.
"""

from __future__ import annotations

from tmcd.kubectl.client import Client
from tmcd.kubectl.kinds import CliKind, resolve
from tmcd.kubectl.output import age, cell

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tmcd.kubectl.output import Column

ROLLOUT_LABEL = "tmc.kcp.io/rollout"
"""The label tmcd's revision keeper puts on a rollout's revisions (tmcd.rollback.revisions)."""


def revision_kind() -> CliKind:
    """The RolloutRevision kind."""
    kind = resolve("rolloutrevisions")
    assert kind is not None
    return kind


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def number(obj: dict[str, Any]) -> int:
    """The revision number (0 when missing)."""
    n = _d(obj.get("spec")).get("revision")
    return n if isinstance(n, int) and not isinstance(n, bool) else 0


def list_revisions(client: Client, namespace: str, rollout: str) -> list[dict[str, Any]]:
    """Every revision of the rollout, newest first (all pages)."""
    kind = revision_kind()
    items: list[dict[str, Any]] = []
    cont = ""
    while True:
        page = client.call(
            "list",
            kind,
            namespace=namespace,
            labelSelector=f"{ROLLOUT_LABEL}={rollout}",
            limit=500,
            **{"continue": cont},
        )
        items.extend(i for i in page.get("items") or [] if _d(i.get("spec")).get("rollout") == rollout)
        cont = str(_d(page.get("metadata")).get("continue") or "")
        if not cont:
            break
    return sorted(items, key=number, reverse=True)


def weights(obj: dict[str, Any]) -> str:
    """``stable=80,canary=20`` (tracks in that order, then any other)."""
    w = _d(_d(obj.get("spec")).get("weights"))
    order = sorted(w, key=lambda t: ({"stable": 0, "canary": 1}.get(t, 2), t))
    return ",".join(f"{t}={w[t]}" for t in order)


HISTORY: list[Column] = [
    ("REVISION", lambda o, _n: number(o)),
    ("VERSION", lambda o, _n: _d(o.get("spec")).get("version")),
    ("PHASE", lambda o, _n: _d(o.get("status")).get("phase") or "Active"),
    ("TRIGGER", lambda o, _n: _d(o.get("spec")).get("trigger")),
    ("OUTCOME", lambda o, _n: _d(o.get("status")).get("outcome")),
    ("AGE", lambda o, n: age(str(_d(o.get("metadata")).get("creationTimestamp") or ""), n)),
]
HISTORY_WIDE: list[Column] = [
    ("STABLE VERSION", lambda o, _n: _d(o.get("spec")).get("stableVersion")),
    ("CLUSTERS", lambda o, _n: _d(o.get("spec")).get("placement")),
    ("WEIGHTS", lambda o, _n: weights(o)),
]
"""``kubectl tmc history`` columns; ``-o wide`` adds the stable version it replaced, the clusters it ran
on and its traffic weights."""


def rows(items: list[dict[str, Any]], now: float) -> list[list[str]]:
    """Table rows of :data:`HISTORY` (for ``describe``)."""
    return [[cell(fn(o, now)) for _h, fn in HISTORY] for o in items]
