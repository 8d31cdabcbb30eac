"""``lintel-registry template``: an example registry file with every column.

CSV (UTF-8 with BOM so Excel shows the Chinese) documents each column in
``#`` comment lines above the header, which the reader skips; XLSX puts the
documentation on a second sheet and formats the ID and phone columns as text
so Excel does not turn 18-digit numbers into ``1.10105E+17``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

from registry.columns import COLUMNS
from registry.csvsafe import safe_cell
from registry.errors import InputError

Lang = Literal["zh", "en"]

_TEXT_COLUMNS = {"id_number", "phone", "external_id", "room"}


def _headers(lang: Lang) -> list[str]:
    return [c.zh if lang == "zh" else c.key for c in COLUMNS]


def _examples() -> list[list[str]]:
    return [[c.example[i] for c in COLUMNS] for i in (0, 1)]


def _doc_lines(lang: Lang) -> list[str]:
    lines = [
        "Lintel registry import template / 住户导入模板. Lines starting with # are ignored.",
        "Headers may be Chinese or English; required: name, role, an address (地址或房号, or "
        "楼栋+房号), and an ID number or external id.",
        "Re-importing updates rows in place (matched by external id, else ID number); an "
        "optional column left out of the file keeps the stored values, an empty cell clears.",
    ]
    for c in COLUMNS:
        doc = c.doc_zh if lang == "zh" else c.doc_en
        lines.append(f"{c.zh} / {c.key} (required: {c.required}): {doc}")
    return lines


def write_template(path: Path, lang: Lang = "zh") -> None:
    """Write the template as ``.csv`` or ``.xlsx`` (by extension); refuses to overwrite."""
    if path.exists():
        raise InputError(f"{path} already exists; choose another name or delete it")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle)
            for line in _doc_lines(lang):
                writer.writerow([f"# {line}"])
            writer.writerow([safe_cell(v) for v in _headers(lang)])
            # '+86 139...' is a formula to Excel; escaped, the reader drops the apostrophe.
            writer.writerows([safe_cell(v) for v in row] for row in _examples())
    elif suffix == ".xlsx":
        _write_xlsx(path, lang)
    else:
        raise InputError(f"{path}: the template can be .csv or .xlsx")


def _write_xlsx(path: Path, lang: Lang) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "住户 occupants"
    sheet.append(_headers(lang))
    for row in _examples():
        sheet.append(row)
    for index, column in enumerate(COLUMNS, start=1):
        letter = sheet.cell(row=1, column=index).column_letter
        sheet.column_dimensions[letter].width = 18
        if column.key in _TEXT_COLUMNS:
            for r in range(2, 1001):
                sheet.cell(row=r, column=index).number_format = "@"
    docs = workbook.create_sheet("说明 columns")
    docs.append(["列 column", "key", "必填 required", "说明", "description"])
    for c in COLUMNS:
        docs.append([c.zh, c.key, c.required, c.doc_zh, c.doc_en])
    workbook.save(path)
