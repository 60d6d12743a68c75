"""Agents' status writes (tmcd.runtime.status) against a real nats-server: only the status changes,
a concurrent spec or label change is kept (re-read and retried), and creates follow the API's rules."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import msgspec
import pytest

from tmcd.bus import Bus, KvStore
from tmcd.config import NatsConfig
from tmcd.resources.canary import CanaryRollout, CanaryRolloutStatus
from tmcd.resources.examples import example
from tmcd.runtime.selfmetrics import SelfMetrics
from tmcd.runtime.status import StatusConflictError, create_object, update_object, write_status


@pytest.fixture
async def kv(nats_url: str) -> AsyncIterator[KvStore[CanaryRollout]]:
    bus = Bus(NatsConfig(), SelfMetrics(), url=nats_url)
    await bus.connect(retry=False)
    name = f"status-test-{secrets.token_hex(4)}"  # its own bucket on the shared server
    await bus.js.create_key_value(bucket=name, history=5)
    try:
        yield await bus.kv(name, CanaryRollout)
    finally:
        await bus.js.delete_key_value(name)
        await bus.close()


def rollout() -> CanaryRollout:
    obj = example("CanaryRollout")
    assert isinstance(obj, CanaryRollout) and obj.status.phase == "Progressing"
    return obj


async def test_create_follows_the_api_rules(kv: KvStore[CanaryRollout]) -> None:
    entry = await create_object(kv, "shop.checkout", rollout(), clock=lambda: 1_736_935_200.0)
    assert entry is not None
    meta = entry.value.metadata
    assert meta.creation_timestamp == "2025-01-15T10:00:00Z" and meta.generation == 1 and meta.uid
    assert entry.value.status == CanaryRolloutStatus()  # a create stores an empty status
    assert await create_object(kv, "shop.checkout", rollout()) is None  # taken


async def test_a_status_write_keeps_a_concurrent_spec_change(kv: KvStore[CanaryRollout]) -> None:
    first = await create_object(kv, "shop.checkout", rollout())
    assert first is not None
    # a user changes the spec after the agent read the object: the agent's write conflicts, is
    # retried on the fresh object, and keeps the user's spec
    changed = msgspec.structs.replace(first.value, spec=msgspec.structs.replace(first.value.spec, canary_version="v9"))
    user = await update_object(kv, first, changed)
    assert user.value.metadata.generation == 2
    seen: list[str] = []

    def status(obj: CanaryRollout) -> CanaryRolloutStatus:
        seen.append(obj.spec.canary_version)
        return CanaryRolloutStatus(phase="Progressing", current_step_index=1)

    done = await write_status(kv, "shop.checkout", status, current=first)  # stale on purpose
    assert done.written and done.entry is not None
    assert seen == [first.value.spec.canary_version, "v9"]  # called again with the fresh object
    stored = await kv.get("shop.checkout")
    assert stored is not None and stored.revision == done.entry.revision
    assert stored.value.spec.canary_version == "v9" and stored.value.metadata.generation == 2
    assert stored.value.status.phase == "Progressing" and stored.value.status.current_step_index == 1

    unchanged = await write_status(kv, "shop.checkout", lambda _obj: None)
    assert not unchanged.written and unchanged.entry is not None and unchanged.entry.revision == stored.revision
    gone = await write_status(kv, "shop.nobody", lambda _obj: CanaryRolloutStatus())
    assert gone.entry is None and not gone.written


async def test_a_status_write_gives_up_after_its_attempts(kv: KvStore[CanaryRollout]) -> None:
    first = await create_object(kv, "shop.busy", rollout())
    assert first is not None

    def status(obj: CanaryRollout) -> CanaryRolloutStatus:
        return CanaryRolloutStatus(phase="Paused")

    class Racing(KvStore[CanaryRollout]):
        """Someone writes the object between every read and write."""

        def __init__(self, inner: KvStore[CanaryRollout]) -> None:
            self.inner = inner

        async def get(self, key: str):  # type: ignore[no-untyped-def]
            entry = await self.inner.get(key)
            assert entry is not None
            await self.inner.put(key, entry.value)
            return entry

        async def update(self, key: str, value: CanaryRollout, revision: int) -> int:
            return await self.inner.update(key, value, revision)

        @property
        def bucket(self) -> str:
            return self.inner.bucket

    with pytest.raises(StatusConflictError):
        await write_status(Racing(kv), "shop.busy", status, attempts=3)
