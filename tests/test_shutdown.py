"""Shutdown: SIGTERM on a real `tmcd run` process under load (exit 0 within the shutdown
timeout, every message published before the signal acked exactly once), and in-process, every
stop step bounded and independent: one that raises or hangs is cut short, the later ones still
run, and the embedded nats-server always stops."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import free_port, kill, nats_connect, running_daemon, start_tmcd, wait_for, wait_ready
from tmcd.config import load_config
from tmcd.contracts import subjects as s
from tmcd.contracts.codec import encode
from tmcd.contracts.messages import SyncEvent
from tmcd.runtime.daemon import Daemon
from tmcd.runtime.embedded import EmbeddedNats


async def test_sigterm_under_load_acks_everything_once(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    port = free_port()
    proc = await start_tmcd(
        *("run", "--nats-url", nats_server.url, "--http-listen", f"127.0.0.1:{port}"),
        *("--data-dir", str(tmp_path), "--agents", "metrics"),
        env={"TMCD_CONSUMER_BATCH": "100"},
    )
    nc = await nats_connect(nats_server.url)
    js = nc.jetstream()
    try:
        await wait_ready(f"http://127.0.0.1:{port}", proc)
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
        await kill(proc)
        await nc.close()


# --------------------------------------------------------------------------- every stop step bounded and independent

SHUTDOWN_TIMEOUT = 1.5
SLACK = 0.5
"""Scheduling slack on a loaded 2-core machine; stop() itself budgets SHUTDOWN_TIMEOUT."""

STEPS: dict[str, tuple[Callable[[Daemon], Any], str]] = {
    "NATS API service": (lambda d: d.api_service, "stop"),
    "agents": (lambda d: d.supervisor, "wait_stopped"),
    "NATS drain": (lambda d: d.bus, "close"),
    "HTTP server": (lambda d: d.http, "stop"),
    "health checks": (lambda d: d.component_checks, "stop"),
    "telemetry": (lambda d: d.telemetry, "aclose"),
}
"""Shutdown step (as logged) -> (the object whose method it calls, the method)."""


async def _hang(*_args: object, **_kw: object) -> None:
    await asyncio.Event().wait()


async def _raise(*_args: object, **_kw: object) -> None:
    raise RuntimeError("broken on purpose")


def _embedded_daemon(data: Path) -> contextlib.AbstractAsyncContextManager[Daemon]:
    """A daemon with its embedded nats-server (no nats.url), started and stopped by running_daemon."""
    overrides = {"data_dir": str(data), "http.listen": "127.0.0.1:0", "agents": "metrics"}
    cfg = load_config(None, env={}, overrides={**overrides, "runtime.shutdown_timeout": SHUTDOWN_TIMEOUT})
    return running_daemon(cfg)


def _sabotage(
    monkeypatch: pytest.MonkeyPatch, d: Daemon, steps: list[str], how: Callable[..., Awaitable[None]]
) -> list[Callable[[], Awaitable[Any]]]:
    """Replace the steps' methods; returns the originals as cleanups (the test runs them at the end)."""
    cleanups: list[Callable[[], Awaitable[Any]]] = []
    for step in steps:
        owner_of, method = STEPS[step]
        owner = owner_of(d)
        original = getattr(owner, method)
        monkeypatch.setattr(owner, method, how)
        cleanups.append(functools.partial(original, 1.0) if method == "wait_stopped" else original)
    return cleanups


async def _stop_and_check(d: Daemon, data: Path) -> tuple[bool, float]:
    assert d.embedded is not None and d.embedded.pid is not None
    proc = d.embedded._proc
    assert proc is not None
    began = time.monotonic()
    clean = await d.stop()
    took = time.monotonic() - began
    # whatever happened before, the embedded nats-server is gone and its URL file removed
    await asyncio.to_thread(proc.wait, 5)
    assert not (data / "nats.url").exists()
    return clean, took


async def _cleanup(cleanups: list[Callable[[], Awaitable[Any]]]) -> None:
    """Run what the sabotaged steps skipped, so the test leaves nothing behind."""
    for undo in cleanups:
        with contextlib.suppress(Exception):  # e.g. a bus closing after its server is gone
            await asyncio.wait_for(undo(), 5)
    # nats-py's close() of a connection whose server is gone can raise before it cancels its
    # subscription tasks: cancel those here
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not current and "Subscription._wait_for_msgs" in repr(task.get_coro()):
            task.cancel()
            await asyncio.wait({task}, timeout=5)


@pytest.mark.parametrize("step", list(STEPS))
async def test_a_hanging_step_is_cut_short_and_the_rest_still_runs(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    async with _embedded_daemon(data) as d:
        base = d.http.base_url
        cleanups = _sabotage(monkeypatch, d, [step], _hang)
        try:
            clean, took = await _stop_and_check(d, data)
            assert clean is False
            assert took < SHUTDOWN_TIMEOUT + SLACK, f"stop() took {took:.2f}s"
            assert f"shutdown: {step} did not finish within" in caplog.text
            if step != "HTTP server":  # the later steps ran: HTTP no longer answers
                with pytest.raises(aiohttp.ClientConnectionError):
                    async with aiohttp.ClientSession() as s, s.get(f"{base}/livez"):
                        pass
            if step != "NATS drain":
                assert d.bus is not None and not d.bus.connected
        finally:
            await _cleanup(cleanups)


async def test_every_step_raising_still_stops_nats_quickly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    async with _embedded_daemon(data) as d:
        cleanups = _sabotage(monkeypatch, d, list(STEPS), _raise)
        try:
            clean, took = await _stop_and_check(d, data)
            assert clean is False and took < SHUTDOWN_TIMEOUT
            for step in STEPS:
                assert f"shutdown: {step} failed: broken on purpose" in caplog.text
        finally:
            await _cleanup(cleanups)
        assert await d.stop() is False  # a second call reports the same and does nothing


async def test_a_failing_nats_server_stop_still_terminates_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    async with _embedded_daemon(data) as d:
        assert d.embedded is not None

        def broken(_timeout: float) -> None:
            raise OSError("cannot signal")

        monkeypatch.setattr(d.embedded, "stop", broken)
        clean, _took = await _stop_and_check(d, data)  # SIGTERM as the last resort
        assert clean is False
        monkeypatch.undo()
        d.embedded.stop(5)  # reap


async def test_cancelled_stop_still_terminates_nats_and_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    async with _embedded_daemon(data) as d:
        assert d.embedded is not None and d.embedded._proc is not None
        proc = d.embedded._proc
        cleanups = _sabotage(monkeypatch, d, ["agents"], _hang)
        stopping = asyncio.create_task(d.stop())
        await wait_for(lambda: d.stop_event.is_set(), what="stop started")
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        await asyncio.to_thread(proc.wait, 5)
        assert not (data / "nats.url").exists()
        monkeypatch.undo()
        await _cleanup(cleanups)
