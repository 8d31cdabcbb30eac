"""Errors of the web UI; subclasses of the server's mapped errors (HTTP status).

The web router renders these as HTML pages (see :mod:`server.web.routes`),
the JSON API keeps its own handler.
"""

from __future__ import annotations

from server.errors import AuthRequired, Forbidden, LintelError


class LoginRequired(AuthRequired):
    """No valid session cookie: GET pages redirect to the login page."""


class CsrfRejected(Forbidden):
    """A POST form without the session's CSRF token (or with a wrong one)."""

    code = "csrf"


class ReadOnly(Forbidden):
    """A viewer tried to change something."""


class LoginLocked(LintelError):
    """Too many failed logins for this username from this address; try again later."""

    status_code = 429
    code = "locked"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
