"""``kubectl tmc canary status NAME [--watch] [--timeout DURATION]``, as ``kubectl argo rollouts status``.

One line, ``PHASE - MESSAGE``.  With ``--watch`` it follows the rollout through tmcd's watch (from
the resourceVersion it read, so no change is missed), printing a line whenever phase or message
change, until the rollout ends: exit 0 on Succeeded, 1 on RolledBack or Degraded, 1 when
``--timeout`` passes first.  A status the controller wrote before the latest spec change
(``observedGeneration`` behind ``generation``) is not taken as the end.
"""

from __future__ import annotations

import time
from typing import Any

import click

from tmcd.kubectl.canary.control import Target, complete_rollouts, target, timeout_option
from tmcd.kubectl.columns import step_label
from tmcd.kubectl.common import CONTEXT_SETTINGS, global_options
from tmcd.kubectl.duration import format_duration
from tmcd.kubectl.errors import EXIT_FAILED, CliError, UsageError

ENDS = {"Succeeded": 0, "RolledBack": EXIT_FAILED, "Degraded": EXIT_FAILED}
"""Phases that end ``--watch``, with the exit code."""
_ENDED = {"RolledBack": "was rolled back", "Degraded": "is degraded"}


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def stale(obj: dict[str, Any]) -> int:
    """The generation the controller has not observed yet, 0 when the status is current."""
    generation = _int(_dict(obj.get("metadata")).get("generation"))
    observed = _int(_dict(obj.get("status")).get("observedGeneration"))
    return generation if observed < generation and observed > 0 else 0


def status_line(obj: dict[str, Any]) -> str:
    """``PHASE - MESSAGE``; without a message, the current step (``Paused - step 4/7: pause: until promoted``)."""
    st = _dict(obj.get("status"))
    phase = str(st.get("phase") or "Pending")
    newer = stale(obj)
    if newer:
        return f"{phase} - waiting for the controller to observe generation {newer}"
    message = str(st.get("message") or "")
    steps = _dict(obj.get("spec")).get("steps")
    steps = steps if isinstance(steps, list) else []
    if not message and phase in ("Progressing", "Paused") and steps:
        message = f"step {step_label(st, len(steps))}"
        idx = st.get("currentStepIndex")
        if isinstance(idx, int) and 0 <= idx < len(steps):
            from tmcd.kubectl.describe_canary import step_text

            message += f": {step_text(_dict(steps[idx]))}"
    return f"{phase} - {message}" if message else phase


def end_code(obj: dict[str, Any]) -> int | None:
    """The exit code when the rollout has ended (and the status is current), else None."""
    if stale(obj):
        return None
    return ENDS.get(str(_dict(obj.get("status")).get("phase") or "Pending"))


def _finish(t: Target, obj: dict[str, Any], code: int) -> None:
    if code:
        phase = str(_dict(obj.get("status")).get("phase"))
        raise CliError(f"{t.ref} {_ENDED.get(phase, phase)}")


def follow(t: Target, obj: dict[str, Any], timeout: float) -> None:
    """Print each change of the rollout's line until it ends or ``timeout`` seconds (0: none) pass."""
    from tmcd.kubectl.watch import watch_events

    deadline = time.monotonic() + timeout if timeout else None
    rv = str(_dict(obj.get("metadata")).get("resourceVersion") or "")
    body = {"namespace": t.namespace, "fieldSelector": f"metadata.name={t.name}"}
    last = status_line(obj)
    for event, changed in watch_events(t.client, t.kind, body, rv, deadline=deadline):
        if _dict(changed.get("metadata")).get("name") != t.name:
            continue
        if event == "DELETED":
            raise CliError(f"{t.ref} was deleted")
        obj = changed
        line = status_line(obj)
        if line != last:
            click.echo(line)
            last = line
        code = end_code(obj)
        if code is not None:
            _finish(t, obj, code)
            return
    phase = str(_dict(obj.get("status")).get("phase") or "Pending")
    raise CliError(f"timed out after {format_duration(timeout)} waiting for {t.ref} to finish (still {phase})")


@click.command("status", context_settings=CONTEXT_SETTINGS)
@click.argument("name", metavar="NAME", shell_complete=complete_rollouts)
@click.option("-w", "--watch", is_flag=True, help="Follow the rollout until it ends; exit 0 on Succeeded, else 1.")
@timeout_option("", "With --watch: give up (exit 1) after this long, e.g. 90s, 5m, 1h30m; default: never.")
@global_options
@click.pass_context
def status(ctx: click.Context, name: str, watch: bool, timeout: float) -> None:
    """Show a rollout's phase and message; with --watch, follow it until it ends.

    Prints `PHASE - MESSAGE` (e.g. `Progressing - step 3/7: setWeight 20`). With --watch a
    line is printed whenever phase or message change, and the exit code says how the
    rollout ended: 0 Succeeded, 1 RolledBack or Degraded, 1 when --timeout passes first.
    Without --watch it exits 0 whatever the phase. --watch needs NATS.

    \b
    Examples:
      kubectl tmc canary status checkout -n shop
      kubectl tmc canary status checkout -n shop --watch --timeout 15m && echo released
    """
    if timeout and not watch:
        raise UsageError("--timeout is for --watch")
    t = target(ctx, name)
    if watch and t.client.endpoint.transport != "nats":
        raise CliError("--watch needs NATS: set --nats-url")
    obj = t.client.call("get", t.kind, namespace=t.namespace, name=t.name)
    click.echo(status_line(obj))
    if not watch:
        return
    code = end_code(obj)
    if code is not None:
        _finish(t, obj, code)
        return
    follow(t, obj, timeout)
