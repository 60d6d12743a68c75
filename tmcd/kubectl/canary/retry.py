"""``kubectl tmc canary retry NAME``."""

from __future__ import annotations

from tmcd.kubectl.canary.control import control_command

retry = control_command(
    "retry",
    """Start a rolled-back rollout again from its first step.

    Prints the controller's answer; exits 1 when it refuses (the rollout is not RolledBack)
    or does not answer.

    \b
    Examples:
      kubectl tmc canary retry checkout -n shop
    """,
)
