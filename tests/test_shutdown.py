"""SIGTERM on a real `tmcd run` process under load: exit 0 within the shutdown timeout, and
every message published before the signal acked exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import nats

from tests.helpers import free_port
from tmcd.contracts import subjects as s
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import SyncEvent
from tmcd.runtime.embedded import EmbeddedNats


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc.returncode is None, "tmcd exited early"
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("tmcd did not become ready")


async def test_sigterm_under_load_acks_everything_once(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tmcd.cli.main",
        "run",
        "--nats-url",
        nats_server.url,
        "--http-listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(tmp_path),
        "--agents",
        "metrics",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TMCD_CONSUMER_BATCH": "100"},
    )
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        await _wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        acked: list[int] = []
        stop_publishing = asyncio.Event()
        enough = asyncio.Event()

        async def publisher(worker: int) -> None:
            i = 0
            while not stop_publishing.is_set():
                ev = SyncEvent(
                    cluster=f"load-{worker}", timestamp=time.time(), resource="v1/configmaps", name=f"cm-{i}"
                )
                ack = await js.publish(s.syncer_sync(f"load-{worker}"), encode(ev))
                acked.append(ack.seq)
                if len(acked) >= 3000:
                    enough.set()
                i += 1

        tasks = [asyncio.create_task(publisher(w)) for w in range(4)]
        await asyncio.wait_for(enough.wait(), 30)
        last_before_signal = max(acked)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.05)  # keep the load on while tmcd shuts down
        stop_publishing.set()
        await asyncio.gather(*tasks)
        code = await asyncio.wait_for(proc.wait(), 15)
        took = time.monotonic() - signalled
        stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
        assert code == 0, stderr
        assert took < 10.0, f"shutdown took {took:.1f}s"
        assert "received SIGTERM" in stderr

        info = await js.consumer_info("TMC_SYNCER", "tmcd-metrics-syncer")
        # everything published before the signal was acked ...
        assert info.ack_floor.stream_seq >= last_before_signal, (info.ack_floor, last_before_signal)
        assert info.num_ack_pending == 0
        # ... exactly once: one delivery per stream message, no redelivery
        assert info.delivered.consumer_seq == info.delivered.stream_seq
        assert info.num_redelivered == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await nc.close()
