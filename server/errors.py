"""Server domain errors and the one handler that maps them to HTTP.

Services raise these; routes do not catch them. Each carries a stable
``code`` that clients can branch on and a human ``detail``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class LintelError(Exception):
    """Base of deliberate server errors."""

    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(LintelError):
    """A referenced object does not exist (or is not visible to the caller)."""

    status_code = 404
    code = "not_found"


class Conflict(LintelError):
    """The object already exists or the change contradicts stored state."""

    status_code = 409
    code = "conflict"


class InvalidInput(LintelError):
    """Input that passed the schema but breaks a domain rule."""

    status_code = 422
    code = "invalid"


class AuthRequired(LintelError):
    """No credentials, or credentials that match nothing."""

    status_code = 401
    code = "unauthenticated"


class Forbidden(LintelError):
    """Valid credentials that may not do this (e.g. another site's data)."""

    status_code = 403
    code = "forbidden"


class PayloadTooLarge(LintelError):
    """The request body exceeds the configured limit."""

    status_code = 413
    code = "payload_too_large"


async def _handle(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, LintelError):  # registered for LintelError only
        raise exc
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthRequired) else None
    return JSONResponse(
        {"detail": exc.detail, "code": exc.code}, status_code=exc.status_code, headers=headers
    )


def install_handlers(app: FastAPI) -> None:
    """Map every :class:`LintelError` to its HTTP status and a JSON body."""
    app.add_exception_handler(LintelError, _handle)
