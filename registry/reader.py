"""Read a registry file (CSV in UTF-8/UTF-8-BOM/UTF-16/GBK/GB18030, or XLSX).

Output is a :class:`Sheet`: the mapped columns and :class:`RawRow` objects whose
``number`` is the row number the user sees in Excel, so every report line can
point at the right row. Rows whose first cell starts with ``#`` are comments
(the template documents its columns that way); blank rows are skipped.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from registry.columns import map_headers, match_header
from registry.csvsafe import unescape_cell
from registry.errors import InputError

log = logging.getLogger(__name__)

CellValue = str | int | float | date | datetime | None
MAX_ROWS = 200_000
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_TITLE_ROWS = 10
MAX_SHEET_ROWS = MAX_ROWS + 10_000
"""Rows an XLSX sheet may span (data rows plus room for title, comment and blank
rows): checked against the sheet's declared dimension before a row is read, and
again while reading (the dimension is optional and may lie)."""
MAX_HEADER_COLUMNS = 256
"""Columns searched for the header (the template has 11); data rows are then read
only as far as the header goes, whatever the sheet's dimension claims (A1:XFD...)."""
MAX_XLSX_INFLATED_BYTES = 512 * 1024 * 1024
"""The most an XLSX may inflate to (its parts' declared sizes, checked before opening):
200,000 rows of 16 cells are ~250 MB of sheet XML; a few KB of zipped XML can
declare gigabytes."""


@dataclass(frozen=True, slots=True)
class RawRow:
    """One data row: ``number`` as Excel shows it, ``cells`` keyed by column key."""

    number: int
    cells: Mapping[str, CellValue]

    def text(self, key: str) -> str:
        """The cell as trimmed text ('' when absent or empty)."""
        return cell_text(self.cells.get(key))


@dataclass(frozen=True, slots=True)
class Sheet:
    source: str
    encoding: str | None
    columns: Mapping[str, str]
    """Column key -> header as written in the file."""
    rows: tuple[RawRow, ...]
    ignored_headers: tuple[str, ...]


def cell_text(value: CellValue) -> str:
    """Text of a cell; integral floats lose their '.0' (Excel numbers), dates are ISO."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    # '=x is how our own CSVs (registry.csvsafe) keep a spreadsheet from running a cell.
    text = unescape_cell(str(value).strip()).strip()
    # ="0123" is the usual trick to keep Excel from turning IDs into numbers.
    if len(text) >= 3 and text.startswith('="') and text.endswith('"'):
        return text[2:-1].strip()
    return text


def decode_csv_bytes(data: bytes) -> tuple[str, str]:
    """Decode CSV bytes: BOMs first, then strict UTF-8, then GB18030 (a superset of GBK).

    Returns ``(text, encoding name)``; raises InputError when nothing fits.
    """
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="strict"), "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Excel's "Unicode text" export.
        return data.decode("utf-16"), "utf-16"
    try:
        return data.decode("utf-8", errors="strict"), "utf-8"
    except UnicodeDecodeError as exc:
        _refuse_damaged_utf8(data, exc)
    try:
        return data.decode("gb18030", errors="strict"), "gb18030"
    except UnicodeDecodeError:
        raise InputError(
            "the file is neither UTF-8 nor GBK/GB18030 text; save it as CSV UTF-8"
        ) from None


def _refuse_damaged_utf8(data: bytes, exc: UnicodeDecodeError) -> None:
    """Refuse UTF-8 with a few bad bytes instead of misreading it all as GB18030.

    GB18030 decodes almost any byte string, so a UTF-8 file with one damaged
    character would otherwise import every Chinese name as mojibake.
    """
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    good = sum(1 for ch in text if ord(ch) > 127 and ch != "\ufffd")
    if good >= 10 * bad:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"the file is UTF-8 but has {bad} damaged character(s), the first on line {line}; "
            "fix or re-save it as CSV UTF-8"
        )


def _sniff_delimiter(text: str) -> str:
    sample = "\n".join(line for line in text.splitlines()[:20] if not line.startswith("#"))
    counts = {d: sample.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _is_comment(values: Iterable[CellValue]) -> bool:
    for value in values:
        text = cell_text(value)
        if text:
            return text.startswith("#")
    return False


def _looks_like_header(values: list[CellValue]) -> bool:
    """At least two cells are known column names (a title row has one cell of text)."""
    return sum(match_header(cell_text(v)) is not None for v in values if cell_text(v)) >= 2


def _build(
    source: str, encoding: str | None, records: Iterable[tuple[int, list[CellValue]]]
) -> Sheet:
    """The sheet from ``(row number, cells)`` records in file order."""
    header: list[str] | None = None
    mapping: dict[int, str] = {}
    ignored: tuple[str, ...] = ()
    rows: list[RawRow] = []
    skipped: list[list[CellValue]] = []
    for number, values in records:
        if not any(cell_text(v) for v in values) or _is_comment(values):
            continue
        if header is None:
            # Sheets exported from property systems often start with a title row
            # ("幸福小区住户登记表"); the header is the first row naming columns.
            if not _looks_like_header(values) and len(skipped) < MAX_TITLE_ROWS:
                skipped.append(values)
                continue
            header = [cell_text(v) for v in (values if _looks_like_header(values) else skipped[0])]
            mapping, ignored = map_headers(header)
            continue
        if len(rows) >= MAX_ROWS:
            raise InputError(f"more than {MAX_ROWS} rows; split the file")
        cells = {key: values[i] for i, key in mapping.items() if i < len(values)}
        rows.append(RawRow(number=number, cells=cells))
    if header is None:
        if skipped:
            map_headers([cell_text(v) for v in skipped[0]])  # raises: names what is missing
        raise InputError(f"{source}: the file is empty (no header row)")
    if not rows:
        raise InputError(f"{source}: the file has a header but no rows")
    columns = {key: header[i] for i, key in mapping.items()}
    return Sheet(source, encoding, columns, tuple(rows), ignored)


def read_csv_bytes(data: bytes, source: str = "<csv>") -> Sheet:
    """Parse CSV bytes (see :func:`decode_csv_bytes` for the encodings)."""
    text, encoding = decode_csv_bytes(data)
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(text))
        records: list[list[CellValue]] = [list(r) for r in reader]
    except csv.Error as exc:
        raise InputError(f"{source}: not a valid CSV file ({exc})") from None
    return _build(source, encoding, enumerate(records, start=1))


# What openpyxl and the XML parser beneath it raise on a damaged or hostile workbook:
# expat's ParseError (a SyntaxError) for malformed XML, an external entity (XXE) or
# entity expansion past its amplification limit (billion laughs); ValueError,
# TypeError and KeyError for parts that parse but make no sense; zlib/zip errors
# for a damaged archive.
_XLSX_ERRORS = (
    SyntaxError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OSError,
    EOFError,
    zlib.error,
    zipfile.BadZipFile,
)


def _unreadable(path: Path, exc: BaseException) -> InputError:
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return InputError(f"{path}: not a readable XLSX workbook ({detail})")


def _check_xlsx_archive(path: Path) -> None:
    """Refuse a workbook whose parts would inflate past the cap, before parsing any."""
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None
    if total > MAX_XLSX_INFLATED_BYTES:
        raise InputError(
            f"{path}: the workbook would inflate to {total // (1024 * 1024)} MiB, more than "
            f"{MAX_XLSX_INFLATED_BYTES // (1024 * 1024)} MiB; split the file"
        )


def _guarded(path: Path, rows: Iterator[tuple[CellValue, ...]]) -> Iterator[tuple[CellValue, ...]]:
    """openpyxl parses the sheet XML lazily: its errors surface here, row by row."""
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except _XLSX_ERRORS as exc:
            raise _unreadable(path, exc) from None
        yield row


def _xlsx_records(path: Path, sheet: Any) -> Iterator[tuple[int, list[CellValue]]]:
    """Rows of a read-only worksheet, numbered as Excel does, only as wide as the header.

    Two passes over the sheet XML: up to the header row at most
    :data:`MAX_HEADER_COLUMNS` wide, then the rows below it only as wide as the
    widest row seen so far (the header). Stray cells far right or far below
    (a dimension of A1:XFD1048576) cost nothing but the XML that holds them.
    """
    number = 0
    width = 0
    seen = 0  # non-blank, non-comment rows: the header is found within MAX_TITLE_ROWS + 1
    for values in _guarded(path, sheet.iter_rows(values_only=True, max_col=MAX_HEADER_COLUMNS)):
        number += 1
        if number > MAX_SHEET_ROWS:
            break
        if values.count(None) == len(values):
            cells: list[CellValue] = []  # a blank row or a gap: no per-cell work
        else:
            used = [i for i, v in enumerate(values) if cell_text(v)]
            cells = list(values[: used[-1] + 1]) if used else []
        yield number, cells
        if not cells or _is_comment(cells):
            continue
        width = max(width, len(cells))
        seen += 1
        if _looks_like_header(cells) or seen > MAX_TITLE_ROWS:
            break
    else:
        return  # the sheet ended before any header (_build says what is missing)
    if number <= MAX_SHEET_ROWS:
        body = sheet.iter_rows(min_row=number + 1, max_col=width, values_only=True)
        for values in _guarded(path, body):
            number += 1
            if number > MAX_SHEET_ROWS:
                break
            yield number, list(values)
        else:
            return
    raise InputError(
        f"{path}: the sheet goes on past row {MAX_SHEET_ROWS}; delete the cells far below "
        f"the data (Ctrl+End shows the last one) or split the file"
    )


def read_xlsx(path: Path) -> Sheet:
    """Read the first worksheet of an XLSX workbook (values, not formulas).

    Refused as a whole (:class:`InputError`), before any row is read: an archive
    that would inflate past :data:`MAX_XLSX_INFLATED_BYTES`, a sheet whose
    dimension spans more than :data:`MAX_SHEET_ROWS` rows, and any XML the parser
    refuses (entity bombs, external entities, malformed parts).
    """
    from openpyxl import load_workbook

    _check_xlsx_archive(path)
    # Our own handle: openpyxl leaves the file it opened open when a part fails to parse.
    with path.open("rb") as handle:
        try:
            workbook = load_workbook(handle, read_only=True, data_only=True)
        except _XLSX_ERRORS as exc:
            raise _unreadable(path, exc) from None
        return _read_first_sheet(path, workbook)


def _read_first_sheet(path: Path, workbook: Any) -> Sheet:
    """The first sheet of an open workbook, refused before reading if it is too long."""
    try:
        try:
            sheet = workbook.worksheets[0]
            declared = sheet.max_row
        except _XLSX_ERRORS as exc:
            raise _unreadable(path, exc) from None
        if declared is not None and declared > MAX_SHEET_ROWS:
            raise InputError(
                f"{path}: the sheet's dimension spans {declared} rows, more than "
                f"{MAX_SHEET_ROWS}; delete the cells far below the data (Ctrl+End shows "
                f"the last one) or split the file"
            )
        # The dimension is optional and may understate: read what the XML holds, and
        # let _xlsx_records count rows itself.
        sheet.reset_dimensions()
        return _build(str(path), None, _xlsx_records(path, sheet))
    finally:
        workbook.close()


def read_registry(path: Path) -> Sheet:
    """Read a registry file by extension (.csv/.txt/.tsv or .xlsx/.xlsm)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        sheet = read_xlsx(path)
    elif suffix in (".csv", ".txt", ".tsv"):
        sheet = read_csv_bytes(path.read_bytes(), str(path))
    elif suffix == ".xls":
        raise InputError(f"{path}: old .xls workbooks are not supported; save as .xlsx or CSV")
    else:
        raise InputError(f"{path}: unknown file type {suffix!r}; use .csv or .xlsx")
    if sheet.ignored_headers:
        log.warning("ignoring unknown columns: %s", ", ".join(sheet.ignored_headers))
    return sheet
