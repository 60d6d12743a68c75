"""tmcd's log setup: one line per record on stderr, nats-py's own errors not silenced."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tmcd.runtime.logs import setup_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_nats_py_errors_reach_stderr(restore_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    setup_logging("info")  # idempotent: still one line per record
    logging.getLogger("nats.aio.client").error("nats: encountered error")
    logging.getLogger("nats.aio.client").debug("nats: chatter")
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 2)[2] for line in err] == ["ERROR   nats.aio.client: nats: encountered error"]
