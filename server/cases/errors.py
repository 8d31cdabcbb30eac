"""Errors of the cases domain; subclasses of the server's mapped errors (HTTP status)."""

from __future__ import annotations

from server.errors import Conflict, Forbidden, InvalidInput, NotFound


class CaseNotFound(NotFound):
    """No such case, or not one of the caller's sites."""


class CaseClosed(Conflict):
    """The action needs a case that is still open or assigned."""


class BadOutcome(InvalidInput):
    """An action's input contradicts the case (unit of another site, empty label...)."""


class ReopenRefused(Forbidden):
    """The case may not be reopened by this caller (too long ago, or closed by the system)."""
