"""One-line errors for ``kubectl tmc``: exit 1 for failed operations, 2 for usage errors."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failed operation: printed as ``error: MESSAGE`` (exit 1) without a traceback."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def line(self) -> str:
        """The line printed on stderr."""
        return f"error: {self.message}"


class UsageError(CliError):
    """Bad arguments found after parsing (exit 2)."""

    exit_code = EXIT_USAGE


class Unreachable(CliError):
    """tmcd could not be reached at all."""

    def __init__(self, where: str, reason: str, hint: str) -> None:
        super().__init__(f"cannot reach tmcd at {where}: {reason} — is `tmcd run` running? {hint}")
        self.where = where


class ServerError(CliError):
    """tmcd answered with a Kubernetes ``Status`` (NotFound, Conflict, Invalid, ...)."""

    def __init__(self, code: int, status: dict[str, Any] | None, fallback: str = "") -> None:
        status = status or {}
        self.code = code
        self.reply = status if "ok" in status and "kind" not in status else None
        """The body when it is a ControlReply (a refused control request), not a Status."""
        self.reason = str(status.get("reason") or _REASONS.get(code, "Unknown"))
        message = str(status.get("message") or fallback or f"request failed with code {code}")
        super().__init__(message)

    def line(self) -> str:
        return f"Error from server ({self.reason}): {self.message}"


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    422: "Invalid",
    500: "InternalError",
    503: "ServiceUnavailable",
}
