"""``kubectl tmc history NAME`` and the rollback sections of ``describe canary``: the rendering (exact
lines), then as a real ``kubectl-tmc`` subprocess against a real tmcd whose revisions were written
through the API as the revision keeper writes them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from tests.helpers import new_object
from tests.test_kubectl_canary_control import run
from tests.tmcd_thread import Tmcd, tmcd_in_thread
from tmcd.kubectl.describe_rollback import revisions_section, rollback_section
from tmcd.kubectl.output import parse_time
from tmcd.resources.canary import (
    CanaryRolloutSpec,
    LabelSelector,
    RolloutRevision,
    RolloutRevisionSpec,
    RolloutRevisionStatus,
    TrafficRouting,
    WorkloadRef,
)
from tmcd.resources.meta import ObjectMeta, OwnerReference

T0 = "2025-01-15T10:00:00Z"
NOW = (parse_time(T0) or 0.0) + 600.0


def record(rollout: str, n: int, namespace: str = "shop", **fields: Any) -> dict[str, Any]:
    """A revision record as the keeper writes it (label, ownerReference), as a create body with its status."""
    status = RolloutRevisionStatus(
        **{k: fields.pop(k) for k in ("phase", "outcome", "start_time", "end_time") if k in fields}
    )
    spec = CanaryRolloutSpec(
        workload_ref=WorkloadRef(name=rollout),
        stable_version="v1",
        canary_version="v2",
        cluster_selector=LabelSelector(match_labels={"env": "prod"}),
        traffic_routing=TrafficRouting(route=rollout),
    )
    rev = RolloutRevision(
        metadata=ObjectMeta(
            name=f"{rollout}-{n}",
            namespace=namespace,
            labels={"tmc.kcp.io/rollout": rollout},
            owner_references=[OwnerReference(api_version="tmc.kcp.io/v1alpha1", kind="CanaryRollout", name=rollout)],
        ),
        spec=RolloutRevisionSpec(
            rollout=rollout, revision=n, rollout_spec=spec, created_by="rollback-engine", **fields
        ),
        status=status,
    )
    out: dict[str, Any] = msgspec.to_builtins(rev)
    return out


CHECKOUT = [
    record(
        "checkout", 1, version="v1", stable_version="v1", trigger="Initial", placement=["c0", "c1", "c2"],
        weights={"stable": 100, "canary": 0}, phase="Superseded", outcome="superseded by revision 2",
    ),
    record(
        "checkout", 2, version="v2", stable_version="v1", trigger="Promoted", placement=["c0", "c1", "c2"],
        weights={"stable": 100, "canary": 0}, phase="Active", outcome="promoted",
    ),
    record(
        "checkout", 3, version="v3", stable_version="v2", trigger="AnalysisFailed", placement=["c1"],
        weights={"stable": 80, "canary": 20}, phase="Failed", outcome="rolled back: AnalysisFailed: error ratio 5%",
    ),
]  # fmt: skip
ROLLBACK = {
    "phase": "Completed",
    "trigger": "AnalysisFailed",
    "reason": "error ratio 5%",
    "fromRevision": 3,
    "toRevision": 2,
    "startTime": "2025-01-15T10:08:00Z",
    "endTime": "2025-01-15T10:08:01Z",
    "clusters": [{"cluster": "c1", "canaryWeight": 0, "state": "Restored"}],
    "stageTimes": {"Restoring": "2025-01-15T10:08:01Z", "Reversing": "2025-01-15T10:08:00Z"},
}


# --- rendering --------------------------------------------------------------------------------


def test_rollback_section() -> None:
    assert rollback_section({}, NOW) == ["Rollback:  <none>"]
    rb = {**ROLLBACK, "clusters": [*ROLLBACK["clusters"], {"cluster": "c2"}]}  # type: ignore[misc]
    assert rollback_section({"rollback": rb}, NOW) == [
        "Rollback:",
        "  Phase:                Completed",
        "  Trigger:              AnalysisFailed",
        "  Reason:               error ratio 5%",
        "  From Revision:        3",
        "  To Revision:          2",
        "  Started:              2025-01-15T10:08:00Z (2m ago)",
        "  Ended:                2025-01-15T10:08:01Z (119s ago)",
        "  Message:              <none>",
        "  Clusters:",
        "    CLUSTER   STATE      CANARY WEIGHT",
        "    c1        Restored   0%",
        "    c2        Pending    <unknown>",
        "  Stages:",
        "    Reversing:  2025-01-15T10:08:00Z (2m ago)",  # in the order of the stages, not of the keys
        "    Restoring:  2025-01-15T10:08:01Z (119s ago)",
    ]


def test_revisions_section_shows_the_newest_five() -> None:
    assert revisions_section(None, NOW) == revisions_section([], NOW) == ["Revisions:  <none>"]
    assert revisions_section(None, NOW, "forbidden") == ["Revisions:  <unknown> (forbidden)"]
    items = []
    for n in range(7, 0, -1):
        item = copy.deepcopy(CHECKOUT[1])
        item["spec"]["revision"] = n
        item["metadata"]["creationTimestamp"] = T0
        items.append(item)
    lines = revisions_section(items, NOW, command="kubectl tmc history checkout -n shop")
    assert lines[:3] == [
        "Revisions:",
        "  REVISION   VERSION   PHASE    TRIGGER    OUTCOME    AGE",
        "  7          v2        Active   Promoted   promoted   10m",
    ]
    assert [line.split()[0] for line in lines[2:7]] == ["7", "6", "5", "4", "3"]
    assert lines[7:] == ["  (2 older: kubectl tmc history checkout -n shop)"]


# --- against a real tmcd ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tmcd(nats_server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tmcd]:
    """A tmcd (metrics agent only: stored statuses stay as written) with rollouts and their revisions."""
    with tmcd_in_thread(nats_server_bin, tmp_path_factory.mktemp("history"), agents="metrics") as t:
        rollout = new_object("CanaryRollout", name="checkout", namespace="shop")
        rollout["status"] = {"phase": "RolledBack", "stableRevision": 2, "canaryRevision": 3, "rollback": ROLLBACK}
        t.create("canaryrollouts", rollout, "shop")
        t.create("canaryrollouts", new_object("CanaryRollout", name="fresh", namespace="shop"), "shop")
        for obj in CHECKOUT:
            t.create("rolloutrevisions", obj, "shop")
        t.create("rolloutrevisions", record("cart", 1, version="c1", phase="Active"), "shop")  # another rollout's
        t.create("rolloutrevisions", record("checkout", 9, "other", version="x9"), "other")  # another namespace's
        yield t


def columns(text: str) -> list[dict[str, str]]:
    """A kubectl table's rows as {HEADER: cell}, cut at the headers' offsets (cells may hold spaces)."""
    head, *rows = text.splitlines()
    names = head.split("   ")
    names = [n.strip() for n in names if n.strip()]
    starts = [head.index(n) for n in names]
    out = []
    for row in rows:
        cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        out.append(dict(zip(names, cells, strict=True)))
    return out


async def test_history_table_newest_first(tmcd: Tmcd) -> None:
    code, out, err = await run("history", "checkout", "-n", "shop", "--nats-url", tmcd.nats_url)
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split() == ["REVISION", "VERSION", "PHASE", "TRIGGER", "OUTCOME", "AGE"]
    rows = columns(out)
    assert [{k: v for k, v in r.items() if k != "AGE"} for r in rows] == [
        {
            "REVISION": "3",
            "VERSION": "v3",
            "PHASE": "Failed",
            "TRIGGER": "AnalysisFailed",
            "OUTCOME": "rolled back: AnalysisFailed: error ratio 5%",
        },
        {"REVISION": "2", "VERSION": "v2", "PHASE": "Active", "TRIGGER": "Promoted", "OUTCOME": "promoted"},
        {
            "REVISION": "1",
            "VERSION": "v1",
            "PHASE": "Superseded",
            "TRIGGER": "Initial",
            "OUTCOME": "superseded by revision 2",
        },
    ]
    assert all(r["AGE"].endswith(("s", "m")) for r in rows)


async def test_history_wide(tmcd: Tmcd) -> None:
    code, out, _ = await run("history", "checkout", "-n", "shop", "-o", "wide", "--nats-url", tmcd.nats_url)
    assert code == 0
    rows = columns(out)
    assert [(r["STABLE VERSION"], r["CLUSTERS"], r["WEIGHTS"]) for r in rows] == [
        ("v2", "c1", "stable=80,canary=20"),
        ("v1", "c0,c1,c2", "stable=100,canary=0"),
        ("v1", "c0,c1,c2", "stable=100,canary=0"),
    ]


async def test_history_json_jsonpath_and_name(tmcd: Tmcd) -> None:
    code, out, _ = await run("history", "checkout", "-n", "shop", "-o", "json", "--nats-url", tmcd.nats_url)
    listing = json.loads(out)
    assert code == 0 and listing["kind"] == "List"
    assert [i["spec"]["revision"] for i in listing["items"]] == [3, 2, 1]
    assert listing["items"][0]["metadata"]["labels"] == {"tmc.kcp.io/rollout": "checkout"}
    code, out, _ = await run(
        "history", "checkout", "-n", "shop", "-o", "jsonpath={.items[*].spec.version}", "--nats-url", tmcd.nats_url
    )
    assert (code, out) == (0, "v3 v2 v1")
    code, out, _ = await run("history", "checkout", "-n", "shop", "-o", "name", "--nats-url", tmcd.nats_url)
    assert out.splitlines() == [f"rolloutrevision.tmc.kcp.io/checkout-{n}" for n in (3, 2, 1)]
    code, out, _ = await run("history", "checkout", "-n", "other", "-o", "yaml", "--nats-url", tmcd.nats_url)
    assert code == 0 and "x9" in out and "v3" not in out  # the namespace's own


async def test_history_of_a_rollout_without_revisions_and_of_none(tmcd: Tmcd) -> None:
    code, out, err = await run("history", "fresh", "-n", "shop", "--nats-url", tmcd.nats_url)
    assert (code, out, err) == (0, "", "No revisions found for canaryrollout.tmc.kcp.io/fresh in shop namespace.\n")
    code, out, _ = await run("history", "fresh", "-n", "shop", "-o", "json", "--nats-url", tmcd.nats_url)
    assert code == 0 and json.loads(out)["items"] == []
    code, out, err = await run("history", "nope", "-n", "shop", "--nats-url", tmcd.nats_url)
    assert (code, out) == (1, "") and err.startswith("Error from server (NotFound):"), err


async def test_history_usage_errors(tmcd: Tmcd) -> None:
    for args, want in [
        (["history", "checkout", "-o", "tree"], "error: unable to match a printer suitable for the output format"),
        (["history", "check.out"], "error: rollout 'check.out' is not a valid name"),
        (["history", "checkout", "-A"], "error: a rollout is named in one namespace"),
        (["history"], "error: Missing argument 'NAME'"),
    ]:
        code, out, err = await run(*args, "--nats-url", tmcd.nats_url)
        assert (code, out) == (2, "") and err.startswith(want) and len(err.splitlines()) == 1, (args, err)


async def test_describe_canary_shows_the_rollback_and_the_history(tmcd: Tmcd) -> None:
    code, out, err = await run("describe", "canary", "checkout", "-n", "shop", "--nats-url", tmcd.nats_url)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    start = lines.index("Rollback:")
    assert lines[start + 1 : start + 6] == [
        "  Phase:                Completed",
        "  Trigger:              AnalysisFailed",
        "  Reason:               error ratio 5%",
        "  From Revision:        3",
        "  To Revision:          2",
    ]
    revs = lines.index("Revisions:")
    assert [line.split()[:3] for line in lines[revs + 1 : revs + 5]] == [
        ["REVISION", "VERSION", "PHASE"],
        ["3", "v3", "Failed"],
        ["2", "v2", "Active"],
        ["1", "v1", "Superseded"],
    ]
    assert lines[revs + 5] == "Steps:"
    code, out, _ = await run("describe", "canary", "fresh", "-n", "shop", "--nats-url", tmcd.nats_url)
    assert code == 0 and "Rollback:  <none>" in out.splitlines() and "Revisions:  <none>" in out.splitlines()
