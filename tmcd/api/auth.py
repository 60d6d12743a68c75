"""Bearer-token authorisation for the API (tokens compared in constant time, never logged)."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from tmcd.api import errors
from tmcd.config import ApiConfig


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's name (or ``anonymous``) and whether it may write."""

    name: str
    can_write: bool


def is_loopback(remote: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and unix sockets (no remote address)."""
    if not remote:
        return True
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def authorize(cfg: ApiConfig, authorization: str | None, *, write: bool, remote: str | None) -> Caller:
    """Check a request; raises 401 Unauthorized / 403 Forbidden ApiErrors."""
    presented = ""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise errors.unauthorized("the Authorization header must be 'Bearer <token>'")
        presented = value.strip()
    if not cfg.tokens:
        if write and not is_loopback(remote):
            raise errors.forbidden("no API tokens are configured: writes are allowed only from loopback clients")
        return Caller("anonymous", True)
    match = None
    for tok in cfg.tokens:
        # compare against every token, always, so timing does not reveal which one matched
        if hmac.compare_digest(tok.token.encode(), presented.encode()) and match is None:
            match = tok
    if match is None:
        if presented:
            raise errors.unauthorized("invalid bearer token")
        if write or cfg.require_auth_for_reads:
            raise errors.unauthorized()
        return Caller("anonymous", False)
    can_write = match.access == "read-write"
    if write and not can_write:
        raise errors.forbidden(f"token {match.name!r} is read-only")
    return Caller(match.name, can_write)
