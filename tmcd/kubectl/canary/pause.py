"""``kubectl tmc canary pause NAME``."""

from __future__ import annotations

from tmcd.kubectl.canary.control import control_command

pause = control_command(
    "pause",
    """Hold a progressing rollout at its current step and weight (Paused) until resumed.

    Prints the controller's answer; exits 1 when it refuses (e.g. the rollout is not
    progressing) or does not answer.

    \b
    Examples:
      kubectl tmc canary pause checkout -n shop
    """,
)
