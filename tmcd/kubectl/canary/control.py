"""What the ``kubectl tmc canary`` verbs share: the rollout they name, and the control request.

A control verb sends a ``CanaryControl`` on ``tmc.ctl.canary.<namespace>.<name>.<action>`` and
prints the canary controller's ``ControlReply`` as kubectl prints an accepted change
(``canaryrollout.tmc.kcp.io/checkout promoted``); a refusal is a server error on stderr
(``Error from server (Conflict): ...``, exit 1), as is no answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click

from tmcd.kubectl.client import Client, NatsConnection
from tmcd.kubectl.common import (
    CONTEXT_SETTINGS,
    client,
    dns_label,
    endpoint,
    global_options,
    kind_arg,
    namespace_for,
    settings,
)
from tmcd.kubectl.duration import format_duration, parse_duration
from tmcd.kubectl.errors import CliError, ServerError, Unreachable, UsageError
from tmcd.kubectl.kinds import CliKind

PAST = {"promote": "promoted", "abort": "aborted", "pause": "paused", "resume": "resumed", "retry": "retried"}
"""Action -> what the reply line says was done."""
REPLY_TIMEOUT = "10s"
"""How long a control verb waits for the controller's answer by default."""
_REASONS = {400: "BadRequest", 404: "NotFound", 409: "Conflict"}


class Target:
    """The rollout a verb names: its kind, namespace and name, with the client to reach tmcd."""

    def __init__(self, client: Client, kind: CliKind, namespace: str, name: str) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.name = name

    @property
    def ref(self) -> str:
        """``canaryrollout.tmc.kcp.io/NAME``, as kubectl names an object in its messages."""
        return self.kind.ref(self.name)


def target(ctx: click.Context, name: str) -> Target:
    """The named rollout in ``-n`` (or the context's namespace); usage errors before anything is sent."""
    if settings(ctx).all_namespaces:
        raise UsageError("a rollout is named in one namespace: use -n NAMESPACE, not -A")
    dns_label(name, "rollout")  # namespace and name become subject tokens
    kind = kind_arg("canaryrollouts")
    c = client(ctx)
    ns = dns_label(namespace_for(ctx, kind, c.endpoint), "namespace")
    return Target(c, kind, ns, name)


def complete_rollouts(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Rollout names in the namespace, for shell completion (nothing when tmcd does not answer)."""
    try:
        kind = kind_arg("canaryrollouts")
        c = Client(endpoint(ctx))
        c.endpoint.timeout = min(c.endpoint.timeout, 2.0)
        try:
            listing = c.call("list", kind, namespace=namespace_for(ctx, kind, c.endpoint))
        finally:
            c.close()
    except (CliError, ValueError, OSError):
        return []
    names = [str((i.get("metadata") or {}).get("name") or "") for i in listing.get("items") or []]
    return sorted(n for n in names if n.startswith(incomplete))


def _timeout(_ctx: click.Context, param: click.Parameter, value: str) -> float:
    return parse_duration(value, "--" + str(param.name)) if value else 0.0


def timeout_option(default: str, help: str) -> Callable[[Any], Any]:
    """``--timeout DURATION`` in Go's syntax, passed to the command as seconds."""
    return click.option(
        "--timeout", default=default, show_default=bool(default), metavar="DURATION", callback=_timeout, help=help
    )


def request(t: Target, action: str, *, full: bool, reason: str, timeout: float) -> dict[str, Any]:
    """Send the control request and return the controller's reply (refusals included)."""
    ep = t.client.endpoint
    if ep.transport != "nats":
        return _over_http(t, action, full=full, reason=reason, timeout=timeout)
    subject = f"tmc.ctl.canary.{t.namespace}.{t.name}.{action}"
    body: dict[str, Any] = {
        "namespace": t.namespace,
        "name": t.name,
        "action": action,
        "timestamp": time.time(),
        "full": full,
        "requested_by": "kubectl-tmc",
    }
    if reason:
        body["reason"] = reason
    return control_request(t, subject, body, timeout, who=("canary controller", "canary agent"))


def control_request(
    t: Target, subject: str, body: dict[str, Any], timeout: float, *, who: tuple[str, str]
) -> dict[str, Any]:
    """Send ``body`` on ``subject`` over NATS and return the ``ControlReply`` as a dict (refusals
    included); ``who`` names the answering part and its agent for the errors (no answer, no
    responder, a reply that is not a ControlReply).  The token goes along as for API writes."""
    ep = t.client.endpoint
    part, agent = who
    headers = {"Authorization": f"Bearer {ep.token}"} if ep.token else None
    conn = NatsConnection(ep.url, ep.token, timeout or ep.timeout)
    try:
        conn.connect()  # cannot reach NATS: Unreachable, as every other command says it
        try:
            got, data = conn.request(subject, json.dumps(body).encode(), headers=headers)
        except Unreachable as exc:
            if "timed out" not in exc.message:
                raise
            raise CliError(
                f"no answer from the {part} within {format_duration(timeout or ep.timeout)} "
                f"on {subject}: is tmcd's {agent} running? (--timeout waits longer)"
            ) from None
    finally:
        conn.close()
    if got.get("Status") == "503":
        raise CliError(f"no {part} answers {subject}: is tmcd running with its {agent}?")
    try:
        reply = json.loads(data) if data else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise CliError(f"the {part}'s reply on {subject} is not a ControlReply")
    return reply


def _over_http(t: Target, action: str, *, full: bool, reason: str, timeout: float) -> dict[str, Any]:
    """``POST .../canaryrollouts/NAME/ACTION``: tmcd forwards it to the controller and answers its reply."""
    import urllib.parse

    path = f"/api/v1/namespaces/{t.namespace}/canaryrollouts/{urllib.parse.quote(t.name)}/{action}"
    body: dict[str, Any] = {"full": full, **({"reason": reason} if reason else {})}
    try:
        reply = t.client._http("POST", path, json.dumps(body).encode(), "application/json", timeout)
    except ServerError as exc:
        if exc.reply is not None:  # a refusal: the controller's ControlReply with its HTTP code
            return exc.reply
        if exc.code == 503:
            url = t.client.endpoint.url
            raise CliError(f"no canary controller answered through {url}: is tmcd's canary agent running?") from None
        raise
    if not isinstance(reply, dict):
        raise CliError("the canary controller's reply is not a ControlReply")
    return reply


def outcome(t: Target, action: str, full: bool, reply: dict[str, Any]) -> str:
    """The line printed for an accepted request; a :class:`ServerError` for a refused one."""
    message = str(reply.get("message") or "")
    if not reply.get("ok"):
        code = reply.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else 500
        if not message:
            message = f'{t.kind.resource} "{t.name}" not found' if code == 404 else f"{action} of {t.ref} was refused"
        raise ServerError(code, {"reason": _REASONS.get(code, "Refused"), "message": message})
    done = "fully promoted" if action == "promote" and full else PAST[action]
    if message.startswith(t.ref):  # the controller already wrote the whole line
        return message
    detail = message or (f"now {reply['state']}" if reply.get("state") else "")
    return f"{t.ref} {done}" + (f" ({detail})" if detail else "")


def control_command(action: str, doc: str, *, full: bool = False) -> click.Command:
    """The click command of one control verb; ``full`` adds promote's ``--full``."""

    def command(ctx: click.Context, name: str, reason: str, timeout: float, full: bool = False) -> None:
        t = target(ctx, name)
        reply = request(t, action, full=full, reason=reason, timeout=timeout)
        click.echo(outcome(t, action, full, reply))

    decorators: list[Callable[[Any], Any]] = [
        click.command(action, context_settings=CONTEXT_SETTINGS, help=doc),
        click.argument("name", metavar="NAME", shell_complete=complete_rollouts),
    ]
    if full:
        decorators.append(
            click.option(
                "--full", is_flag=True, help="Skip every remaining step: 100% of traffic on all eligible clusters."
            )
        )
    decorators += [
        click.option("--reason", default="", metavar="TEXT", help="Why, recorded with the request (audit trail)."),
        timeout_option(REPLY_TIMEOUT, "How long to wait for the canary controller's answer (90s, 1m)."),
        global_options,
        click.pass_context,
    ]
    f: Any = command
    for decorate in reversed(decorators):
        f = decorate(f)
    assert isinstance(f, click.Command)
    return f
