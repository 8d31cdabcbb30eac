"""Errors of the devices domain (mapped to HTTP by :mod:`server.errors`)."""

from __future__ import annotations

from server.errors import LintelError


class TooManyAttempts(LintelError):
    """Too many failed enrolment codes from one address; try again later (429)."""

    status_code = 429
    code = "too_many_attempts"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
