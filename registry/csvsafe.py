"""CSV cells a spreadsheet shows as text, never runs: every CSV the registry writes.

A cell starting with ``=``, ``+``, ``-`` or ``@`` is a formula to Excel,
LibreOffice and Google Sheets (``=HYPERLINK("http://evil", "click")`` in a
name the register was given ends up in the import report); tab and carriage
return too, as some apps strip them first (OWASP "CSV injection"). Such a cell
gets a leading apostrophe, which the spreadsheet takes as "this is text". The
reader drops that apostrophe again (:func:`unescape_cell`), so a file we wrote
(the template's ``'+86 139...``) reads back as it was meant.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """The cell as text; formula starts get a leading apostrophe."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def unescape_cell(text: str) -> str:
    """Undo :func:`safe_cell`: ``'=x`` -> ``=x``; any other text is returned as is."""
    if text.startswith("'") and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text
