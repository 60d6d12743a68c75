"""The RevisionKeeper against a real nats-server (per test), on a fake clock: the records a real canary
agent's rollout gets as it succeeds and as a second version is aborted; catching up after a restart and
after a crash between a record's create and its status write; a deleted rollout's records; the limit
with the stable revision kept; two keepers at once; and the reads the rollback engine uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.helpers import wait_for
from tests.test_canary_agent import Stack, _at_weight
from tmcd.bus import KvStore
from tmcd.resources import writes
from tmcd.resources.canary import CanaryRollout, RolloutRevision
from tmcd.resources.meta import ObjectMeta, rfc3339
from tmcd.rollback.history import RevisionKeeper, revision, revisions
from tmcd.rollback.revisions import ROLLOUT_LABEL, owned
from tmcd.runtime.agent import AgentContext
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics


class Keepers:
    """RevisionKeepers on the stack's bus and fake clock, each with its own stop event."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.running: list[tuple[RevisionKeeper, asyncio.Event, asyncio.Task[None]]] = []

    async def start(self, **kw: Any) -> RevisionKeeper:
        keeper = RevisionKeeper(**kw)
        stop = asyncio.Event()
        s = self.stack
        ctx = AgentContext(bus=s.bus, config=s.cfg, metrics=SelfMetrics(), stop=stop, clock=s.clock)
        self.running.append((keeper, stop, asyncio.create_task(keeper.run(ctx))))
        await wait_for(keeper.ready.is_set, what="keeper loaded")
        return keeper

    async def stop(self) -> None:
        for _keeper, stop, task in self.running:
            stop.set()
            await task
        self.running.clear()


@pytest.fixture
async def stack(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(nats_server.url, tmp_path)
    await s.start()
    s.revisions = await s.bus.kv("revisions", RolloutRevision)  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        if s._task is not None and not s._task.done():
            await s.stop_agent()
        await s.bus.close()


@pytest.fixture
async def keepers(stack: Stack) -> AsyncIterator[Keepers]:
    k = Keepers(stack)
    try:
        yield k
    finally:
        await k.stop()


def kv(s: Stack) -> KvStore[RolloutRevision]:
    store: KvStore[RolloutRevision] = s.revisions  # type: ignore[attr-defined]
    return store


async def history(s: Stack, name: str) -> list[tuple[int, str, str, str]]:
    """(revision, phase, trigger, version) newest first, as the rollback engine reads them."""
    return [
        (r.spec.revision, r.status.phase, r.spec.trigger, r.spec.version) for r in await revisions(kv(s), "shop", name)
    ]


async def history_is(s: Stack, name: str, want: list[tuple[int, str, str, str]]) -> None:
    async def check() -> bool:
        return await history(s, name) == want

    try:
        await wait_for(check, what=f"history of {name}", timeout=10.0)
    except AssertionError:
        assert await history(s, name) == want  # shows the difference


async def put_status(s: Stack, name: str, **status: Any) -> CanaryRollout:
    entry = await s.canaries.get(f"shop.{name}")
    assert entry is not None
    r = entry.value
    r = msgspec.structs.replace(r, status=msgspec.structs.replace(r.status, **status))
    await s.canaries.put(f"shop.{name}", r)
    return r


async def test_a_real_rollout_succeeds_then_its_next_version_is_aborted(stack: Stack, keepers: Keepers) -> None:
    keeper = await keepers.start()
    await stack.start_agent()
    await stack.rollout("checkout")
    await wait_for(lambda: _at_weight(stack, "checkout", 20), what="weight 20")
    await history_is(stack, "checkout", [(2, "Active", "CanaryStarted", "v2"), (1, "Active", "Initial", "v1")])
    one = await revision(kv(stack), "shop", "checkout", 1)
    two = await revision(kv(stack), "shop", "checkout", 2)
    assert one is not None and two is not None
    assert one.spec.placement == [f"c{i}" for i in range(6)]  # every eligible cluster runs the stable version
    assert two.spec.weights == {"stable": 80, "canary": 20} and len(two.spec.placement) == 2
    assert two.metadata.labels == {ROLLOUT_LABEL: "checkout"} and two.metadata.owner_references[0].uid == "checkout"
    assert two.metadata.uid and two.metadata.creation_timestamp == rfc3339(stack.clock.now)  # created as the API does
    assert int(two.metadata.resource_version) > 0

    assert (await stack.control("checkout", "promote", full=True)).ok
    await history_is(stack, "checkout", [(2, "Active", "Promoted", "v2"), (1, "Superseded", "Initial", "v1")])
    two = await revision(kv(stack), "shop", "checkout", 2)
    assert two is not None and two.status.outcome == "promoted" and len(two.spec.placement) == 6

    r = await stack.get("checkout")
    spec = msgspec.structs.replace(r.spec, canary_version="v3")
    meta = msgspec.structs.replace(r.metadata, generation=r.metadata.generation + 1)
    await stack.canaries.put("shop.checkout", msgspec.structs.replace(r, spec=spec, metadata=meta))
    await wait_for(lambda: _at_weight(stack, "checkout", 20), what="v3 at weight 20")
    assert (await stack.control("checkout", "abort")).ok
    await stack.phase_is("checkout", "RolledBack")
    await history_is(
        stack,
        "checkout",
        [(3, "Failed", "Aborted", "v3"), (2, "Active", "Promoted", "v2"), (1, "Superseded", "Initial", "v1")],
    )
    three = await revision(kv(stack), "shop", "checkout", 3)
    assert (
        three is not None
        and three.status.outcome == "rolled back to revision 2: Aborted: aborted by request"
        and three.spec.stable_version == "v2"
    )
    assert await revision(kv(stack), "shop", "checkout", 4) is None

    # idempotent: nothing more to write, also for a second keeper started on the same history
    await wait_for(keeper.settled, what="settled")
    writes_before = keeper.writes
    second = await keepers.start()
    await wait_for(second.settled, what="second keeper settled")
    assert second.writes == 0 and keeper.writes == writes_before


async def test_a_restarted_keeper_catches_up_and_completes_a_half_written_record(
    stack: Stack, keepers: Keepers
) -> None:
    keeper = await keepers.start()
    await stack.rollout("cart")
    await put_status(
        stack, "cart", phase="Progressing", stable_revision=1, canary_revision=2, stable_version="v1",
        canary_version="v2", canary_clusters=["c1"], current_weight=10,
    )  # fmt: skip
    await history_is(stack, "cart", [(2, "Active", "CanaryStarted", "v2"), (1, "Active", "Initial", "v1")])
    await keepers.stop()
    # while no keeper runs: the canary is rolled back, and revision 2 reads as just created (as if the
    # keeper had died between creating a record and writing its status)
    await put_status(stack, "cart", phase="RolledBack", abort_reason="ProgressDeadlineExceeded", current_weight=0)
    entry = await kv(stack).get("shop.cart-2")
    assert entry is not None
    await kv(stack).put("shop.cart-2", writes.created(entry.value, now=stack.clock.now, uid="u"))
    stack.clock.now += 30
    keeper = await keepers.start()
    await history_is(stack, "cart", [(2, "Failed", "ProgressDeadlineExceeded", "v2"), (1, "Active", "Initial", "v1")])
    two = await revision(kv(stack), "shop", "cart", 2)
    assert two is not None and two.status.end_time == rfc3339(stack.clock.now) and two.status.start_time
    await wait_for(keeper.settled, what="settled")


async def test_a_deleted_rollout_takes_its_records_and_hand_made_ones_stay(stack: Stack, keepers: Keepers) -> None:
    await keepers.start()
    await stack.rollout("pay")
    await put_status(stack, "pay", phase="Progressing", stable_revision=1, canary_revision=2, canary_version="v2")
    await history_is(stack, "pay", [(2, "Active", "CanaryStarted", "v2"), (1, "Active", "Initial", "v1")])
    mine = await revision(kv(stack), "shop", "pay", 1)
    assert mine is not None
    by_hand = msgspec.structs.replace(mine, metadata=ObjectMeta(name="pay-notes", namespace="shop"))
    await kv(stack).put("shop.pay-notes", by_hand)
    await stack.canaries.delete("shop.pay")
    await history_is(stack, "pay", [])
    assert await kv(stack).get("shop.pay-notes") is not None and not owned(by_hand)


async def test_records_of_a_rollout_deleted_while_no_keeper_ran_are_removed_at_start(
    stack: Stack, keepers: Keepers
) -> None:
    await keepers.start()
    await stack.rollout("gone")
    await put_status(stack, "gone", phase="Progressing", stable_revision=1, canary_revision=2, canary_version="v2")
    await history_is(stack, "gone", [(2, "Active", "CanaryStarted", "v2"), (1, "Active", "Initial", "v1")])
    await keepers.stop()
    await stack.canaries.delete("shop.gone")
    await keepers.start()
    await history_is(stack, "gone", [])


async def test_the_limit_prunes_old_revisions_and_keeps_the_stable_one(stack: Stack, keepers: Keepers) -> None:
    keeper = await keepers.start(default_limit=3)
    await stack.rollout("web")
    await put_status(stack, "web", phase="Progressing", stable_revision=1, canary_revision=2, canary_version="v2")
    await history_is(stack, "web", [(2, "Active", "CanaryStarted", "v2"), (1, "Active", "Initial", "v1")])
    for n in range(3, 8):
        await put_status(stack, "web", phase="Progressing", canary_revision=n, canary_version=f"v{n}")
        await wait_for(lambda n=n: revision(kv(stack), "shop", "web", n), what=f"revision {n}")
        await put_status(stack, "web", phase="RolledBack", abort_reason="Aborted")
        await wait_for(keeper.settled, what="settled")
    await history_is(
        stack,
        "web",
        [
            (7, "Failed", "Aborted", "v7"),
            (6, "Failed", "Aborted", "v6"),
            (5, "Failed", "Aborted", "v5"),
            (1, "Active", "Initial", "v1"),
        ],
    )


async def test_two_keepers_at_once_write_one_history(stack: Stack, keepers: Keepers) -> None:
    a, b = await keepers.start(), await keepers.start()
    for i in range(8):
        await stack.rollout(f"r{i}")
        await put_status(
            stack, f"r{i}", phase="Progressing", stable_revision=1, canary_revision=2, canary_version="v2",
            canary_clusters=["c0"], current_weight=10,
        )  # fmt: skip
    for i in range(8):
        await history_is(stack, f"r{i}", [(2, "Active", "CanaryStarted", "v2"), (1, "Active", "Initial", "v1")])
    await wait_for(lambda: a.settled() and b.settled(), what="both settled")
    assert len(await kv(stack).keys()) == 16
    for i in range(8):  # each record written once: created, then its status
        for n in (1, 2):
            rec = await revision(kv(stack), "shop", f"r{i}", n)
            assert rec is not None and rec.metadata.generation == 1


async def test_revision_reads_for_a_long_rollout_name(stack: Stack, keepers: Keepers) -> None:
    name = "a" * 58 + "-long"
    await keepers.start()
    await stack.rollout(name)
    await put_status(stack, name, phase="Progressing", stable_revision=1, canary_revision=2, canary_version="v2")
    await history_is(stack, name, [(2, "Active", "CanaryStarted", "v2"), (1, "Active", "Initial", "v1")])
    two = await revision(kv(stack), "shop", name, 2)
    assert two is not None and two.metadata.name == "a" * 58 + "-lo-2" and two.spec.rollout == name
    assert await revision(kv(stack), "shop", name, 9) is None
