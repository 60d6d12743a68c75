"""``kubectl tmc canary``: control a CanaryRollout (promote, abort, pause, resume, retry) and
follow it (status); each verb is its own module, imported only when it runs."""

from __future__ import annotations

import click

from tmcd.kubectl.common import CONTEXT_SETTINGS
from tmcd.kubectl.root import LazyGroup

VERBS: dict[str, str] = {
    "promote": "tmcd.kubectl.canary.promote:promote",
    "abort": "tmcd.kubectl.canary.abort:abort",
    "pause": "tmcd.kubectl.canary.pause:pause",
    "resume": "tmcd.kubectl.canary.resume:resume",
    "retry": "tmcd.kubectl.canary.retry:retry",
    "status": "tmcd.kubectl.canary.status:status",
}
"""Verb -> ``module:attribute``."""


@click.group(cls=LazyGroup, lazy_commands=VERBS, context_settings=CONTEXT_SETTINGS)
def canary() -> None:
    """Control and follow canary rollouts.

    Promote, abort, pause, resume or retry a rollout, or follow its status until it ends.

    The control verbs are answered by tmcd's canary controller over NATS
    (tmc.ctl.canary.<namespace>.<name>.<action>); each prints the controller's answer and
    exits 1 when it refuses (the action does not apply to the rollout's phase) or does not
    answer.

    \b
    Examples:
      kubectl tmc canary status checkout -n shop --watch --timeout 10m
      kubectl tmc canary promote checkout -n shop
      kubectl tmc canary promote checkout -n shop --full
      kubectl tmc canary abort checkout -n shop
      kubectl tmc canary retry checkout -n shop
    """
