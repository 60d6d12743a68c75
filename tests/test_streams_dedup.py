"""JetStream de-duplication windows: TMC_EVENTS remembers message ids for an hour, so an
event re-published after an outage that cut off its acknowledgement is stored once."""

from __future__ import annotations

import pytest

from tmcd.bus import Bus
from tmcd.config import NatsConfig, load_config
from tmcd.runtime.embedded import EmbeddedNats
from tmcd.runtime.selfmetrics import SelfMetrics


async def test_duplicate_windows_are_provisioned_and_used(nats_server: EmbeddedNats) -> None:
    bus = Bus(NatsConfig(), SelfMetrics(), url=nats_server.url)
    await bus.connect(retry=False)
    try:
        cfg = load_config(None, env={}, overrides={"nats.url": nats_server.url})
        await bus.provision(cfg)
        assert (await bus.js.stream_info("TMC_EVENTS")).config.duplicate_window == pytest.approx(3600)
        assert (await bus.js.stream_info("TMC_SYNCER")).config.duplicate_window == pytest.approx(120)

        for _ in range(3):
            await bus.js.publish("tmc.health.cluster.dd-1", b"{}", headers={"Nats-Msg-Id": "dd-1-change-1"})
        info = await bus.js.stream_info("TMC_EVENTS", subjects_filter="tmc.health.cluster.dd-1")
        assert info.state.messages == 1

        # a changed window updates the stream in place; one longer than max_age is capped to it
        changed = load_config(
            None,
            env={},
            overrides={"streams.events.duplicate_window": 600, "streams.workload.max_age": 60},
        )
        result = await bus.provision(changed)
        assert result["TMC_EVENTS"] == "updated" and result["TMC_WORKLOAD"] == "updated"
        assert (await bus.js.stream_info("TMC_EVENTS")).config.duplicate_window == pytest.approx(600)
        assert (await bus.js.stream_info("TMC_WORKLOAD")).config.duplicate_window == pytest.approx(60)
        assert set((await bus.provision(changed)).values()) == {"unchanged"}
    finally:
        await bus.close()
