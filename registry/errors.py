"""Registry exception tree: every error the registry import raises on purpose.

The CLI maps :class:`InputError` (the file, photo archive or options are
unusable as a whole) to exit code 2 and prints it without a traceback. Problems
with single rows are *not* exceptions: they are collected as
:class:`registry.report.RowIssue` so the user sees every bad row at once.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of all deliberate registry errors."""


class InputError(RegistryError):
    """The input as a whole is unusable (unreadable file, missing columns, unsafe zip)."""


class UnsafeArchiveError(InputError):
    """A photo archive is refused: path traversal, zip bomb, too many or too large entries."""


class FieldError(RegistryError):
    """One cell is invalid; ``message`` is shown to the user next to the row and column.

    Raised by the field parsers (address, ID number, phone, date, role) and
    turned into a row issue by the validator.
    """


class PhotoError(RegistryError):
    """A photo named by a row cannot be found or read (missing, too large, unsafe name)."""


class StoreError(RegistryError):
    """The database refused a write or is unusable (names the site or row)."""


class RemoteError(InputError):
    """``--server``: the server is unreachable, refused the token, or refused the import."""


class FacesNeeded(RegistryError):
    """Remote import: rows whose photo the client skipped as known need their face after all.

    Raised before anything is written; the client enrols every photo and sends again.
    """

    def __init__(self, rows: tuple[int, ...]) -> None:
        super().__init__(f"rows {', '.join(map(str, rows[:20]))} need their faces enrolled")
        self.rows = rows
