"""Every HTTP error is a Kubernetes ``Status``: handler errors, aiohttp's own (404, 405, 413) and
requests the HTTP parser refuses (414 URI Too Long, 431, 400), which never reach a handler.

aiohttp answers a request line or header it cannot parse itself, in plain text, logging the
parser's exception with its traceback; :class:`StatusRequestHandler` answers it as a Status and
logs one debug line instead (a scanner sending garbage must not fill the log).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from tmcd.api import errors

log = logging.getLogger("tmcd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encoder = msgspec.json.Encoder()
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    414: "RequestURITooLong",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    431: "RequestHeaderFieldsTooLarge",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
JSON_TYPES = ("application/json",)
PATCH_TYPES = ("application/merge-patch+json", "application/json-patch+json", "application/json")


def status_error(code: int, message: str) -> errors.ApiError:
    """An ApiError with the Kubernetes reason for an HTTP code."""
    return errors.ApiError(code, _REASONS.get(code, HTTPStatus(code).phrase.replace(" ", "")), message)


def error_response(err: errors.ApiError) -> web.Response:
    """A Status object with the error's HTTP code."""
    return web.Response(body=_encoder.encode(err.status()), status=err.code, content_type="application/json")


def _http_error(exc: web.HTTPException, request: web.Request) -> errors.ApiError:
    code = exc.status
    if code == 404:
        return status_error(404, f"the server could not find the requested resource ({request.path})")
    if code == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return status_error(405, f"the method {request.method} is not allowed on {request.path} (allowed: {allowed})")
    if code == 413:
        return status_error(413, f"the request body is too large: {exc.text or exc.reason}")
    return status_error(code, exc.text or exc.reason)


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiErrors and aiohttp's HTTP errors become Status objects; anything unexpected a 500 Status,
    never a traceback in the answer."""
    try:
        return await handler(request)
    except errors.ApiError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects
        resp = error_response(_http_error(exc, request))
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(errors.ApiError(500, "InternalError", "internal error; see the tmcd log"))


def check_content_type(request: web.Request, allowed: tuple[str, ...], *, optional: bool = False) -> str:
    """The body's media type when it is one of ``allowed``; 415 otherwise (a missing Content-Type
    included), unless ``optional`` and there is no body."""
    if optional and not request.body_exists:
        return ""  # no body: whatever Content-Type a client put on it says nothing
    if "Content-Type" not in request.headers:
        raise errors.unsupported_media_type("", allowed)
    media = request.content_type
    if media not in allowed:
        raise errors.unsupported_media_type(media, allowed)
    return media


async def read_body(request: web.Request, allowed: tuple[str, ...] = JSON_TYPES) -> bytes:
    """The request body after its media type was checked (415), within the app's size limit (413)."""
    check_content_type(request, allowed)
    return await request.read()


class StatusRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering requests its parser refuses with a Status."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A Status instead of aiohttp's text (and one debug line instead of a logged traceback)."""
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong) and exc.args and _is_request_line(exc.args[0]):
            err = status_error(414, "the request URI is too long")
        elif isinstance(exc, LineTooLong):
            err = status_error(431, "a request header is too large")
        else:
            err = status_error(400, f"malformed HTTP request: {exc.message or type(exc).__name__}")
        log.debug("refused a request from %s: %s", request.remote, err.message)
        resp = error_response(err)
        resp.force_close()
        return resp


def _is_request_line(line: object) -> bool:
    """Whether the line aiohttp's parser quotes is the request line (``GET /path...``; the C parser
    quotes only the URL) rather than a header."""
    text = line.decode("latin-1", "replace") if isinstance(line, bytes | bytearray) else str(line)
    return text.startswith(("/", "http:", "https:")) or text.split(" ", 1)[0] in _METHODS


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class StatusServer(web.Server):
    """aiohttp's low-level server with :class:`StatusRequestHandler` for each connection."""

    def __call__(self) -> RequestHandler:
        return StatusRequestHandler(self, loop=self._loop, **self._kwargs)


def use_status_errors(runner: web.AppRunner) -> None:
    """Make a set-up runner's connections answer parser errors as Status objects."""
    server = runner.server
    if server is not None and type(server) is web.Server:
        server.__class__ = StatusServer  # the runner made it; only its connection factory changes
