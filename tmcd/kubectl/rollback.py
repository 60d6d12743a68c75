"""``kubectl tmc rollback NAME [--to-revision N]``: return a canary rollout to a revision.

Sends a ``RollbackControl`` on ``tmc.ctl.rollback.<namespace>.<name>`` and prints the rollback
engine's ``ControlReply`` as ``kubectl rollout undo`` prints its result
(``canaryrollout.tmc.kcp.io/checkout rolled back``); a refusal is a server error on stderr
(``Error from server (Conflict): ...``, exit 1), as is no answer.
"""

from __future__ import annotations

import time
from typing import Any

import click

from tmcd.kubectl.canary.control import (
    REPLY_TIMEOUT,
    Target,
    complete_rollouts,
    control_request,
    target,
    timeout_option,
)
from tmcd.kubectl.common import CONTEXT_SETTINGS, global_options
from tmcd.kubectl.errors import CliError, ServerError

_REASONS = {400: "BadRequest", 404: "NotFound", 409: "Conflict"}


def request(t: Target, to_revision: int, reason: str, timeout: float) -> dict[str, Any]:
    """Send the rollback request and return the engine's reply (refusals included)."""
    ep = t.client.endpoint
    if ep.transport != "nats":
        raise CliError("rollback needs NATS: set --nats-url")
    subject = f"tmc.ctl.rollback.{t.namespace}.{t.name}"
    body: dict[str, Any] = {
        "namespace": t.namespace,
        "name": t.name,
        "timestamp": time.time(),
        "to_revision": to_revision,
        "requested_by": "kubectl-tmc",
    }
    if reason:
        body["reason"] = reason
    return control_request(t, subject, body, timeout, who=("rollback engine", "rollback agent"))


def outcome(t: Target, to_revision: int, reply: dict[str, Any]) -> str:
    """The line printed for an accepted request; a :class:`ServerError` for a refused one."""
    message = str(reply.get("message") or "")
    if not reply.get("ok"):
        code = reply.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else 500
        if not message:
            message = f'{t.kind.resource} "{t.name}" not found' if code == 404 else f"rollback of {t.ref} was refused"
        raise ServerError(code, {"reason": _REASONS.get(code, "Refused"), "message": message})
    if message.startswith(t.ref):  # the engine already wrote the whole line
        return message
    line = f"{t.ref} rolled back" + (f" to revision {to_revision}" if to_revision else "")
    detail = message or (f"now {reply['state']}" if reply.get("state") else "")
    return line + (f" ({detail})" if detail else "")


@click.command("rollback", context_settings=CONTEXT_SETTINGS)
@click.argument("name", metavar="NAME", shell_complete=complete_rollouts)
@click.option(
    "--to-revision",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="The revision to return to (see `kubectl tmc history`); default: the previous stable one.",
)
@click.option("--reason", default="", metavar="TEXT", help="Why, recorded with the rollback (audit trail).")
@timeout_option(REPLY_TIMEOUT, "How long to wait for the rollback engine's answer (90s, 1m).")
@global_options
@click.pass_context
def rollback(ctx: click.Context, name: str, to_revision: int | None, reason: str, timeout: float) -> None:
    """Roll a canary rollout back to a revision, as `kubectl argo rollouts undo` does.

    Without --to-revision: to the previous stable revision (a running canary: the stable one it
    started from). It also works for a rollout that already succeeded. Traffic returns first
    (100% on the restored version on every canary cluster), then the clusters, then the canary's
    leftovers are cleaned up; follow it with `kubectl tmc describe canary NAME`.

    Prints the rollback engine's answer; exits 1 when it refuses (an unknown revision, another
    rollback in progress) or does not answer.

    \b
    Examples:
      kubectl tmc rollback checkout -n shop
      kubectl tmc rollback checkout -n shop --to-revision 3 --reason "1.5.0 leaks memory"
    """
    t = target(ctx, name)
    reply = request(t, to_revision or 0, reason, timeout)
    click.echo(outcome(t, to_revision or 0, reply))
