"""Watches served from the cache: HTTP server-sent events and ``tmc.api.watch.<plural>`` over NATS.
Errors come before the stream; a watch resumes from a resourceVersion in the window; NATS watches
end on their timeout or shutdown with a last message, and one whose client left is released."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from tests.apiserver import Api, api_server, consumers
from tests.helpers import nats_connect, new_object, wait_for
from tmcd.api.nats_watch import END_HEADER
from tmcd.runtime.embedded import EmbeddedNats


@pytest.fixture
async def api(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Api]:
    async with api_server(nats_server.url, tmp_path, window=4, heartbeat=0.05, max_seconds=30) as a:
        yield a


async def create(api: Api, name: str, **labels: str) -> dict[str, Any]:
    code, obj = await api.request(
        "tmc.api.create.placements", {"object": new_object("Placement", name=name, labels=labels)}
    )
    assert code == "", obj
    return obj  # type: ignore[no-any-return]


async def sse(
    api: Api, params: dict[str, str], want: int, headers: dict[str, str] | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """(event, id, data) of the first ``want`` events of an HTTP watch."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    async with api.http.get(api.base + "/api/v1/placements", params={"watch": "1", **params}, headers=headers) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
        event, rv = "", ""
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event, rv = line[7:], ""
            elif line.startswith("id: "):
                rv = line[4:]
            elif line.startswith("data: "):
                out.append((event, rv, json.loads(line[6:])))
                if len(out) == want:
                    break
    return out


# -- HTTP -----------------------------------------------------------------------------------------


async def test_http_watch_errors_are_answered_before_the_stream(api: Api) -> None:
    for i in range(6):  # more changes than the window (4) holds
        await create(api, f"p-{i}")
    _, listing = await api.call("GET", "/api/v1/placements")
    latest = int(listing["metadata"]["resourceVersion"])
    cases = [
        ({"resourceVersion": "abc"}, {}, 400, "BadRequest"),
        ({}, {"Last-Event-ID": "x1"}, 400, "BadRequest"),
        ({"resourceVersion": "1"}, {}, 410, "Expired"),  # older than the window
        ({}, {"Last-Event-ID": "1"}, 410, "Expired"),
        ({"resourceVersion": str(latest + 100)}, {}, 410, "Expired"),  # never issued by this bucket
        ({"timeoutSeconds": "-1"}, {}, 400, "BadRequest"),
        ({"labelSelector": "a in"}, {}, 400, "BadRequest"),
    ]
    for params, headers, code, reason in cases:
        async with api.http.get(api.base + "/api/v1/placements", params={"watch": "1", **params}, headers=headers) as r:
            body = await r.read()  # a complete JSON body: no stream was started
            assert (r.status, r.headers["Content-Type"]) == (code, "application/json"), (params, headers, body)
            status_obj = json.loads(body)
            assert status_obj["kind"] == "Status" and status_obj["reason"] == reason and status_obj["code"] == code
    events = await sse(api, {"resourceVersion": str(latest - 2)}, 2)  # within the window: the last two
    assert [(e, d["object"]["metadata"]["name"]) for e, _, d in events] == [("ADDED", "p-4"), ("ADDED", "p-5")]


async def test_http_watch_resumes_from_last_event_id_and_follows_a_selection(api: Api) -> None:
    await create(api, "gold-1", tier="gold")
    first = await sse(api, {"labelSelector": "tier=gold"}, 1)
    assert [(e, d["object"]["metadata"]["name"]) for e, _, d in first] == [("ADDED", "gold-1")]
    last_id = first[0][1]
    await create(api, "silver-1", tier="silver")  # never in the selection
    await api.call("PATCH", "/api/v1/placements/silver-1", json={"metadata": {"labels": {"tier": "gold"}}})
    await api.call("PATCH", "/api/v1/placements/gold-1", json={"metadata": {"labels": {"tier": "bronze"}}})
    # what an EventSource does when it reconnects: only what happened since, as the selection sees it
    events = await sse(api, {"labelSelector": "tier=gold"}, 2, headers={"Last-Event-ID": last_id})
    assert [(e, d["object"]["metadata"]["name"]) for e, _, d in events] == [
        ("ADDED", "silver-1"),
        ("DELETED", "gold-1"),
    ]
    assert all(int(rv) > int(last_id) for _, rv, _ in events)


async def test_http_watch_ends_after_its_time(api: Api) -> None:
    api.ctx.watch_timeout = 0.2
    await create(api, "a")
    async with api.http.get(api.base + "/api/v1/placements", params={"watch": "1"}) as r:
        body = await asyncio.wait_for(r.read(), 10)  # the stream ends by itself
    assert body.startswith(b"event: ADDED\nid: ") and body.endswith(b"\n\n")
    assert api.ctx.reads().watching == 0


# -- NATS -----------------------------------------------------------------------------------------


class NatsWatch:
    """A watch over NATS as a client makes one: subscribe to an inbox, publish the request to it."""

    def __init__(self, api: Api, body: dict[str, Any], nc: Any = None) -> None:
        self.nc = nc or api.nc
        self.body = body
        self.queue: asyncio.Queue[Msg] = asyncio.Queue()
        self.sub: Any = None

    async def start(self) -> NatsWatch:
        inbox = self.nc.new_inbox()
        self.sub = await self.nc.subscribe(inbox, cb=self.queue.put)
        await self.nc.publish("tmc.api.watch.placements", json.dumps(self.body).encode(), reply=inbox)
        return self

    async def next(self, skip_beats: bool = True) -> tuple[dict[str, Any], dict[str, str]]:
        """The next message: (event, headers); heartbeats (BOOKMARKs sent as requests) skipped."""
        while True:
            msg = await asyncio.wait_for(self.queue.get(), 10)
            if skip_beats and msg.reply:
                continue
            return json.loads(msg.data), dict(msg.headers or {})

    async def events(self, n: int) -> list[tuple[str, str]]:
        """(type, name) of the next ``n`` ADDED/MODIFIED/DELETED events."""
        out: list[tuple[str, str]] = []
        while len(out) < n:
            event, _ = await self.next()
            if event["type"] != "BOOKMARK":
                out.append((event["type"], event["object"]["metadata"]["name"]))
        return out


async def test_nats_list_then_watch_misses_nothing(api: Api) -> None:
    await create(api, "before")
    _, listing = await api.request("tmc.api.list.placements", {})
    listed_at = listing["metadata"]["resourceVersion"]
    await create(api, "between-1")  # after the list, before the watch: still seen
    await create(api, "between-2")
    w = await NatsWatch(api, {"resourceVersion": listed_at}).start()
    first, _ = await w.next()
    assert first["type"] == "BOOKMARK" and int(first["object"]["metadata"]["resourceVersion"]) >= int(listed_at) + 2
    assert await w.events(2) == [("ADDED", "between-1"), ("ADDED", "between-2")]
    await api.request("tmc.api.patch.placements", {"name": "before", "patch": {"metadata": {"labels": {"a": "b"}}}})
    await api.request("tmc.api.delete.placements", {"name": "between-1"})
    assert await w.events(2) == [("MODIFIED", "before"), ("DELETED", "between-1")]
    # without a resourceVersion: the current objects first
    w2 = await NatsWatch(api, {}).start()
    assert (await w2.next())[0]["type"] == "BOOKMARK"
    assert await w2.events(2) == [("ADDED", "before"), ("ADDED", "between-2")]
    beat = await asyncio.wait_for(w2.queue.get(), 10)  # heartbeats are BOOKMARKs sent as requests
    assert beat.reply and json.loads(beat.data)["type"] == "BOOKMARK"


async def test_nats_watch_errors_are_status_replies(api: Api) -> None:
    for i in range(6):
        await create(api, f"p-{i}")
    for body, code, reason in [
        ({"resourceVersion": "abc"}, "400", "BadRequest"),
        ({"resourceVersion": "1"}, "410", "Expired"),
        ({"labelSelector": "in in"}, "400", "BadRequest"),
        ({"timeoutSeconds": -1}, "400", "BadRequest"),
    ]:
        rep = await api.nc.request("tmc.api.watch.placements", json.dumps(body).encode(), timeout=10)
        assert (rep.headers or {}).get("Nats-Service-Error-Code") == code, body
        status = json.loads(rep.data)
        assert status["kind"] == "Status" and status["reason"] == reason and status["code"] == int(code)
    rep = await api.nc.request("tmc.api.watch.placements", b"\x00garbage", timeout=10)
    assert (rep.headers or {}).get("Nats-Service-Error-Code") == "400"
    assert api.ctx.reads().watching == 0


async def test_nats_watch_ends_and_resumes_without_a_gap(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with api_server(nats_server.url, tmp_path, heartbeat=0.05, max_seconds=0.3) as api:
        w = await NatsWatch(api, {}).start()
        while True:  # the watch's time is up: its last message says so and where to resume
            event, headers = await w.next()
            if END_HEADER in headers:
                break
        assert headers[END_HEADER] == "timeout" and event["type"] == "BOOKMARK"
        resume_at = event["object"]["metadata"]["resourceVersion"]
        await create(api, "while-away")
        again = await NatsWatch(api, {"resourceVersion": resume_at}).start()
        assert await again.events(1) == [("ADDED", "while-away")]
        # tmcd stopping: every open watch gets its last message
        await api.watches.close()
        while True:
            event, headers = await again.next()
            if END_HEADER in headers:
                break
        assert headers[END_HEADER] == "shutdown" and event["type"] == "BOOKMARK"
        assert len(api.watches) == 0 and api.ctx.reads().watching == 0


@pytest.mark.slow
async def test_abandoned_nats_watches_leave_nothing_behind(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with api_server(nats_server.url, tmp_path, heartbeat=0.5) as api:
        await abandon_watches(api, nats_server)


async def abandon_watches(api: Api, nats_server: EmbeddedNats) -> None:
    tasks_before = len(asyncio.all_tasks())
    consumers_before = await consumers(api.bus)
    subs_before = len(api.bus.nc._subs)
    for leave in ("disconnect", "unsubscribe"):
        nc = await nats_connect(nats_server.url)
        watches = [await NatsWatch(api, {}, nc).start() for _ in range(1000)]
        await wait_for(lambda: len(api.watches) == 1000, timeout=30, what="1,000 watches open")
        if leave == "disconnect":
            await nc.close()  # e.g. the client process died
        else:
            for w in watches:
                await w.sub.unsubscribe()
            await nc.flush()
        # the next heartbeat of each finds nobody listening: each watch ends at once
        await wait_for(lambda: len(api.watches) == 0, timeout=30, what=f"watches released after {leave}")
        assert api.ctx.reads().watching == 0
        if leave == "unsubscribe":
            await nc.close()
    await wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before, what="no task left")
    assert await consumers(api.bus) == consumers_before
    assert len(api.bus.nc._subs) == subs_before
