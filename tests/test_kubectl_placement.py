"""`kubectl tmc placement simulate|explain` against a real daemon, over NATS and HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import yaml

from tests.helpers import daemon_config, kubectl_tmc_async, nats_connect, new_object, running_daemon, wait_for
from tmcd.resources.examples import example
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import EmbeddedNats

WATCH_TIMEOUT = 30.0
"""Bound on each wait for the `get -w` subprocess (start-up included) on a loaded machine."""


@pytest.fixture
async def daemon(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Daemon]:
    async with running_daemon(daemon_config(nats_server.url, tmp_path, agents="metrics,placement")) as d:
        nc = await nats_connect(nats_server.url)
        cluster = msgspec.to_builtins(example("SyncTarget"))
        rep = await nc.request("tmc.api.create.synctargets", json.dumps({"object": cluster}).encode(), timeout=5)
        # a create stores no status: write the example's (Healthy), as the health agent would
        req = {"name": "sim-001", "object": {**json.loads(rep.data), "status": cluster["status"]}}
        await nc.request("tmc.api.replacestatus.synctargets", json.dumps(req).encode(), timeout=5)
        await nc.close()
        yield d


async def test_simulate_from_file_and_stdin(daemon: Daemon, nats_server: EmbeddedNats, tmp_path: Path) -> None:
    manifest = tmp_path / "placement.yaml"
    manifest.write_text(yaml.safe_dump(new_object("Placement", name="what-if")))
    code, out = await kubectl_tmc_async("placement", "simulate", "-f", str(manifest), "--nats-url", nats_server.url)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("Phase:") and "CLUSTER" in out and "sim-001" in out
    code, out = await kubectl_tmc_async(
        "placement", "simulate", "-f", "-", "-o", "json", "--server", daemon.http.base_url, input=manifest.read_text()
    )
    assert code == 0, out
    decision = json.loads(out)
    assert {c["cluster"] for c in decision["candidates"]} == {"sim-001"}
    for fmt in ("table", "json", "yaml"):  # every format ends its last line, as kubectl does
        code, out = await kubectl_tmc_async(
            "placement", "simulate", "-f", str(manifest), "-o", fmt, "--nats-url", nats_server.url
        )
        assert code == 0 and out.endswith("\n") and not out.endswith("\n\n"), (fmt, out)
    code, out = await kubectl_tmc_async("placement", "simulate", "-f", str(tmp_path / "missing.yaml"))
    assert code == 1 and out.startswith("error: cannot read")


async def test_explain_a_saved_placement(daemon: Daemon, nats_server: EmbeddedNats, tmp_path: Path) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(yaml.safe_dump(new_object("Placement", name="web")))
    code, out = await kubectl_tmc_async("apply", "-f", str(manifest), "--nats-url", nats_server.url)
    assert code == 0, out

    async def explained() -> str | None:  # once the placement agent has decided it
        code, out = await kubectl_tmc_async("placement", "explain", "web", "--nats-url", nats_server.url)
        assert code == 0, out
        return out if "sim-001" in out else None

    out = await wait_for(explained, what="web decided")
    assert out.startswith("Phase:") and "Bound" in out.splitlines()[0]
    header = next(line for line in out.splitlines() if line.startswith("CLUSTER"))
    assert header.split() == ["CLUSTER", "SELECTED", "SCORE", "REASON", "DETAIL"]
    assert "sim-001" in out
    assert out.endswith("\n") and not out.endswith("\n\n")
    for fmt in ("json", "yaml"):
        code, out = await kubectl_tmc_async("placement", "explain", "web", "-o", fmt, "--nats-url", nats_server.url)
        assert code == 0 and out.endswith("\n") and not out.endswith("\n\n"), (fmt, out)
    code, out = await kubectl_tmc_async("placement", "explain", "nope", "--nats-url", nats_server.url)
    assert code == 1 and "NotFound" in out


async def test_get_watch_prints_a_row_per_change(daemon: Daemon, nats_server: EmbeddedNats) -> None:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from tmcd.kubectl.main import main; main()",
        "get", "placements", "-w", "--output-watch-events", "--nats-url", nats_server.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert "No resources found" in (await asyncio.wait_for(proc.stderr.readline(), WATCH_TIMEOUT)).decode()
        nc = await nats_connect(nats_server.url)
        try:
            body = json.dumps({"object": new_object("Placement", name="watched")}).encode()
            await nc.request("tmc.api.create.placements", body, timeout=5)
            # the watch starts at the resourceVersion of the list just printed: the create, made
            # after that list, is the first row whenever the watch itself starts
            seen = [(await asyncio.wait_for(proc.stdout.readline(), WATCH_TIMEOUT)).decode()]
            assert seen[0].split()[:2] == ["ADDED", "watched"], seen
            # decided by the placement agent (Bound), which a later change shows too (status is kept)
            patch = {"name": "watched", "patch": {"metadata": {"labels": {"team": "web"}}}}
            await nc.request("tmc.api.patch.placements", json.dumps(patch).encode(), timeout=5)
            while not any(line.startswith("MODIFIED") and "Bound" in line for line in seen):
                seen.append((await asyncio.wait_for(proc.stdout.readline(), WATCH_TIMEOUT)).decode())
            await nc.request("tmc.api.delete.placements", json.dumps({"name": "watched"}).encode(), timeout=5)
            while not seen[-1].startswith("DELETED"):
                seen.append((await asyncio.wait_for(proc.stdout.readline(), WATCH_TIMEOUT)).decode())
            assert "watched" in seen[-1]
        finally:
            await nc.close()
    finally:
        proc.kill()
        await proc.wait()
