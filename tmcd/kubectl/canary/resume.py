"""``kubectl tmc canary resume NAME``."""

from __future__ import annotations

from tmcd.kubectl.canary.control import control_command

resume = control_command(
    "resume",
    """Continue a paused rollout from the step it was paused at.

    Prints the controller's answer; exits 1 when it refuses (e.g. the rollout is not paused)
    or does not answer.

    \b
    Examples:
      kubectl tmc canary resume checkout -n shop
    """,
)
