"""``kubectl tmc get -w`` over ``tmc.api.watch``: from a list's resourceVersion nothing is missed,
a watch that ends is resumed where it was, and one that fell behind the window says so."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from tests.apiserver import Api, api_server
from tests.helpers import new_object, wait_for
from tmcd.kubectl.client import Client
from tmcd.kubectl.endpoint import Endpoint
from tmcd.kubectl.errors import ServerError
from tmcd.kubectl.kinds import CliKind, resolve
from tmcd.kubectl.watch import watch_rows
from tmcd.runtime.embedded import EmbeddedNats


def placements() -> CliKind:
    kind = resolve("placements")
    assert kind is not None
    return kind


def rows(url: str, n: int, resource_version: str = "") -> list[str]:
    """The first ``n`` rows ``get placements -w --output-watch-events`` prints after its listing."""
    client = Client(Endpoint("nats", url))
    watch = watch_rows(client, placements(), set(), "", "table", True, False, resource_version=resource_version)
    try:
        return list(itertools.islice(watch, n))
    finally:
        watch.close()
        client.close()


async def create(api: Api, name: str) -> None:
    code, body = await api.request("tmc.api.create.placements", {"object": new_object("Placement", name=name)})
    assert code == "", body


async def test_get_watch_prints_what_changed_after_its_listing(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with api_server(nats_server.url, tmp_path, max_seconds=0.5) as api:
        await create(api, "listed")
        _, listing = await api.request("tmc.api.list.placements", {})
        await create(api, "after-1")  # between the listing and the watch: printed all the same
        await create(api, "after-2")
        watching = asyncio.create_task(
            asyncio.to_thread(rows, nats_server.url, 3, listing["metadata"]["resourceVersion"])
        )
        await wait_for(lambda: len(api.watches) > 0, what="the plugin watching")
        await wait_for(lambda: len(api.watches) == 0, what="tmcd ending that watch (its 0.5 s are up)")
        await create(api, "after-3")  # the plugin watches again from where it was
        printed = await asyncio.wait_for(watching, 30)
        assert [line.split()[:2] for line in printed] == [
            ["ADDED", "after-1"],
            ["ADDED", "after-2"],
            ["ADDED", "after-3"],
        ]


async def test_get_watch_that_fell_behind_the_window_fails(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with api_server(nats_server.url, tmp_path, window=2) as api:
        for i in range(4):
            await create(api, f"p-{i}")
        with pytest.raises(ServerError) as info:
            await asyncio.to_thread(rows, nats_server.url, 1, "1")
        assert info.value.code == 410 and info.value.line().startswith("Error from server (Expired): too old")
