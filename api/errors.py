"""Errors of the HTTP API, and how every error becomes one JSON answer.

`ApiError` is the root of what `api` raises on purpose (authentication, uploads, request
shapes). Each subclass carries the HTTP status it means, and the handlers below turn every error
into one problem details document (RFC 9457, `application/problem+json`): `type`, `title`,
`status`, `detail` (the one-line sentence), `instance` (the request path), and as extensions
`error` (the same sentence, for clients that read it), `errors` (for a validation failure, one
entry per broken rule: the field, the rule, the value's position — a JSONPath into the body, or
the query or path parameter — and, where it is short and not secret, the value given) and
`context` (what else a program may want, e.g. the archive entry at fault).

The write side (`registry`) refuses commands in its own words, `registry.errors`; this is the one
place that says which HTTP status each kind of refusal is. Errors raised by the other packages
(`taskset`, `events`, `normalizer`, `projector`) are mapped the same way by `status_for`: a
`FleetbusError` is always the caller's business (4xx) or an unavailable dependency (503), never
a 500. Only a bug is a 500, and its traceback goes to the log, not to the
client.
"""

from __future__ import annotations

import http
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.types import ExceptionHandlersMap

from access.errors import AccountTooLarge
from events.errors import (
    AppendRefused,
    ConcurrencyConflict,
    EventLogUnavailable,
    UndecodableEvent,
)
from events.errors import PayloadTooLarge as EventTooLarge
from notify.errors import InvalidSubscription, SubscriptionExists, UnknownSubscription
from registry.errors import (
    CommandTooLarge,
    HistoryUnavailable,
    InvalidCommand,
    QuotaExceeded,
    RegistryError,
    StateConflict,
    UnknownAggregate,
)
from taskset.errors import FleetbusError, InvalidName

log = logging.getLogger(__name__)


class FieldProblem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One broken rule of a request: which field, which rule, where the value sits."""

    field: str
    rule: str
    position: str
    """`$.labels[...]`-style JSONPath into a JSON body, `?name` for a query parameter,
    `{name}` for a path parameter, or the file and field of an upload."""
    source: str
    """`body`, `query`, `path` or `upload`."""
    value: str | None = None
    """The value given, for query and path parameters (never a body's: it may be secret)."""

    def sentence(self) -> str:
        got = f" (got {self.value!r})" if self.value is not None else ""
        if self.source == "query":
            return f"query parameter {self.field!r}: {self.rule}{got}"
        if self.source == "path":
            return f"path parameter {self.field!r}: {self.rule}{got}"
        if self.source == "upload":
            return f"{self.position}: {self.rule}{got}"
        return f"{self.source} field {self.field!r} at {self.position}: {self.rule}{got}"


class ApiError(FleetbusError):
    """Root of the errors raised by `api`; `status` is the HTTP status it answers with."""

    status: ClassVar[int] = 400

    def __init__(
        self, message: str, detail: Any = None, *, errors: Sequence[FieldProblem] = ()
    ) -> None:
        self.detail = detail
        self.errors = list(errors)
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


class ProblemDetails(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What every failed request answers (RFC 9457): a sentence for people, fields for programs."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    error: str
    """The same sentence as `detail`."""
    errors: list[FieldProblem] | None = None
    context: Any = None


PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE = "about:blank"
"""RFC 9457's type for problems that need no more explanation than their status and detail."""
_MSGSPEC_AT = re.compile(r"^(?P<rule>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)


def _rule_text(message: str) -> str:
    return message[:1].lower() + message[1:] if message else "is invalid"


def problems_from_msgspec(
    error: msgspec.ValidationError, source: str = "body"
) -> list[FieldProblem]:
    """The field, rule and position msgspec's message says (`... - at `$.a.b[2]``)."""
    match = _MSGSPEC_AT.match(str(error))
    rule, path = (match["rule"], match["path"]) if match else (str(error), None)
    position = path or "$"
    field = position.removeprefix("$").removeprefix(".") or "(the whole body)"
    return [FieldProblem(field=field, rule=_rule_text(rule), position=position, source=source)]


def _validation_problems(request: Request[Any, Any, Any], extra: object) -> list[FieldProblem]:
    """litestar's validation details (`[{message, key, source}]`) as field problems."""
    problems = []
    for item in extra if isinstance(extra, list) else []:
        if not isinstance(item, Mapping):
            continue
        key = str(item.get("key") or "")
        raw_source = item.get("source") or "body"
        source = str(getattr(raw_source, "value", raw_source))  # litestar's ParamType enum
        rule = _rule_text(str(item.get("message") or ""))
        if source == "query":
            given = request.query_params.get(key)
            value = str(given) if given is not None and len(str(given)) <= 200 else None
            problems.append(
                FieldProblem(field=key, rule=rule, position=f"?{key}", source=source, value=value)
            )
        elif source == "path":
            given = request.path_params.get(key)
            value = str(given) if given is not None else None
            problems.append(
                FieldProblem(
                    field=key, rule=rule, position=f"{{{key}}}", source=source, value=value
                )
            )
        elif key in ("", "data"):
            problems.append(
                FieldProblem(field="(the whole body)", rule=rule, position="$", source=source)
            )
        else:
            problems.append(FieldProblem(field=key, rule=rule, position=f"$.{key}", source=source))
    return problems


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
    QuotaExceeded: 403,
    AccountTooLarge: 409,
    InvalidSubscription: 400,
    UnknownSubscription: 404,
    SubscriptionExists: 409,
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


def error_response(
    request: Request[Any, Any, Any] | None,
    status: int,
    message: str,
    detail: Any = None,
    errors: Sequence[FieldProblem] = (),
) -> Response[ProblemDetails]:
    try:
        title = http.HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = ProblemDetails(
        type=PROBLEM_TYPE,
        title=title,
        status=status,
        detail=message,
        instance=request.url.path if request is not None else "",
        error=message,
        errors=list(errors) or None,
        context=detail,
    )
    return Response(
        body,
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers={"WWW-Authenticate": 'Bearer realm="fleetbus"'} if status == 401 else None,
    )


def fleetbus_error_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    status = status_for(error)
    detail = error.detail if isinstance(error, ApiError | RegistryError) else None
    errors = error.errors if isinstance(error, ApiError) else []
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
    return error_response(request, status, str(error), detail, errors)


def http_error_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Litestar's own errors (validation, unknown route, body too large) in our JSON shape."""
    assert isinstance(error, HTTPException)
    status = error.status_code
    message = error.detail or "request failed"
    detail: Any = error.extra or None
    errors: list[FieldProblem] = []
    if isinstance(error, ValidationException):
        errors = _validation_problems(request, error.extra)
        if errors:
            detail = None
            message = "invalid request: " + "; ".join(problem.sentence() for problem in errors)
        else:
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
    response = error_response(request, status, message, detail, errors)
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
        return error_response(request, 400, "invalid request: the JSON body is nested too deeply")
    log.error(
        "unexpected error",
        exc_info=error,
        extra={"method": request.method, "path": request.url.path},
    )
    return error_response(request, 500, "internal error: the hub's log has the details")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    FleetbusError: fleetbus_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
