"""Dashboard actions: confirmed, sent over NATS, acknowledged; with --read-only nothing is sent."""

from __future__ import annotations

from typing import Any

from tests.helpers import nats_connect, wait_for
from tmcd.contracts.codec import decode, encode
from tmcd.contracts.messages import ControlReply, SyncControl
from tmcd.contracts.subjects import CTL_SYNC
from tmcd.tui.actions import canary_action, sync_action
from tmcd.tui.app import DashboardApp
from tmcd.tui.feed import Feed
from tmcd.tui.state import DashboardState


async def _app(url: str, read_only: bool) -> tuple[DashboardApp, list[Any]]:
    return DashboardApp(feed=Feed(DashboardState(), url), read_only=read_only), []


async def test_an_action_is_confirmed_sent_and_acknowledged(nats_url: str) -> None:
    nc = await nats_connect(nats_url)
    seen: list[SyncControl] = []

    async def controller(msg: Any) -> None:
        req = decode(msg.subject, msg.data, CTL_SYNC)
        assert isinstance(req, SyncControl)
        seen.append(req)
        await msg.respond(encode(ControlReply(ok=True, target=req.cluster, message="paused", state="paused")))

    sub = await nc.subscribe("tmc.ctl.sync.tui-c1.*", cb=controller)
    await nc.flush()
    app, _ = await _app(nats_url, False)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(lambda: app.feed is not None and app.feed.bus is not None and app.feed.bus.connected)
            app.act(sync_action("tui-c1", "pause"))
            await pilot.pause()
            await pilot.press("n")  # declined: nothing is sent
            await pilot.pause()
            assert seen == []
            app.act(sync_action("tui-c1", "pause"))
            await pilot.pause()
            await pilot.press("y")
            await wait_for(lambda: len(app.acks) == 1, what="the acknowledgement")
            assert seen[0].action == "pause" and seen[0].requested_by == "tmcd-dashboard"
            assert app.acks[0].ok and app.acks[0].message == "paused"
    finally:
        await sub.unsubscribe()
        await nc.close()


async def test_read_only_sends_nothing(nats_url: str) -> None:
    nc = await nats_connect(nats_url)
    seen: list[str] = []

    async def anything(msg: Any) -> None:
        seen.append(msg.subject)

    sub = await nc.subscribe("tmc.ctl.>", cb=anything)
    await nc.flush()
    app, _ = await _app(nats_url, True)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(lambda: app.feed is not None and app.feed.bus is not None and app.feed.bus.connected)
            for action in (sync_action("tui-c2", "force"), canary_action("shop", "web", "abort")):
                app.act(action)
                await pilot.pause()
                assert not isinstance(app.screen, type(None)) and app.screen.__class__.__name__ != "ConfirmDialog"
            assert app.feed is not None and app.feed.bus is not None
            await app.feed.bus.flush()  # anything the app had sent has reached the server...
            await nc.flush()  # ...and been delivered to this subscriber
            assert seen == [] and app.acks == []
    finally:
        await sub.unsubscribe()
        await nc.close()
