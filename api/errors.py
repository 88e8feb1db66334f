"""Errors of the HTTP API, and how every error becomes one JSON answer.

`ApiError` is the root of what `api` raises on purpose (authentication, uploads, request
shapes). Each subclass carries the HTTP status it means, and the handlers below turn every error
into `{"error": "...", "detail": ...}`.

The write side (`registry`) refuses commands in its own words, `registry.errors`; this is the one
place that says which HTTP status each kind of refusal is. Errors raised by the other packages
(`taskset`, `events`, `normalizer`, `projector`) are mapped the same way by `status_for`: a
`FleetbusError` is always the caller's business (4xx) or an unavailable dependency (503), never
a 500. Only a bug is a 500, and its traceback goes to the log, not to the
client.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.types import ExceptionHandlersMap

from events.errors import (
    AppendRefused,
    ConcurrencyConflict,
    EventLogUnavailable,
    UndecodableEvent,
)
from events.errors import PayloadTooLarge as EventTooLarge
from registry.errors import (
    CommandTooLarge,
    HistoryUnavailable,
    InvalidCommand,
    RegistryError,
    StateConflict,
    UnknownAggregate,
)
from taskset.errors import FleetbusError, InvalidName

log = logging.getLogger(__name__)


class ApiError(FleetbusError):
    """Root of the errors raised by `api`; `status` is the HTTP status it answers with."""

    status: ClassVar[int] = 400

    def __init__(self, message: str, detail: Any = None) -> None:
        self.detail = detail
        super().__init__(message)


class InvalidRequest(ApiError):
    """The request is well-formed HTTP but asks for something that makes no sense."""

    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    """The request contradicts the current state (exists already, changed meanwhile)."""

    status = 409


class RequestTooLarge(ApiError):
    status = 413


class UnsafeArchive(ApiError):
    """An uploaded archive that cannot be extracted safely; names the entry at fault."""

    status = 400

    def __init__(self, entry: str, reason: str) -> None:
        self.entry = entry
        self.reason = reason
        super().__init__(f"archive entry {entry!r}: {reason}", {"entry": entry})


class ArchiveTooLarge(UnsafeArchive):
    status = 413


class ServiceUnavailable(ApiError):
    status = 503


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """What every failed request answers: a sentence for people, and details for programs."""

    error: str
    detail: Any = None


EXTRA_STATUS: dict[type[BaseException], int] = {
    InvalidName: 400,
    ConcurrencyConflict: 409,
    EventTooLarge: 413,
    EventLogUnavailable: 503,
    UndecodableEvent: 500,
    AppendRefused: 503,
    InvalidCommand: 400,
    UnknownAggregate: 404,
    StateConflict: 409,
    CommandTooLarge: 413,
    HistoryUnavailable: 503,
}
"""Statuses of errors from other packages; the most specific class in an error's MRO wins."""


def register_status(error: type[BaseException], status: int) -> None:
    """Declare the HTTP status of an error type defined outside `api` (services call this)."""
    EXTRA_STATUS[error] = status


def status_for(error: BaseException) -> int:
    if isinstance(error, ApiError):
        return error.status
    for cls in type(error).__mro__:
        if cls in EXTRA_STATUS:
            return EXTRA_STATUS[cls]
    if isinstance(error, FleetbusError):
        return 400
    return 500


def error_response(status: int, message: str, detail: Any = None) -> Response[ErrorBody]:
    return Response(
        ErrorBody(error=message, detail=detail),
        status_code=status,
        headers={"WWW-Authenticate": 'Bearer realm="fleetbus"'} if status == 401 else None,
    )


def fleetbus_error_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    status = status_for(error)
    detail = error.detail if isinstance(error, ApiError | RegistryError) else None
    if status == 500:
        log.error(
            "request failed",
            exc_info=error,
            extra={"method": request.method, "path": request.url.path},
        )
    elif status > 500:
        log.warning(
            "request failed: %s",
            error,
            extra={"method": request.method, "path": request.url.path},
        )
    return error_response(status, str(error), detail)


def http_error_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Litestar's own errors (validation, unknown route, body too large) in our JSON shape."""
    assert isinstance(error, HTTPException)
    status = error.status_code
    message = error.detail or "request failed"
    detail: Any = error.extra or None
    if isinstance(error, ValidationException):
        message = f"invalid request: {error.detail}" if error.detail else "invalid request"
    elif status == 413:
        limit = getattr(request.app, "request_max_body_size", None)
        message = (
            f"request body too large: the limit is {limit:,} bytes"
            if limit
            else "request body too large"
        )
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    elif isinstance(error, NotFoundException):
        message = f"no such path: {request.url.path}"
    response = error_response(status, message, detail)
    if error.headers:
        response.headers.update(error.headers)
    return response


def unexpected_error_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    if isinstance(error, FleetbusError):
        return fleetbus_error_handler(request, error)
    if isinstance(error, HTTPException):
        return http_error_handler(request, error)
    if isinstance(error, RecursionError) and "deserializ" in str(error):
        # msgspec refuses JSON nested deeper than the interpreter's recursion limit.
        return error_response(400, "invalid request: the JSON body is nested too deeply")
    log.error(
        "unexpected error",
        exc_info=error,
        extra={"method": request.method, "path": request.url.path},
    )
    return error_response(500, "internal error: the hub's log has the details")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    FleetbusError: fleetbus_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
