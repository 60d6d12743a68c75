"""``kubectl tmc canary abort NAME``."""

from __future__ import annotations

from tmcd.kubectl.canary.control import control_command

abort = control_command(
    "abort",
    """Stop a rollout and return all traffic to the stable version (RollingBack, then RolledBack).

    Prints the controller's answer; exits 1 when it refuses (e.g. the rollout already ended)
    or does not answer. `kubectl tmc canary retry` starts an aborted rollout again.

    \b
    Examples:
      kubectl tmc canary abort checkout -n shop
      kubectl tmc canary abort checkout -n shop --reason "checkout errors in eu-west-1"
    """,
)
