"""Watch mode when its API server misbehaves: down at start, lost later, 500s, cut watch streams,
a kubeconfig that is not there yet.  The fake API server (tests/fakekube.py) refuses connections
(stopped, then started again on the same port), answers errors on demand and cuts watches; the
kube agent's sleep is injected, so a backoff ends when the test releases it, never on a timer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from tests import tools
from tests.fakekube import ANALYSISTEMPLATE, CANARYROLLOUT, FakeKube, write_kubeconfig
from tests.helpers import daemon_config, get, running_daemon, sample, wait_for
from tests.test_kube_watch import NS, Watch, cr, watching
from tests.test_promtool_metrics import promtool_check
from tmcd.kube.agent import KubeAgent
from tmcd.kube.health import Backoff
from tmcd.resources.canary import CanaryRolloutStatus
from tmcd.resources.kinds import CANARY_ROLLOUT
from tmcd.runtime.embedded import EmbeddedNats

LISTS = "canaryrollouts.tmc.kcp.io in shop, analysistemplates.tmc.kcp.io in shop"


class Sleeps:
    """The agent's sleep: records each delay and returns when the test calls :meth:`release` (or the
    agent wakes it: stop, the API server answering again)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.waiting = 0
        self._release = asyncio.Event()

    async def __call__(self, delay: float, wake: asyncio.Event) -> None:
        self.delays.append(delay)
        self.waiting += 1
        release = self._release
        tasks = [asyncio.ensure_future(release.wait()), asyncio.ensure_future(wake.wait())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiting -= 1
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def release(self) -> None:
        """End every sleep now in progress."""
        self._release.set()
        self._release = asyncio.Event()


@pytest.fixture
async def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def w(nats_server: EmbeddedNats, tmp_path: Path, sleeps: Sleeps) -> AsyncIterator[Watch]:
    async with watching("fake", nats_server, tmp_path, KubeAgent(sleep=sleeps)) as watch:
        yield watch


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def infos(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and text in r.getMessage()]


async def set_status(w: Watch, name: str, **status: object) -> None:
    """What the canary agent does: write a stored rollout's status."""
    st = msgspec.to_builtins(CanaryRolloutStatus(**status))
    await w.store.patch_status(CANARY_ROLLOUT, w.ns, name, {"status": st})


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success() -> None:
    b = Backoff(1.0, 30.0)
    assert [b.next() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    b.reset()
    assert b.next() == 1.0


async def test_an_api_server_down_at_start_is_retried_and_readyz_waits_for_the_first_lists(
    w: Watch, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tmcd.kube")
    await w.fake.stop()  # connections refused from the start
    await w.k.put(CANARYROLLOUT, cr("web"))
    w.launch()
    await wait_for(lambda: sleeps.waiting == 2, what="both watches backing off")
    for round_ in range(2):  # nothing listed yet: the backoff doubles
        sleeps.release()
        await wait_for(lambda n=round_: len(sleeps.delays) == 4 + 2 * n and sleeps.waiting == 2, what="next round")
    assert sorted(sleeps.delays) == [1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    reason = w.agent.health.ready()
    assert reason is not None and reason.startswith(f"waiting for the first list of {LISTS}")
    assert "Cannot connect" in reason
    assert w.metric("tmc_kube_api_up") == 0
    assert w._task is not None and not w._task.done()  # no crash for the supervisor to restart
    assert len(warnings(caplog, "cannot be reached")) == 1  # one line, however many attempts

    await w.fake.start()  # the same port
    sleeps.release()
    await wait_for(lambda: w.agent.health.ready() is None, what="ready after the first lists")
    await wait_for(lambda: w.stored("web"), what="the CR mirrored")
    assert w.metric("tmc_kube_api_up") == 1 and w.agent.health.serving() is None
    assert len(infos(caplog, "answers again")) == 1
    assert w.metric("tmc_kube_relists_total", kind="CanaryRollout", reason="start") == 1


async def test_a_lost_api_server_keeps_readyz_and_the_newest_status_lands_when_it_is_back(
    w: Watch, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tmcd.kube")
    await w.k.put(CANARYROLLOUT, cr("web"))
    await w.start()
    await wait_for(lambda: w.phase("web"), what="Pending written")
    await w.fake.stop()  # the API server goes away: the watches end, resuming is refused
    await wait_for(lambda: w.metric("tmc_kube_api_up") == 0, what="the API server seen down")
    assert w.agent.health.ready() is None  # ready once, ready for good: the rollouts keep running
    serving = w.agent.health.serving()
    assert serving is not None and serving.startswith("API server (the kubeconfig's current context) unreachable")

    await set_status(w, "web", phase="Progressing", current_weight=20)
    await wait_for(lambda: w.metric("tmc_kube_status_writes_total", result="unavailable") == 1, what="a failed write")
    await set_status(w, "web", phase="Paused", current_weight=20, pause_reason="UserPaused", message="paused")
    writer = w.agent.writer
    assert writer is not None
    await wait_for(
        lambda: [r.status.phase for r in writer.pending.values()] == ["Paused"], what="the newest status waiting"
    )
    assert w.metric("tmc_kube_status_writes_pending") == 1  # one write per CR, the newest
    assert len(warnings(caplog, "cannot be reached")) == 1

    patches = len(w.fake.of("PATCH", "/web/status"))
    await w.fake.start()
    sleeps.release()  # the watches try again; the status writer is woken when they get through

    async def paused() -> bool:
        return await w.phase("web") == "Paused"

    await wait_for(paused, what="the newest status written")
    written = [q.body["status"]["phase"] for q in w.fake.of("PATCH", "/web/status")[patches:]]
    assert written == ["Paused"]  # Progressing was never written: the newer status replaced it
    events = await wait_for(w.k.events, what="the Event, created after the write")
    assert [e["reason"] for e in events] == ["Paused"]
    assert w.metric("tmc_kube_status_writes_pending") == 0 and w.metric("tmc_kube_api_up") == 1
    assert len(infos(caplog, "answers again")) == 1


async def test_a_500_on_a_status_write_is_retried_with_backoff_until_it_lands(w: Watch, sleeps: Sleeps) -> None:
    await w.k.put(CANARYROLLOUT, cr("web"))
    await w.start()
    await wait_for(lambda: w.phase("web"), what="Pending written")
    w.fake.fail(500, method="PATCH", suffix="/web/status", times=2)
    await set_status(w, "web", phase="Progressing", current_weight=20)
    await wait_for(lambda: sleeps.waiting == 1, what="the write backing off")
    assert await w.phase("web") == "Pending" and sleeps.delays == [1.0]
    serving = w.agent.health.serving()
    assert serving is not None and serving.startswith("status writes: ") and "HTTP 500" in serving
    assert w.metric("tmc_kube_api_up") == 1  # a 500 is an answer: the API server is there
    sleeps.release()
    await wait_for(lambda: len(sleeps.delays) == 2 and sleeps.waiting == 1, what="the second backoff")
    assert sleeps.delays == [1.0, 2.0]
    sleeps.release()

    async def progressing() -> bool:
        return await w.phase("web") == "Progressing"

    await wait_for(progressing, what="the status written")
    await wait_for(lambda: w.agent.health.serving() is None, what="healthz clear once the write landed")
    assert w.metric("tmc_kube_status_writes_total", result="unavailable") == 2


async def test_a_status_write_to_a_deleted_cr_ends_there(w: Watch, sleeps: Sleeps) -> None:
    await w.k.put(CANARYROLLOUT, cr("web"))
    await w.start()
    await wait_for(lambda: w.phase("web"), what="Pending written")
    del w.fake.objects[(CANARYROLLOUT, NS, "web")]  # gone, and the watch missed it
    await set_status(w, "web", phase="Progressing")
    await wait_for(lambda: w.metric("tmc_kube_status_writes_total", result="not_found") == 1, what="the 404")
    await set_status(w, "web", phase="Paused", pause_reason="UserPaused")  # nothing more to write to it
    await w.k.put(CANARYROLLOUT, cr("sentinel"))
    await wait_for(lambda: w.stored("sentinel"), what="a later event handled")
    assert len(w.fake.of("PATCH", "/web/status")) == 2 and sleeps.delays == []  # Pending, then the 404
    assert w.metric("tmc_kube_status_writes_pending") == 0


async def test_a_cut_watch_resumes_at_once_and_backs_off_when_it_keeps_being_cut(
    w: Watch, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tmcd.kube")
    await w.start()
    await w.k.put(CANARYROLLOUT, cr("a"))
    await wait_for(lambda: w.phase("a"), what="a mirrored and its status written")
    seen = w.fake.obj(CANARYROLLOUT, NS, "a")["metadata"]["resourceVersion"]
    await wait_for(lambda: w.agent.resume[("canaryrollouts", NS)] == seen, what="the status write's event seen")
    w.fake.drop_watches()  # the rollouts' stream had delivered: resumed at once, from where it was
    await wait_for(lambda: w.watching("canaryrollouts") == 2 and w.fake.watches(CANARYROLLOUT), what="resumed")
    resumed = [q for q in w.fake.of("GET", "canaryrollouts") if q.query.get("watch") == "true"][-1]
    assert resumed.query["resourceVersion"] == seen
    await wait_for(lambda: sleeps.waiting == 1, what="the templates' watch backing off")
    assert sleeps.delays == [1.0]  # its stream had delivered nothing: a server that cuts at once
    sleeps.release()
    await wait_for(lambda: w.fake.watches(CANARYROLLOUT) and w.fake.watches(ANALYSISTEMPLATE), what="both open")
    w.fake.drop_watches()  # cut again before anything came: both back off, the templates' for longer
    await wait_for(lambda: sleeps.waiting == 2, what=f"both watches backing off (task: {w._task}, {sleeps.delays})")
    assert sorted(sleeps.delays) == [1.0, 1.0, 2.0] and w.metric("tmc_kube_api_up") == 1
    sleeps.release()
    await wait_for(lambda: w.fake.watches(CANARYROLLOUT) and w.fake.watches(ANALYSISTEMPLATE), what="resumed again")
    await w.k.put(CANARYROLLOUT, cr("b"))
    await wait_for(lambda: w.stored("b"), what="b mirrored")
    assert not warnings(caplog, "watch mode")  # a cut stream is not worth a warning
    assert w.metric("tmc_kube_watch_events_total", kind="CanaryRollout", type="ADDED") == 2


async def test_a_watch_that_keeps_failing_logs_once_and_says_so_in_healthz(
    w: Watch, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tmcd.kube")
    w.fake.fail(403, method="GET", suffix="/analysistemplates", times=None)  # e.g. RBAC not granted
    w.launch()
    await wait_for(lambda: sleeps.waiting == 1, what="the failing watch backing off")
    for n in (2, 3):
        sleeps.release()
        await wait_for(lambda n=n: len(sleeps.delays) == n and sleeps.waiting == 1, what="next attempt")
    reason = await wait_for(
        lambda: (r := w.agent.health.ready()) and "canaryrollouts" not in r.split("(")[0] and r,  # that one listed
        what="only the templates' watch waiting",
    )
    assert "analysistemplates.tmc.kcp.io in shop (" in reason and "HTTP 403" in reason
    assert len(warnings(caplog, "analysistemplates.tmc.kcp.io in shop: ")) == 1
    assert w.metric("tmc_kube_api_up") == 1
    w.fake.heal()
    sleeps.release()
    await wait_for(lambda: w.agent.health.ready() is None, what="ready")
    assert infos(caplog, "analysistemplates.tmc.kcp.io in shop works again")


async def test_a_failed_event_is_counted_and_the_status_still_lands(w: Watch) -> None:
    await w.k.put(CANARYROLLOUT, cr("web"))
    await w.start()
    await wait_for(lambda: w.phase("web"), what="Pending written")
    w.fake.fail(503, method="POST", suffix="/events")
    await set_status(w, "web", phase="Progressing")

    async def progressing() -> bool:
        return await w.phase("web") == "Progressing"

    await wait_for(progressing, what="the status written")
    await wait_for(lambda: w.metric("tmc_kube_event_writes_total", result="failed") == 1, what="the failed Event")
    assert await w.k.events() == []


async def test_a_kubeconfig_that_is_not_there_yet_is_waited_for(
    w: Watch, sleeps: Sleeps, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tmcd.kube")
    later = tmp_path / "later" / "kubeconfig"
    w.s.cfg.kube.kubeconfig = str(later)
    w.launch()
    await wait_for(lambda: sleeps.waiting == 1, what="backing off")
    reason = w.agent.health.ready()
    assert reason is not None and reason.startswith("waiting for the first list") and str(later) in reason
    later.parent.mkdir()
    write_kubeconfig(later, {"east": w.fake.url})
    sleeps.release()
    await wait_for(lambda: w.agent.health.ready() is None, what="ready once the file is there")
    assert len(warnings(caplog, "cannot be reached")) == 1


# -- the daemon: /readyz and /healthz ----------------------------------------------------------------


async def test_the_daemon_shows_watch_mode_in_readyz_and_healthz(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    fake = FakeKube(kinds=(CANARYROLLOUT, ANALYSISTEMPLATE))
    await fake.start()
    path = write_kubeconfig(tmp_path / "kubeconfig", {"east": fake.url})
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics", **{"health.check_cache": 0})
    cfg.kube.enabled, cfg.kube.kubeconfig, cfg.kube.namespaces = True, str(path), [NS]
    try:
        async with running_daemon(cfg) as d, aiohttp.ClientSession() as s:
            base = d.http.base_url
            ready = await wait_for(lambda: _status(s, f"{base}/readyz?verbose", 200), what="ready")
            assert "[+]kube ok" in ready[1]
            await fake.stop()  # lost later: still ready, and healthz says why it is not healthy
            healthz = await wait_for(lambda: _status(s, f"{base}/healthz?verbose", 503), what="healthz failing")
            assert "[-]kube-api failed: API server (the kubeconfig's current context) unreachable" in healthz[1]
            assert (await get(s, f"{base}/readyz"))[0] == 200
            metrics = (await get(s, f"{base}/metrics"))[1]
            assert sample(metrics, "tmc_kube_api_up") == 0
            assert sample(metrics, "tmc_health_check_status", check="kube") == 1
            assert sample(metrics, "tmc_kube_relists_total", kind="AnalysisTemplate", reason="start") == 1
            code, out = await promtool_check(tools.require("promtool"), metrics)  # the tmc_kube_* families lint clean
            assert (code, out.strip()) == (0, ""), out
    finally:
        await fake.stop()


async def test_the_daemon_is_not_ready_before_watch_mode_has_listed(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    fake = FakeKube(kinds=(CANARYROLLOUT, ANALYSISTEMPLATE))
    await fake.start()
    await fake.stop()  # its port, refusing
    path = write_kubeconfig(tmp_path / "kubeconfig", {"east": fake.url})
    cfg = daemon_config(nats_server.url, tmp_path, agents="metrics", **{"health.check_cache": 0})
    cfg.kube.enabled, cfg.kube.kubeconfig, cfg.kube.namespaces = True, str(path), [NS]
    async with running_daemon(cfg) as d, aiohttp.ClientSession() as s:
        base = d.http.base_url
        failed = await wait_for(
            lambda: _status(s, f"{base}/readyz?verbose", 503, "[-]kube failed"), what="readyz failing on kube"
        )
        assert f"[-]kube failed: waiting for the first list of {LISTS} (the kubeconfig's current context)" in failed[1]
        assert "[+]nats ok" in failed[1]


async def _status(session: aiohttp.ClientSession, url: str, want: int, text: str = "") -> tuple[int, str] | None:
    got = await get(session, url)
    return got if got[0] == want and text in got[1] else None
