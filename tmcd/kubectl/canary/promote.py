"""``kubectl tmc canary promote NAME [--full]``."""

from __future__ import annotations

from tmcd.kubectl.canary.control import control_command

promote = control_command(
    "promote",
    """Move a rollout to its next step (ending a pause), or with --full straight to the end.

    --full skips every remaining step and analysis: 100% of traffic to the canary version on
    all eligible clusters, then Succeeded. Prints the controller's answer; exits 1 when it
    refuses (e.g. the rollout already ended) or does not answer.

    \b
    Examples:
      kubectl tmc canary promote checkout -n shop
      kubectl tmc canary promote checkout -n shop --full --reason "hotfix verified"
    """,
    full=True,
)
