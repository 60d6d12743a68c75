"""The canaries view (4): the list, its sort and filter, the detail (step tree, weight chart, evidence,
rollback), the P/F/A/R actions (confirmed; nothing sent when read-only), 80x24 and NO_COLOR."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from textual.widgets import Static

from tests.helpers import nats_connect, wait_for
from tests.test_tui_feed import publisher
from tmcd.contracts.codec import decode, encode
from tmcd.contracts.messages import CanaryControl, ControlReply
from tmcd.contracts.subjects import CTL_CANARY
from tmcd.resources.canary import CanaryRollout, RollbackStatus
from tmcd.resources.meta import rfc3339
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.tui.app import DashboardApp
from tmcd.tui.canaries import (
    MIN_SPAN,
    WeightHistory,
    canary_rows,
    evidence_lines,
    filter_canaries,
    rollback_stages,
    sort_canaries,
    step_tree,
    weight_chart,
)
from tmcd.tui.feed import Feed
from tmcd.tui.models import parse_filter
from tmcd.tui.rowtable import RowTable
from tmcd.tui.screens.canaries import CanariesScreen
from tmcd.tui.screens.canary_detail import CanaryDetail
from tmcd.tui.screens.confirm import ConfirmDialog
from tmcd.tui.state import DashboardState

NOW = 1_700_000_000.0
SIZE = (80, 24)
STEPS = [
    {"setClusters": {"count": 3}},
    {"setWeight": 10},
    {"pause": {}},
    {"analysis": {"templates": ["checkout-health"]}},
    {"setWeight": 50},
]
EVIDENCE = {
    "measure": "error_ratio",
    "condition": "comparison",
    "test": "proportion",
    "method": "fisher",
    "pValue": 0.187422,
    "estimate": {"name": "oddsRatio", "value": 4.003, "interval": [0.395847, 197.186]},
    "tolerance": {"maxIncrease": 0.2, "maxDifference": 0.0},
    "tracks": {"canary": {"requests": 4000, "errors": 4}, "stable": {"requests": 4000, "errors": 1}},
    "verdict": "Inconclusive",
    "reason": "the 95% interval of canary/stable straddles the allowed 1.2",
}


def rollout(namespace: str, name: str, age: float, **status: Any) -> CanaryRollout:
    return msgspec.convert(
        {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": rfc3339(NOW - age),
                "labels": {"team": "pay" if namespace == "pay" else "shop"},
            },
            "spec": {
                "workloadRef": {"name": name},
                "stableVersion": "v1.4.0",
                "canaryVersion": "v1.5.0",
                "trafficRouting": {"route": name},
                "steps": STEPS,
            },
            "status": status,
        },
        CanaryRollout,
    )


def web(weight: int = 10, applied: int | None = 10, at: float = NOW - 200) -> CanaryRollout:
    return rollout(
        "shop",
        "web",
        300,
        phase="Paused",
        currentStepIndex=2,
        currentWeight=weight,
        appliedWeight=applied,
        canaryClusters=["sim-001", "sim-002", "sim-003"],
        message="Paused at step 3/5: pause until promoted",
        pauseReason="PauseStep",
        progressTime=rfc3339(at),
        analysisRuns=[
            {
                "template": "checkout-health",
                "phase": "Inconclusive",
                "stepIndex": 3,
                "startTime": rfc3339(NOW - 90),
                "metrics": [
                    {
                        "name": "error-ratio",
                        "phase": "Inconclusive",
                        "value": 0.001,
                        "count": 3,
                        "successful": 1,
                        "inconclusive": 2,
                        "evidence": EVIDENCE,
                        "measuredAt": rfc3339(NOW - 10),
                    }
                ],
            }
        ],
    )


def canary_state(state: DashboardState | None = None) -> DashboardState:
    """Four rollouts (into ``state`` when given): shop/web with a weight history, shop/api, a rolled
    back pay/checkout and a finished ops/batch."""
    state = state or DashboardState()
    state.set_connection("connected")
    # shop/web's weight as the controller moved it: 0, then 10 set, then 10 applied
    state.set_canary("shop.web", web(0, None, NOW - 290))
    state.set_canary("shop.web", web(10, None, NOW - 250))
    state.set_canary("shop.web", web(10, 10, NOW - 200))
    state.set_canary(
        "shop.api",
        rollout("shop", "api", 100, phase="Progressing", currentStepIndex=1, currentWeight=20, appliedWeight=10),
    )
    state.set_canary(
        "pay.checkout",
        rollout(
            "pay",
            "checkout",
            1000,
            phase="RolledBack",
            currentStepIndex=3,
            message="rolled back: error-ratio failed",
            rollback={
                "phase": "Completed",
                "trigger": "AnalysisFailed",
                "reason": "error-ratio failed",
                "fromRevision": 2,
                "toRevision": 1,
                "clusters": [{"cluster": "sim-004", "canaryWeight": 0, "state": "Restored"}],
                "stageTimes": {s: rfc3339(NOW - 500 + i) for i, s in enumerate(("Reversing", "Restoring"))},
            },
        ),
    )
    state.set_canary("ops.batch", rollout("ops", "batch", 5000, phase="Succeeded", currentStepIndex=4))
    return state


def refs(app: DashboardApp) -> list[str]:
    table = app.screen.query_one(RowTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def text(app: DashboardApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


# --- pure helpers ---------------------------------------------------------------------------------------------


def test_step_tree_marks_done_current_and_failed_steps() -> None:
    assert [s.state for s in step_tree(web())] == ["done", "done", "current", "pending", "pending"]
    assert [(s.number, s.text) for s in step_tree(web())][:3] == [
        (1, "setClusters: 3 clusters"),
        (2, "setWeight: 10%"),
        (3, "pause: until promoted"),
    ]
    rolled = rollout("a", "b", 1, phase="RolledBack", currentStepIndex=3)
    assert [s.state for s in step_tree(rolled)] == ["done", "done", "done", "failed", "pending"]
    assert {s.state for s in step_tree(rollout("a", "b", 1, phase="Succeeded", currentStepIndex=4))} == {"done"}
    assert {s.state for s in step_tree(rollout("a", "b", 1))} == {"pending"}  # Pending: nothing started


def test_weight_history_keeps_changes_only_bounded_and_forgets_deleted_rollouts() -> None:
    h = WeightHistory(limit=3)
    assert h.record(web(0, None, NOW - 100))
    assert not h.record(web(0, None, NOW - 90))  # same weights: no point
    assert h.record(web(10, None, NOW - 80))
    assert h.record(web(10, 10, NOW - 85))  # an older status time does not go back
    assert [(p.at, p.weight, p.applied) for p in h.points("shop/web")] == [
        (NOW - 100, 0, None),
        (NOW - 80, 10, None),
        (NOW - 80, 10, 10),
    ]
    h.record(web(50, 10, NOW - 10))
    assert len(h.points("shop/web")) == 3 and h.points("shop/web")[-1].weight == 50
    state = canary_state()
    assert [p.weight for p in state.weights.points("shop/web")] == [0, 10, 10]
    state.set_canary("shop.web", None)
    assert state.weights.points("shop/web") == [] and len(state.weights) == 3


def test_weight_chart_is_a_step_function_up_to_now() -> None:
    h = WeightHistory()
    h.record(web(0, None, NOW - 100))
    h.record(web(100, None, NOW - 50))
    rows = weight_chart(h.points("shop/web"), NOW, 10, 4)
    # each column shows the weight at its end: 0 % up to NOW-60, 100 % from the column ending at NOW-50
    assert rows == ["    ██████"] * 4
    half = WeightHistory()
    half.record(web(50, None, NOW - 10))
    rows = weight_chart(half.points("shop/web"), NOW, int(MIN_SPAN), 2)  # a minute, one column a second
    assert rows[0].strip() == "" and rows[1] == " " * 49 + "█" * 11  # 50 %: the bottom half, from NOW-10
    assert weight_chart([], NOW, 10) == []


def test_evidence_lines_put_the_verdict_and_numbers_first() -> None:
    lines = evidence_lines(EVIDENCE)
    assert lines[0] == "verdict: Inconclusive" and lines[1].startswith("reason: the 95% interval")
    assert "pValue: 0.1874" in lines
    assert "estimate: name oddsRatio, value 4.003, interval [0.3958, 197.2]" in lines
    assert "canary: requests 4000, errors 4" in lines


def test_rollback_stages() -> None:
    rb = RollbackStatus(phase="Restoring", stage_times={"Reversing": "2023-11-14T22:00:00Z"})
    assert [s[1] for s in rollback_stages(rb)] == ["done", "current", "pending", "pending"]
    failed = RollbackStatus(phase="Failed", stage_times={"Reversing": "x", "Restoring": "y"})
    assert [s[1] for s in rollback_stages(failed)] == ["done", "failed", "pending", "pending"]


def test_sort_and_filter_rows() -> None:
    rows = canary_rows(canary_state().canaries.values(), NOW)
    assert [r.ref for r in sort_canaries(rows, "phase")] == ["pay/checkout", "shop/web", "shop/api", "ops/batch"]
    assert [r.ref for r in sort_canaries(rows, "age", True)] == ["ops/batch", "pay/checkout", "shop/web", "shop/api"]
    assert [r.ref for r in filter_canaries(rows, parse_filter("sim-00[12]"))] == ["shop/web"]
    assert [r.ref for r in filter_canaries(rows, parse_filter("-l team=pay"))] == ["pay/checkout"]
    assert len(filter_canaries(rows, parse_filter("!shop/"))) == 2


# --- the view -------------------------------------------------------------------------------------------------


async def test_no_rollouts_shows_how_to_start_one() -> None:
    app = DashboardApp(DashboardState(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await pilot.pause()
        assert isinstance(app.screen, CanariesScreen)
        assert app.screen.query_one("#empty", Static).display
        assert "`kubectl tmc apply -f` one, or run `make demo`" in text(app, "#empty")
        assert not app.screen.query_one(RowTable).display
        await pilot.press("P")  # nothing to act on: a warning, no dialog
        await pilot.pause()
        assert isinstance(app.screen, CanariesScreen)


async def test_list_shows_rows_sorts_and_filters() -> None:
    app = DashboardApp(canary_state(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await wait_for(lambda: len(refs(app)) == 4, what="rows")
        assert refs(app) == ["ops/batch", "pay/checkout", "shop/api", "shop/web"]
        table = app.screen.query_one(RowTable)
        row = [str(c) for c in table.get_row_at(3)]
        assert row[:7] == ["shop/web", "Paused", "3/5", "10%", "10%", "sim-001,sim-002 +1", "5m"]
        assert [str(c) for c in table.get_row_at(2)][1:5] == ["Progressing", "2/5", "20%", "10%"]
        status = text(app, "#status")
        assert "RolledBack 1" in status and "Paused 1" in status and "4 of 4 rollouts" in status
        await pilot.press("s")  # name -> phase: bad news first
        await wait_for(lambda: refs(app)[0] == "pay/checkout", what="sorted by phase")
        assert refs(app) == ["pay/checkout", "shop/web", "shop/api", "ops/batch"]
        await pilot.press("S")
        await wait_for(lambda: refs(app)[0] == "ops/batch", what="reversed")
        assert "sort: phase↓" in text(app, "#status")
        # a filter with capital letters: typed text, not P(romote)/A(bort)/R(etry)
        await pilot.press("slash", *"Paused|Progressing")
        await wait_for(lambda: sorted(refs(app)) == ["shop/api", "shop/web"], what="filtered")
        assert not isinstance(app.screen, ConfirmDialog)
        await pilot.press("enter")
        await wait_for(lambda: "2 of 4 rollouts" in text(app, "#status"), what="count")
        await pilot.press("escape")
        await wait_for(lambda: len(refs(app)) == 4, what="filter cleared")


async def test_enter_opens_the_detail_and_esc_goes_back() -> None:
    app = DashboardApp(canary_state(), clock=lambda: NOW)
    async with app.run_test(size=(100, 60)) as pilot:
        await pilot.press("4")
        await wait_for(lambda: len(refs(app)) == 4, what="rows")
        await pilot.press("j", "j", "j", "enter")  # shop/web
        screen = app.screen
        assert isinstance(screen, CanariesScreen)
        await wait_for(lambda: screen.detail == "shop/web", what="detail open")
        await wait_for(lambda: "Steps" in text(app, "#detail-body"), what="detail drawn")
        body = text(app, "#detail-body")
        assert "✔  1  setClusters: 3 clusters" in body and "✔  2  setWeight: 10%" in body
        assert "▶  3  pause: until promoted  ◀ current" in body
        assert "○  4  analysis: checkout-health" in body
        assert "v1.4.0 → v1.5.0" in body and "(PauseStep)" in body
        # the chart: 0 % for a while, then 10 % up to now
        assert "Canary weight over time" in body and "-4m50s" in body
        chart_rows = body.split("Canary weight over time\n")[1].splitlines()[:5]
        assert chart_rows[0].rstrip() == "100% ┤"  # nothing near 100 %
        # 0 % for the first 40 of the 290 s shown, then 10 % (half of the bottom fifth) up to now
        bottom = chart_rows[4]
        assert bottom.startswith("  0% ┤" + " " * 12) and bottom.endswith("▄" * 70) and set(bottom[6:]) == {" ", "▄"}
        assert "now 10% set, 10% applied; 3 change(s) seen" in body
        # the analysis run with its metric's counters and the evidence of its last measurement
        assert "checkout-health (step 4)  Inconclusive" in body
        assert "measured 3 (ok 1, failed 0, inconclusive 2, error 0)  last 10s ago" in body
        assert "pValue: 0.1874" in body and "interval [0.3958, 197.2]" in body
        assert "tolerance: maxIncrease 0.2, maxDifference 0" in body
        assert not screen.query_one(RowTable).display
        # filter and sort belong to the list
        await pilot.press("s", "slash")
        assert screen.sort_column == "name" and screen.detail == "shop/web"
        await pilot.press("escape")
        await wait_for(lambda: screen.query_one(RowTable).display, what="the list again")
        assert screen.detail is None and not screen.query_one(CanaryDetail).display
        assert screen.selected() == "shop/web"  # the cursor stayed on it


async def test_detail_of_a_rolled_back_rollout_shows_the_rollback() -> None:
    app = DashboardApp(canary_state(), clock=lambda: NOW)
    async with app.run_test(size=(100, 60)) as pilot:
        await pilot.press("4")
        await wait_for(lambda: len(refs(app)) == 4, what="rows")
        await pilot.press("j", "enter")  # pay/checkout
        await wait_for(lambda: "Rollback" in text(app, "#detail-body"), what="detail drawn")
        body = text(app, "#detail-body")
        assert "✖  4  analysis: checkout-health  ◀ rolled back here" in body
        assert "Completed  trigger AnalysisFailed: error-ratio failed  revision 2 → 1" in body
        assert "✔ Reversing  8m20s ago" in body and "✔ Completed" in body
        assert "clusters: sim-004 Restored 0%" in body
        assert "no analysis run yet" in body and "no weight seen yet" not in body
        app.state.set_canary("pay.checkout", None)  # deleted while open: said so, no error
        await wait_for(lambda: "pay/checkout: deleted" in text(app, "#detail-body"), what="deleted")
        await pilot.press("escape")
        await wait_for(lambda: len(refs(app)) == 3, what="the list without it")


@pytest.mark.parametrize(
    ("keys", "question"),
    [
        (("P",), "Promote to the next step: canary shop/web?"),
        (("F",), "Promote in full (100 % on every cluster, skip the remaining steps): canary shop/web?"),
        (("enter", "A"), "Abort (all traffic back to stable): canary shop/web?"),  # from the detail
        (("enter", "R"), "Retry from step 1: canary shop/web?"),
    ],
)
async def test_action_keys_ask_for_confirmation(keys: tuple[str, ...], question: str) -> None:
    app = DashboardApp(canary_state(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await wait_for(lambda: len(refs(app)) == 4, what="rows")
        await pilot.press("j", "j", "j", *keys)
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), what="the confirmation")
        assert text(app, "#question") == question
        await pilot.press("n")
        await wait_for(lambda: isinstance(app.screen, CanariesScreen), what="dialog closed")
        assert app.acks == []


async def test_promote_confirmed_is_sent_and_acknowledged(nats_server: EmbeddedNats) -> None:
    # a per-test server: the rollouts shown are the canaries bucket's, so no other test's may be there
    nc = await nats_connect(nats_server.url)
    seen: list[CanaryControl] = []

    async def controller(msg: Any) -> None:
        req = decode(msg.subject, msg.data, CTL_CANARY)
        assert isinstance(req, CanaryControl)
        seen.append(req)
        await msg.respond(encode(ControlReply(ok=True, target=f"{req.namespace}/{req.name}", message="promoted")))

    sub = await nc.subscribe("tmc.ctl.canary.>", cb=controller)
    await nc.flush()
    app = DashboardApp(feed=Feed(DashboardState(), nats_server.url), clock=lambda: NOW)
    try:
        async with publisher(nats_server.url) as pub, app.run_test(size=SIZE) as pilot:
            kv = await pub.kv("canaries", CanaryRollout)
            await kv.put("tuican.web", rollout("tuican", "web", 60, phase="Paused", currentStepIndex=2))
            await pilot.press("4")
            await wait_for(lambda: refs(app) == ["tuican/web"], what="the rollout from KV")
            await pilot.press("enter", "P")
            await wait_for(lambda: isinstance(app.screen, ConfirmDialog), what="the confirmation")
            await pilot.press("y")
            await wait_for(lambda: len(app.acks) == 1, what="the acknowledgement")
            assert [(r.namespace, r.name, r.action, r.full) for r in seen] == [("tuican", "web", "promote", False)]
            assert app.acks[0].message == "promoted"
            assert any("tuican/web: promoted" in n.message for n in app._notifications)
    finally:
        await sub.unsubscribe()
        await nc.close()


async def test_read_only_action_keys_send_nothing(nats_server: EmbeddedNats) -> None:
    nc = await nats_connect(nats_server.url)
    seen: list[str] = []

    async def anything(msg: Any) -> None:
        seen.append(msg.subject)

    sub = await nc.subscribe("tmc.ctl.>", cb=anything)
    await nc.flush()
    app = DashboardApp(feed=Feed(DashboardState(), nats_server.url), read_only=True, clock=lambda: NOW)
    try:
        async with publisher(nats_server.url) as pub, app.run_test(size=SIZE) as pilot:
            kv = await pub.kv("canaries", CanaryRollout)
            await kv.put("tuican.ro", rollout("tuican", "ro", 60, phase="Paused", currentStepIndex=2))
            await pilot.press("4")
            await wait_for(lambda: refs(app) == ["tuican/ro"], what="the rollout from KV")
            for keys in (("P",), ("F",), ("A",), ("R",), ("enter", "P"), ("A",), ("R",)):
                await pilot.press(*keys)
                await pilot.pause()
                assert isinstance(app.screen, CanariesScreen)  # no dialog: refused at once
            assert app.feed is not None and app.feed.bus is not None
            await app.feed.bus.flush()  # anything the app had sent has reached the server...
            await nc.flush()  # ...and been delivered to this subscriber
            assert seen == [] and app.acks == []
            assert any("read-only" in n.message for n in app._notifications)
    finally:
        await sub.unsubscribe()
        await nc.close()


@pytest.mark.parametrize("no_color", [False, True])
async def test_fits_80x24_with_and_without_colour(no_color: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    state = canary_state()
    for i in range(30):
        state.set_canary(f"bulk.r{i:02d}", rollout("bulk", f"r{i:02d}", 60 + i, phase="Progressing"))
    app = DashboardApp(state, clock=lambda: NOW, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await wait_for(lambda: len(refs(app)) == 34, what="rows")
        table = app.screen.query_one(RowTable)
        assert table.region.bottom <= 24 and table.region.height >= 10
        svg = app.export_screenshot()
        assert "bulk/r00" in svg and "PHASE" in svg and "WEIGHT" in svg
        await pilot.press("ctrl+end")
        await wait_for(lambda: app.screen.selected() == "shop/web", what="last row")  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_for(lambda: "Steps" in text(app, "#detail-body"), what="detail")
        await pilot.pause()
        detail = app.screen.query_one(CanaryDetail)
        assert detail.region.bottom <= 24 and detail.region.height >= 10
        svg = app.export_screenshot()
        assert "shop/web" in svg and "pause:" in svg and "current" in svg
        await pilot.press("end")  # the rest scrolls into view
        await pilot.pause()
        assert detail.scroll_y > 0 and "pValue" in app.export_screenshot()
