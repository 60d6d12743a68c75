"""Kubernetes-style API errors (``Status`` objects), shared by the HTTP and NATS APIs."""

from __future__ import annotations

from typing import Any

import msgspec

from tmcd.resources.status import Status, StatusCause, StatusDetails

__all__ = [
    "ApiError",
    "Status",
    "StatusCause",
    "StatusDetails",
    "already_exists",
    "bad_request",
    "conflict",
    "forbidden",
    "from_validation",
    "invalid",
    "not_found",
    "status_body",
    "too_large",
    "unauthorized",
    "unsupported_media_type",
]


class ApiError(Exception):
    """An error the API returns as a Status object with an HTTP code."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        kind: str = "",
        name: str = "",
        causes: list[StatusCause] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.kind = kind
        self.name = name
        self.causes = causes or []

    def status(self) -> Status:
        """As a Status object."""
        details = (
            StatusDetails(name=self.name, kind=self.kind, causes=self.causes)
            if (self.name or self.kind or self.causes)
            else None
        )
        return Status(message=self.message, reason=self.reason, code=self.code, details=details)


def not_found(kind: str, name: str) -> ApiError:
    """404 NotFound."""
    return ApiError(404, "NotFound", f'{kind} "{name}" not found', kind=kind, name=name)


def already_exists(kind: str, name: str) -> ApiError:
    """409 AlreadyExists."""
    return ApiError(409, "AlreadyExists", f'{kind} "{name}" already exists', kind=kind, name=name)


def conflict(kind: str, name: str, detail: str = "") -> ApiError:
    """409 Conflict (stale resourceVersion)."""
    msg = (
        f'Operation cannot be fulfilled on {kind} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", msg + (f" ({detail})" if detail else ""), kind=kind, name=name)


def invalid(kind: str, name: str, causes: list[StatusCause]) -> ApiError:
    """422 Invalid with one cause per bad field."""
    summary = "; ".join(f"{c.field}: {c.message}" for c in causes)
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', kind=kind, name=name, causes=causes)


def bad_request(message: str) -> ApiError:
    """400 BadRequest."""
    return ApiError(400, "BadRequest", message)


def too_large(message: str) -> ApiError:
    """413 RequestEntityTooLarge (a body or an object larger than ``api.max_object_bytes``)."""
    return ApiError(413, "RequestEntityTooLarge", message)


def unsupported_media_type(got: str, allowed: tuple[str, ...]) -> ApiError:
    """415 UnsupportedMediaType."""
    return ApiError(415, "UnsupportedMediaType", f"the body's media type {got!r} is not one of {', '.join(allowed)}")


def unauthorized(message: str = "a bearer token is required") -> ApiError:
    """401 Unauthorized."""
    return ApiError(401, "Unauthorized", message)


def forbidden(message: str) -> ApiError:
    """403 Forbidden."""
    return ApiError(403, "Forbidden", message)


def from_validation(kind: str, name: str, exc: msgspec.ValidationError) -> ApiError:
    """A msgspec validation error (``... - at `$.spec.policy```) as 422 Invalid naming the field path."""
    text = str(exc)
    message, _, path = text.rpartition(" - at `")
    field = path.rstrip("`").lstrip("$").lstrip(".") if path else ""
    return invalid(kind, name, [StatusCause(field=field or "<body>", message=message or text)])


def status_body(err: ApiError) -> dict[str, Any]:
    """The Status as plain JSON-able data."""
    return msgspec.to_builtins(err.status())  # type: ignore[no-any-return]
