"""Label values: only validated, bounded values become labels."""

from __future__ import annotations

import re

_RESOURCE = re.compile(r"^(?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?v[0-9]+[a-z0-9]*/[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_FREE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")

OTHER_RESOURCE = "other"
OTHER_REASON = "Other"
KNOWN_REASONS = frozenset(
    {
        "Conflict",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Invalid",
        "Timeout",
        "TooManyRequests",
        "WebhookDenied",
        "InternalError",
        "ServiceUnavailable",
        "Unauthorized",
        "BadRequest",
        "Unknown",
    }
)
"""Sync error reasons that get their own label value (Kubernetes StatusReasons and a few)."""


def resource_label(resource: str) -> str:
    """``group/version/resource`` (or ``version/resource`` for the core group), else 'other'."""
    return resource if len(resource) <= 253 and _RESOURCE.match(resource) else OTHER_RESOURCE


def reason_label(reason: str) -> str:
    """A known error reason, else 'Other' (an empty reason is 'Unknown')."""
    if not reason:
        return "Unknown"
    return reason if reason in KNOWN_REASONS else OTHER_REASON


def free_label(value: str, default: str = "unknown") -> str:
    """A label value from a free-form string (region, zone, provider): short and plain, else ``default``."""
    return value if _FREE.match(value) else default
