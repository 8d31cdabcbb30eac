"""Errors of the cases domain; subclasses of the server's mapped errors (HTTP status)."""

from __future__ import annotations

from server.errors import Conflict, Forbidden, InvalidInput, NotFound


class CaseNotFound(NotFound):
    """No such case, or not one of the caller's sites."""


class CaseClosed(Conflict):
    """The action needs a case that is still open or assigned."""

    def __init__(self, detail: str, *, case_id: int | None = None, outcome: str | None = None):
        super().__init__(detail)
        # For pages that say it in the reader's language (the detail is English).
        self.case_id = case_id
        self.outcome = outcome


class BadOutcome(InvalidInput):
    """An action's input contradicts the case (unit of another site, empty label...)."""


class ReopenRefused(Forbidden):
    """The case may not be reopened by this caller (too long ago, or closed by the system)."""
