"""The rollback engine against a real nats-server, beside the canary agent, with an in-memory router:
a crash at each stage, concurrent commands, the cluster-unhealthy trigger, a rollback to a revision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tests.helpers import wait_for
from tests.test_canary_agent import Stack, _at_weight, open_stack
from tmcd.canary.model import Applied
from tmcd.canary.traffic import AppliedWeights
from tmcd.contracts import subjects
from tmcd.contracts.messages import ControlReply, HealthChange, RollbackControl
from tmcd.resources.canary import RolloutRevision
from tmcd.rollback import history
from tmcd.rollback.model import RollbackEnv, advance, begin, stage_applied
from tmcd.runtime.embedded import EmbeddedNats


@pytest.fixture
async def stack(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(nats_server.url, tmp_path) as s:
        yield s


async def rollback_request(s: Stack, name: str, to: int = 0) -> ControlReply:
    req = RollbackControl(namespace="shop", name=name, timestamp=s.clock.now, to_revision=to, requested_by="t")
    return await s.bus.request(subjects.ctl_rollback("shop", name), req, ControlReply)


@pytest.mark.parametrize("stage", ["Reversing", "Restoring", "CleaningUp"])
async def test_a_crash_during_a_stage_completes_it_once_after_the_restart(stack: Stack, stage: str) -> None:
    await stack.start_agent()
    await stack.rollout("crash")
    await wait_for(lambda: _at_weight(stack, "crash", 20), what="weight 20")
    await stack.stop_agent()
    # as a tmcd killed while applying ``stage``: recorded Applying, not yet marked Applied
    entry = await stack.canaries.get("shop.crash")
    assert entry is not None
    r = msgspec.structs.replace(entry.value, status=begin(entry.value, stack.clock.now, trigger="Aborted", reason="t"))
    applied: Applied | None = None
    while r.status.rollback is not None and not (
        r.status.rollback.phase == stage and r.status.rollback.stage_state == "Applying"
    ):
        rb = r.status.rollback
        if rb.stage_state == "Applying" and rb.phase != "Pending":
            await stack.router.set_weights(*_route(r), 0, [], rb.generation) if rb.phase == "Reversing" else None
            applied = Applied(rb.generation, {})
            st, _ = stage_applied(r, stack.clock.now)
        else:
            st = advance(
                r, RollbackEnv(now=stack.clock.now, applied=applied, next_generation=rb.generation + 10)
            ).status
        r = msgspec.structs.replace(r, status=st)
    await stack.canaries.put("shop.crash", r)
    reversals = sum(1 for w, _, _ in stack.router.calls if w == 0)
    await stack.start_agent()
    done = await stack.phase_is("crash", "RolledBack")
    rb = done.status.rollback
    assert rb is not None and rb.phase == "Completed"
    again = sum(1 for w, _, _ in stack.router.calls if w == 0) - reversals
    assert again == (1 if stage == "Reversing" else 0)  # only the stage in flight is applied again
    assert await stack.placements.get("crash-canary") is None
    stages = [e.stage for e in await stack.rollback_events("crash")]
    assert len(stages) == len(set(stages)) and stages[-1] == "completed"


def _route(r: object) -> tuple[object]:
    from tmcd.canary.reversal import route_of

    return (route_of(r),)  # type: ignore[arg-type]


async def test_concurrent_commands_resolve_to_one_outcome(stack: Stack) -> None:
    await stack.start_agent()
    await stack.rollout("race")
    await wait_for(lambda: _at_weight(stack, "race", 20), what="weight 20")
    stack.router.up = False  # the reversal is not acknowledged: the rollback stays in progress meanwhile
    a, b = await asyncio.gather(stack.control("race", "abort"), rollback_request(stack, "race"))
    assert sorted([a.code, b.code]) == [200, 409], (a, b)
    loser = a if a.code == 409 else b
    assert "rollback" in loser.message or "RollingBack" in loser.message
    third = await stack.control("race", "promote")
    assert third.code == 409 and "RollingBack" in third.message

    async def reversal_sent() -> int:
        rb = (await stack.get("race")).status.rollback
        return rb.generation if rb is not None and rb.phase == "Reversing" and rb.stage_state == "Applied" else 0

    gen = await wait_for(reversal_sent, what="the reversal sent")
    stack.router.reports[("shop", "race")] = AppliedWeights(gen, {})  # the mesh comes back and acknowledges
    r = await stack.phase_is("race", "RolledBack")
    assert r.status.rollback is not None and r.status.rollback.trigger in ("Aborted", "Manual")
    again = await rollback_request(stack, "race")
    assert again.ok and "nothing to do" in again.message


async def test_a_canary_cluster_turning_unhealthy_rolls_back(stack: Stack) -> None:
    await stack.start_agent()
    await stack.rollout("sick")
    r = await wait_for(lambda: _at_weight(stack, "sick", 20), what="weight 20")
    cluster = r.status.canary_clusters[0]
    change = HealthChange(
        kind="cluster", name=cluster, timestamp=stack.clock.now, to_status="Unhealthy", reason="HeartbeatMissed"
    )
    await stack.bus.publish(subjects.health_change("cluster", cluster), change)
    r = await stack.phase_is("sick", "RolledBack")
    assert r.status.rollback is not None and r.status.rollback.trigger == "ClusterUnhealthy"
    assert cluster in r.status.rollback.reason


async def test_a_finished_rollout_goes_back_to_an_older_revision(stack: Stack) -> None:
    await stack.start_agent()
    await stack.rollout("old", steps=[])
    r = await stack.phase_is("old", "Succeeded")
    assert r.status.stable_revision == 2 and r.status.stable_version == "v2"
    revisions = await stack.bus.kv("revisions", RolloutRevision)

    async def written() -> bool:  # the engine's revision keeper records both versions
        return [x.spec.revision for x in await history.revisions(revisions, "shop", "old")] == [2, 1]

    await wait_for(written, what="revisions 1 and 2")
    missing = await rollback_request(stack, "old", 7)
    assert missing.code == 404
    reply = await rollback_request(stack, "old", 1)
    assert reply.ok and "revision 1 (v1)" in reply.message
    r = await wait_for(lambda: _stable(stack, "old", "v1"), what="v1 stable again")
    assert r.status.phase == "Succeeded" and r.status.stable_revision == 1
    noop = await rollback_request(stack, "old", 1)
    assert noop.ok and "already stable" in noop.message

    async def recorded() -> bool:
        phases = {x.spec.revision: x.status.phase for x in await history.revisions(revisions, "shop", "old")}
        return phases == {1: "RolledBackTo", 2: "Superseded"}

    await wait_for(recorded, what="revision 1 RolledBackTo and 2 Superseded")


async def _stable(s: Stack, name: str, version: str) -> object:
    r = await s.get(name)
    return r if r.status.phase == "Succeeded" and r.status.stable_version == version else None
