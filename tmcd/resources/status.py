"""Kubernetes ``Status`` objects: what a failed request returns, with a cause per bad field.

Wire types only; :mod:`tmcd.api.errors` raises them as HTTP and NATS errors, and
:mod:`tmcd.resources.validate` reports invalid fields as :class:`StatusCause`.
"""

from __future__ import annotations

import msgspec


class StatusCause(msgspec.Struct, kw_only=True, frozen=True):
    """One reason a request was invalid: the field path and what is wrong with it."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"


class StatusDetails(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Which object the error is about, and field causes for Invalid."""

    name: str = ""
    kind: str = ""
    causes: list[StatusCause] = msgspec.field(default_factory=list)


class Status(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """A Kubernetes ``Status`` (what every failed request returns)."""

    kind: str = "Status"
    api_version: str = "v1"
    status: str = "Failure"
    message: str = ""
    reason: str = ""
    code: int = 500
    details: StatusDetails | None = None
