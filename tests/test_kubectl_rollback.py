"""``kubectl tmc rollback NAME [--to-revision N]`` as a real ``kubectl-tmc`` subprocess on a real
nats-server, answered by a test-side rollback engine on ``tmc.ctl.rollback.<ns>.>``: what is sent (a
RollbackControl the engine decodes), what is printed, and the exit codes."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from click.testing import CliRunner

from tests.helpers import nats_connect
from tests.test_kubectl_canary_control import run
from tmcd.contracts.codec import decode, encode
from tmcd.contracts.messages import ControlReply, RollbackControl
from tmcd.contracts.subjects import CTL_ROLLBACK
from tmcd.kubectl.main import LAZY_COMMANDS
from tmcd.kubectl.root import cli


@dataclass
class Engine:
    """A stand-in for the rollback engine: records each request, answers with ``answer(request)``
    (None: no answer at all)."""

    namespace: str
    answer: Callable[[RollbackControl], ControlReply | None]
    requests: list[tuple[str, RollbackControl, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
async def engine(nats_url: str) -> AsyncIterator[Engine]:
    """A responder on ``tmc.ctl.rollback.<ns>.>`` of a namespace of this test's own (shared server)."""
    e = Engine("ns-" + secrets.token_hex(4), lambda r: ControlReply(ok=True, target=f"{r.namespace}/{r.name}"))
    nc = await nats_connect(nats_url)

    async def handle(msg: Any) -> None:
        request = decode(msg.subject, msg.data, CTL_ROLLBACK)  # what the real engine will decode
        assert isinstance(request, RollbackControl)
        e.requests.append((msg.subject, request, dict(msg.headers or {})))
        reply = e.answer(request)
        if reply is not None:
            await msg.respond(encode(reply))

    await nc.subscribe(f"tmc.ctl.rollback.{e.namespace}.>", cb=handle)
    await nc.flush()
    try:
        yield e
    finally:
        await nc.close()


async def test_to_the_previous_stable_revision(engine: Engine, nats_url: str) -> None:
    code, out, err = await run("rollback", "checkout", "-n", engine.namespace, "--nats-url", nats_url)
    assert (code, out, err) == (0, "canaryrollout.tmc.kcp.io/checkout rolled back\n", "")
    [(subject, request, headers)] = engine.requests
    assert subject == f"tmc.ctl.rollback.{engine.namespace}.checkout"
    assert (request.namespace, request.name, request.to_revision, request.reason) == (
        engine.namespace,
        "checkout",
        0,
        "",
    )
    assert request.requested_by == "kubectl-tmc" and request.timestamp > 0 and "Authorization" not in headers


async def test_to_a_revision_with_a_reason_and_a_token(engine: Engine, nats_url: str) -> None:
    engine.answer = lambda r: ControlReply(ok=True, state="RollingBack")
    code, out, err = await run(
        "rollback", "checkout", "--to-revision", "3", "--reason", "1.5.0 leaks memory", "-n", engine.namespace,
        "--nats-url", nats_url, "--token", "s3cret",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out == "canaryrollout.tmc.kcp.io/checkout rolled back to revision 3 (now RollingBack)\n"
    [(_, request, headers)] = engine.requests
    assert (request.to_revision, request.reason) == (3, "1.5.0 leaks memory")
    assert headers.get("Authorization") == "Bearer s3cret"


async def test_the_engines_message_is_shown(engine: Engine, nats_url: str) -> None:
    engine.answer = lambda r: ControlReply(ok=True, message="revision 2 is already stable: nothing to do")
    code, out, _ = await run("rollback", "web", "--to-revision", "2", "-n", engine.namespace, "--nats-url", nats_url)
    assert (code, out) == (
        0,
        "canaryrollout.tmc.kcp.io/web rolled back to revision 2 (revision 2 is already stable: nothing to do)\n",
    )
    engine.answer = lambda r: ControlReply(ok=True, message="canaryrollout.tmc.kcp.io/web rolling back to revision 1")
    code, out, _ = await run("rollback", "web", "-n", engine.namespace, "--nats-url", nats_url)
    assert (code, out) == (0, "canaryrollout.tmc.kcp.io/web rolling back to revision 1\n")  # not said twice


async def test_refused(engine: Engine, nats_url: str) -> None:
    engine.answer = lambda r: ControlReply(ok=False, code=409, message="a rollback of shop/checkout is in progress")
    code, out, err = await run("rollback", "checkout", "-n", engine.namespace, "--nats-url", nats_url)
    assert (code, out, err) == (1, "", "Error from server (Conflict): a rollback of shop/checkout is in progress\n")
    engine.answer = lambda r: ControlReply(ok=False, code=404)
    code, out, err = await run("rollback", "nope", "-n", engine.namespace, "--nats-url", nats_url)
    assert (code, out, err) == (1, "", 'Error from server (NotFound): canaryrollouts.tmc.kcp.io "nope" not found\n')
    engine.answer = lambda r: ControlReply(ok=False, code=400, message="revision 9 is not in the history")
    code, _, err = await run("rollback", "x", "--to-revision", "9", "-n", engine.namespace, "--nats-url", nats_url)
    assert (code, err) == (1, "Error from server (BadRequest): revision 9 is not in the history\n")


async def test_nobody_answers(engine: Engine, nats_url: str) -> None:
    ns = "lonely-" + secrets.token_hex(4)
    code, out, err = await run("rollback", "checkout", "-n", ns, "--nats-url", nats_url)
    assert (code, out) == (1, "")
    assert err == (
        f"error: no rollback engine answers tmc.ctl.rollback.{ns}.checkout: is tmcd running with its rollback agent?\n"
    )
    engine.answer = lambda r: None
    ns = engine.namespace
    code, out, err = await run("rollback", "checkout", "-n", ns, "--nats-url", nats_url, "--timeout", "500ms")
    assert (code, out) == (1, "")
    assert err == (
        f"error: no answer from the rollback engine within 500ms on tmc.ctl.rollback.{ns}.checkout: "
        "is tmcd's rollback agent running? (--timeout waits longer)\n"
    )
    code, out, err = await run("rollback", "checkout", "--nats-url", "nats://127.0.0.1:1")
    assert (code, out) == (1, "") and err.startswith("error: cannot reach tmcd at nats://127.0.0.1:1")


async def test_usage_errors_send_nothing(engine: Engine, nats_url: str) -> None:
    ns = engine.namespace
    cases = [
        (
            ["rollback", "checkout", "--to-revision", "0"],
            "error: Invalid value for '--to-revision': 0 is not in the range x>=1",
        ),
        (["rollback", "checkout", "--to-revision", "-2"], "error: Invalid value for '--to-revision'"),
        (["rollback", "checkout", "--to-revision", "two"], "error: Invalid value for '--to-revision': 'two' is not"),
        (["rollback", "check.out"], "error: rollout 'check.out' is not a valid name: want a DNS-1123 label"),
        (["rollback", "Checkout"], "error: rollout 'Checkout' is not a valid name"),
        (["rollback", "checkout", "-n", "Shop.eu"], "error: namespace 'Shop.eu' is not a valid name"),
        (["rollback", "checkout", "-A"], "error: a rollout is named in one namespace: use -n NAMESPACE"),
        (["rollback"], "error: Missing argument 'NAME'"),
        (["rollback", "checkout", "--timeout", "10"], "error: --timeout '10': want a duration such as 90s"),
    ]
    for args, want in cases:
        more = ["--nats-url", nats_url] if "-n" in args else ["-n", ns, "--nats-url", nats_url]
        code, out, err = await run(*args, *more)
        assert (code, out) == (2, ""), (args, err)
        assert err.startswith(want) and len(err.splitlines()) == 1, (args, err)
    assert engine.requests == []


async def test_over_http_says_nats_is_needed() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TMC_NATS_URL", "KUBECONFIG")}
    code, _, err = await run("rollback", "checkout", "--server", "http://127.0.0.1:1", env=env)
    assert (code, err) == (1, "error: rollback needs NATS: set --nats-url\n")


def test_help() -> None:
    assert LAZY_COMMANDS["rollback"] == "tmcd.kubectl.rollback:rollback"
    r = CliRunner().invoke(cli, ["-h"], prog_name="kubectl tmc")
    assert r.exit_code == 0 and "\n  rollback " in r.stdout and "\n  history " in r.stdout
    r = CliRunner().invoke(cli, ["rollback", "-h"], prog_name="kubectl tmc")
    assert r.exit_code == 0 and "--to-revision N" in r.stdout and "kubectl argo rollouts undo" in r.stdout
