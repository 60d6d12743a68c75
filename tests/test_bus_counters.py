"""What operators alert on besides logs: nats-py's errors, dropped dead letters and the
health outbox as metrics (tmc_nats_errors_total, tmc_dead_letters_dropped_total,
tmc_health_outbox_pending)."""

from __future__ import annotations

import asyncio

import nats

from tests.helpers import wait_for
from tmcd.bus import Bus, Delivery
from tmcd.bus.deadletter import DeadLetterQueue
from tmcd.bus.natserrors import METRIC_KINDS, classify, metric_kind
from tmcd.config import NatsConfig
from tmcd.contracts import subjects as s
from tmcd.contracts.codec import InvalidMessage, encode
from tmcd.contracts.messages import SyncEvent
from tmcd.runtime.selfmetrics import SelfMetrics


def value(metrics: SelfMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_every_error_kind_is_exported_at_zero_and_maps_to_a_fixed_label() -> None:
    metrics = SelfMetrics()
    for kind in METRIC_KINDS:
        assert metrics.registry.get_sample_value("tmc_nats_errors_total", {"kind": kind}) == 0.0
    assert value(metrics, "tmc_dead_letters_dropped_total") == 0.0
    errors = [
        nats.errors.SlowConsumerError(subject="x", reply="", sid=1, sub=None),
        nats.errors.AuthorizationError(),
        nats.errors.StaleConnectionError(),
        nats.errors.FlushTimeoutError(),
        ValueError("a bug in a callback"),
        nats.errors.Error("nats: 'Permissions Violation for Publish to \"x\"'"),
    ]
    kinds = [metric_kind(k) for e in errors if (k := classify(e)) is not None]
    assert kinds == [
        "slow_consumer",
        "authorization_violation",
        "stale_connection",
        "timeout",
        "other",
        "permissions_violation",
    ]
    assert set(kinds) <= set(METRIC_KINDS)


async def test_a_slow_consumer_is_counted(nats_url: str) -> None:
    metrics = SelfMetrics()
    bus = Bus(NatsConfig(), metrics, url=nats_url)
    await bus.connect(retry=False)
    release = asyncio.Event()

    async def handler(_d: Delivery[SyncEvent]) -> None:
        await release.wait()

    subject = s.syncer_sync("counted-slow")
    sub = await bus.subscribe(subject, handler, channel=s.SYNCER_SYNC, max_pending=5)
    nc = await nats.connect(nats_url)
    try:
        for i in range(50):
            await nc.publish(
                subject, encode(SyncEvent(cluster="counted-slow", timestamp=1.0, resource="v1/pods", name=f"e-{i}"))
            )
        await nc.flush()

        async def counted() -> bool:
            return value(metrics, "tmc_nats_errors_total", kind="slow_consumer") >= 1

        await wait_for(counted, what="the slow consumer counted")
    finally:
        release.set()
        await sub.unsubscribe()
        await nc.close()
        await bus.close()


async def test_dropped_dead_letters_are_counted() -> None:
    metrics = SelfMetrics()
    gate = asyncio.Event()
    published: list[str] = []

    async def publish(subject: str, _data: bytes, _headers: dict[str, str]) -> None:
        await gate.wait()
        published.append(subject)

    queue = DeadLetterQueue(publish, lambda: 0.0, max_messages=2, on_drop=metrics.dead_letters_dropped.inc)
    err = InvalidMessage("malformed_json", "x", "sync_event")
    results = [queue.add(f"tmc.syncer.c-{i}.sync", b"{", err) for i in range(5)]
    # the first is taken by the publisher at once; two more fit the backlog
    await asyncio.sleep(0)
    assert results[:2] == [True, True] and results.count(False) >= 2
    assert value(metrics, "tmc_dead_letters_dropped_total") == results.count(False)
    gate.set()
    await queue.settle(5.0, closed=False)
    assert len(published) == results.count(True)


async def test_dead_letters_left_at_close_are_counted() -> None:
    metrics = SelfMetrics()

    async def never(_s: str, _d: bytes, _h: dict[str, str]) -> None:
        await asyncio.Event().wait()

    queue = DeadLetterQueue(never, lambda: 0.0, on_drop=metrics.dead_letters_dropped.inc)
    err = InvalidMessage("malformed_json", "x", "sync_event")
    for i in range(3):
        queue.add(f"tmc.syncer.c-{i}.sync", b"{", err)
    await asyncio.sleep(0)
    await queue.settle(0.05, closed=True)
    # one was in flight when the publisher was cancelled (lost as well), two never left the queue
    assert value(metrics, "tmc_dead_letters_dropped_total") >= 2


async def test_the_health_outbox_is_a_gauge() -> None:
    """Events waiting for NATS show in tmc_health_outbox_pending, and 0 once delivered."""
    from types import SimpleNamespace
    from typing import Any

    from tmcd.contracts.messages import HealthChange
    from tmcd.health.agent import HealthAgent
    from tmcd.health.metrics import HealthMetrics

    metrics = SelfMetrics()
    agent = HealthAgent()
    agent.metrics = HealthMetrics(metrics.registry)
    for name in ("c-1", "c-2"):
        agent.outbox.add(
            HealthChange(kind="cluster", name=name, timestamp=1.0, from_status="Healthy", to_status="Unhealthy")
        )
    published: list[str] = []

    async def js_publish(subject: str, _msg: object, _headers: object = None) -> int:
        published.append(subject)
        return len(published)

    bus = SimpleNamespace(connected=False, js_publish=js_publish)
    ctx: Any = SimpleNamespace(bus=bus, clock=lambda: 2.0)
    assert not await agent.deliver(ctx, store=None)  # type: ignore[arg-type]
    assert value(metrics, "tmc_health_outbox_pending") == 2
    bus.connected = True
    assert await agent.deliver(ctx, store=None)  # type: ignore[arg-type]
    assert published == ["tmc.health.cluster.c-1", "tmc.health.cluster.c-2"]
    assert value(metrics, "tmc_health_outbox_pending") == 0
