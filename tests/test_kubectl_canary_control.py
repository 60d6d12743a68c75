"""``kubectl tmc canary promote|abort|pause|resume|retry`` as a real ``kubectl-tmc`` subprocess on a
real nats-server, answered by a test-side controller on ``tmc.ctl.canary.<ns>.>``: what is sent
(a CanaryControl the controller decodes), what is printed, and the exit codes."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.helpers import daemon_config, nats_connect, running_daemon
from tmcd.contracts.codec import decode, encode
from tmcd.contracts.messages import CanaryControl, ControlReply
from tmcd.contracts.subjects import CTL_CANARY
from tmcd.kubectl.canary.control import PAST
from tmcd.kubectl.root import cli

KUBECTL_TMC = str(Path(sys.executable).parent / "kubectl-tmc")
ACTIONS = ("promote", "abort", "pause", "resume", "retry")


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``kubectl-tmc ARGS`` as a subprocess: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        KUBECTL_TMC, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@dataclass
class Controller:
    """A stand-in for the canary controller: records each request, answers with ``answer(request)``
    (None: no answer at all)."""

    namespace: str
    answer: Callable[[CanaryControl], ControlReply | None]
    requests: list[tuple[str, CanaryControl, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
async def controller(nats_url: str) -> AsyncIterator[Controller]:
    """A responder on ``tmc.ctl.canary.<ns>.>`` of a namespace of this test's own (shared server)."""
    ctl = Controller("ns-" + secrets.token_hex(4), lambda r: ControlReply(ok=True, target=f"{r.namespace}/{r.name}"))
    nc = await nats_connect(nats_url)

    async def handle(msg: Any) -> None:
        request = decode(msg.subject, msg.data, CTL_CANARY)  # what the real controller will decode
        assert isinstance(request, CanaryControl)
        ctl.requests.append((msg.subject, request, dict(msg.headers or {})))
        reply = ctl.answer(request)
        if reply is not None:
            await msg.respond(encode(reply))

    await nc.subscribe(f"tmc.ctl.canary.{ctl.namespace}.>", cb=handle)
    await nc.flush()
    try:
        yield ctl
    finally:
        await nc.close()


@pytest.mark.parametrize("action", ACTIONS)
async def test_accepted(controller: Controller, nats_url: str, action: str) -> None:
    ns = controller.namespace
    controller.answer = lambda r: ControlReply(ok=True, target=f"{ns}/{r.name}", code=200, state="Progressing")
    code, out, err = await run("canary", action, "checkout", "-n", ns, "--nats-url", nats_url)
    assert (code, err) == (0, ""), err
    assert out == f"canaryrollout.tmc.kcp.io/checkout {PAST[action]} (now Progressing)\n"
    [(subject, request, headers)] = controller.requests
    assert subject == f"tmc.ctl.canary.{ns}.checkout.{action}"
    assert (request.namespace, request.name, request.action, request.full) == (ns, "checkout", action, False)
    assert request.requested_by == "kubectl-tmc" and request.timestamp > 0
    assert "Authorization" not in headers


async def test_reply_message_is_shown(controller: Controller, nats_url: str) -> None:
    controller.answer = lambda r: ControlReply(ok=True, message="step 4/7: setWeight 50", state="Progressing")
    code, out, _ = await run("canary", "promote", "checkout", "-n", controller.namespace, "--nats-url", nats_url)
    assert (code, out) == (0, "canaryrollout.tmc.kcp.io/checkout promoted (step 4/7: setWeight 50)\n")
    controller.answer = lambda r: ControlReply(ok=True, message="canaryrollout.tmc.kcp.io/checkout paused at step 2")
    code, out, _ = await run("canary", "pause", "checkout", "-n", controller.namespace, "--nats-url", nats_url)
    assert (code, out) == (0, "canaryrollout.tmc.kcp.io/checkout paused at step 2\n")  # not said twice


async def test_promote_full_reason_and_token(controller: Controller, nats_url: str) -> None:
    code, out, err = await run(
        "canary", "promote", "checkout", "--full", "--reason", "hotfix verified", "-n", controller.namespace,
        "--nats-url", nats_url, "--token", "s3cret",
    )  # fmt: skip
    assert (code, out, err) == (0, "canaryrollout.tmc.kcp.io/checkout fully promoted\n", "")
    [(_, request, headers)] = controller.requests
    assert (request.action, request.full, request.reason) == ("promote", True, "hotfix verified")
    assert headers.get("Authorization") == "Bearer s3cret"


@pytest.mark.parametrize("action", ACTIONS)
async def test_refused(controller: Controller, nats_url: str, action: str) -> None:
    controller.answer = lambda r: ControlReply(
        ok=False, code=409, message=f"cannot {r.action}: the rollout is Succeeded", state="Succeeded"
    )
    code, out, err = await run("canary", action, "checkout", "-n", controller.namespace, "--nats-url", nats_url)
    assert (code, out) == (1, "")
    assert err == f"Error from server (Conflict): cannot {action}: the rollout is Succeeded\n"


async def test_refused_unknown_rollout(controller: Controller, nats_url: str) -> None:
    controller.answer = lambda r: ControlReply(ok=False, code=404)
    code, out, err = await run("canary", "abort", "nope", "-n", controller.namespace, "--nats-url", nats_url)
    assert (code, out) == (1, "")
    assert err == 'Error from server (NotFound): canaryrollouts.tmc.kcp.io "nope" not found\n'
    controller.answer = lambda r: ControlReply(ok=False, code=400, message="promote --full needs a running rollout")
    code, _, err = await run("canary", "promote", "x", "--full", "-n", controller.namespace, "--nats-url", nats_url)
    assert (code, err) == (1, "Error from server (BadRequest): promote --full needs a running rollout\n")


@pytest.mark.parametrize("action", ACTIONS)
async def test_no_controller(nats_url: str, action: str) -> None:
    ns = "lonely-" + secrets.token_hex(4)
    code, out, err = await run("canary", action, "checkout", "-n", ns, "--nats-url", nats_url)
    assert (code, out) == (1, "")
    assert err == (
        f"error: no canary controller answers tmc.ctl.canary.{ns}.checkout.{action}: "
        "is tmcd running with its canary agent?\n"
    )


async def test_controller_that_does_not_answer(controller: Controller, nats_url: str) -> None:
    controller.answer = lambda r: None
    ns = controller.namespace
    code, out, err = await run("canary", "resume", "checkout", "-n", ns, "--nats-url", nats_url, "--timeout", "500ms")
    assert (code, out) == (1, "")
    assert err == (
        f"error: no answer from the canary controller within 500ms on tmc.ctl.canary.{ns}.checkout.resume: "
        "is tmcd's canary agent running? (--timeout waits longer)\n"
    )
    assert len(controller.requests) == 1


async def test_unreachable_nats() -> None:
    code, out, err = await run("canary", "pause", "checkout", "--nats-url", "nats://127.0.0.1:1")
    assert (code, out) == (1, "") and err.startswith("error: cannot reach tmcd at nats://127.0.0.1:1")


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("name", ["check.out", "*", ">", "Checkout", "checkout-", "a" * 64, "a b"])
async def test_bad_names_are_refused_before_sending(
    controller: Controller, nats_url: str, action: str, name: str
) -> None:
    code, out, err = await run("canary", action, name, "-n", controller.namespace, "--nats-url", nats_url)
    assert (code, out) == (2, "") and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: rollout {name!r} is not a valid name: want a DNS-1123 label")
    assert controller.requests == []


async def test_usage_errors(controller: Controller, nats_url: str) -> None:
    ns = controller.namespace
    cases = [
        (["canary", "abort", "checkout", "--full"], "error: No such option '--full'"),  # promote only
        (["canary", "promote", "checkout", "-n", "Shop.eu"], "error: namespace 'Shop.eu' is not a valid name"),
        (["canary", "promote", "checkout", "-A"], "error: a rollout is named in one namespace: use -n NAMESPACE"),
        (["canary", "promote", "-n", ns], "error: Missing argument 'NAME'"),
        (["canary", "promote", "checkout", "--timeout", "10"], "error: --timeout '10': want a duration such as 90s"),
        (["canary", "explode", "checkout"], "error: No such command 'explode'"),
    ]
    for args, want in cases:
        code, out, err = await run(*args, "--nats-url", nats_url)
        assert (code, out) == (2, ""), (args, err)
        assert err.startswith(want) and len(err.splitlines()) == 1, (args, err)
    assert controller.requests == []


async def test_over_http_through_tmcd(controller: Controller, nats_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TMC_NATS_URL", "KUBECONFIG")}
    ns = controller.namespace
    cfg = daemon_config(nats_url, tmp_path, agents=["metrics"])  # the stand-in is the only controller
    async with running_daemon(cfg) as d:
        base = d.http.base_url
        code, out, err = await run("canary", "promote", "checkout", "-n", ns, "--full", "--server", base, env=env)
        assert (code, err) == (0, ""), err
        assert out.startswith("canaryrollout.tmc.kcp.io/checkout ")
        subject, request, _ = controller.requests[-1]
        assert subject == f"tmc.ctl.canary.{ns}.checkout.promote" and request.full
        controller.answer = lambda r: ControlReply(
            ok=False, code=409, message="cannot abort a rollout that is Succeeded"
        )
        code, out, err = await run("canary", "abort", "checkout", "-n", ns, "--server", base, env=env)
        assert (code, out) == (
            1,
            "",
        ) and err == "Error from server (Conflict): cannot abort a rollout that is Succeeded\n"
    code, _, err = await run("canary", "promote", "checkout", "--server", "http://127.0.0.1:1", env=env)
    assert code == 1 and "127.0.0.1:1" in err


def test_help_and_completion() -> None:
    r = CliRunner().invoke(cli, ["canary", "-h"], prog_name="kubectl tmc")
    assert r.exit_code == 0
    for verb in (*ACTIONS, "status"):
        assert f"\n  {verb} " in r.stdout
    r = CliRunner().invoke(cli, ["canary", "promote", "-h"], prog_name="kubectl tmc")
    assert r.exit_code == 0 and "--full" in r.stdout and "kubectl tmc canary promote checkout -n shop" in r.stdout
    r = CliRunner().invoke(cli, ["canary", "abort", "-h"], prog_name="kubectl tmc")
    assert r.exit_code == 0 and "--full" not in r.stdout
    env = {"_KUBECTL_TMC_COMPLETE": "bash_complete", "COMP_WORDS": "kubectl-tmc canary p", "COMP_CWORD": "2"}
    r = CliRunner().invoke(cli, [], prog_name="kubectl-tmc", env=env)
    assert r.stdout.split() == ["plain,pause", "plain,promote"]
    env = {"_KUBECTL_TMC_COMPLETE": "bash_complete", "COMP_WORDS": "kubectl-tmc ca", "COMP_CWORD": "1"}
    r = CliRunner().invoke(cli, [], prog_name="kubectl-tmc", env=env)
    assert r.stdout.split() == ["plain,canary"]
