"""Canary control over HTTP: ``POST .../canaryrollouts/NAME/<action>`` forwarded as a ``CanaryControl``
request on ``tmc.ctl.canary.<namespace>.<name>.<action>``; the canary controller's ``ControlReply``
is the answer (its ``code`` the HTTP status), and 503 when nobody answers in time.
"""

from __future__ import annotations

from typing import get_args

import msgspec

from tmcd.api import errors
from tmcd.bus import Bus, BusError
from tmcd.contracts import subjects
from tmcd.contracts.messages import CanaryAction, CanaryControl, ControlReply
from tmcd.contracts.names import InvalidNameError

ACTIONS: tuple[str, ...] = get_args(CanaryAction)
"""promote, abort, pause, resume, retry."""
TIMEOUT = 5.0
"""Seconds to wait for the canary controller's reply."""


class ControlRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The optional body of a canary control request."""

    full: bool = False
    """promote only: skip every remaining step."""
    reason: str = ""
    """Why, for the audit trail (the rollout's events)."""


def decode_request(body: bytes) -> ControlRequest:
    """The body (empty: the defaults); 400 when it is not a control request."""
    if not body.strip():
        return ControlRequest()
    try:
        return msgspec.json.decode(body, type=ControlRequest)
    except msgspec.DecodeError as exc:
        raise errors.bad_request(f'the body must be {{"full": bool, "reason": str}}: {exc}') from None
    except RecursionError:  # unknown fields are refused, but only once the decoder got there
        raise errors.bad_request('the body must be {"full": bool, "reason": str}: nested too deeply') from None


async def send(
    bus: Bus, namespace: str, name: str, action: str, req: ControlRequest, *, requested_by: str, now: float
) -> ControlReply:
    """Ask the canary controller; 404 for a name no rollout can have, 503 when no controller answers."""
    try:
        subject = subjects.ctl_canary(namespace, name, action)
    except (InvalidNameError, ValueError) as exc:
        raise errors.not_found("canaryrollouts", name) from exc
    msg = CanaryControl(
        namespace=namespace,
        name=name,
        action=action,  # type: ignore[arg-type]
        timestamp=now,
        full=req.full,
        requested_by=requested_by,
        reason=req.reason,
    )
    try:
        return await bus.request(subject, msg, ControlReply, timeout=TIMEOUT)
    except BusError as exc:
        raise errors.ApiError(503, "ServiceUnavailable", f"no canary controller answered: {exc}") from None


def http_code(reply: ControlReply) -> int:
    """The HTTP status of a reply: its code, or 502 when that is not an HTTP status."""
    return reply.code if 200 <= reply.code <= 599 else 502
