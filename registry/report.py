"""The import report: every bad row, and the summary counts.

Printed to the terminal and, with ``--report FILE``, written as CSV (UTF-8
with BOM, so Excel opens it with the Chinese intact) or JSON, by extension.
Row numbers are those Excel shows; ID numbers never appear in a report.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from registry.csvsafe import safe_cell
from registry.errors import InputError


@dataclass(frozen=True, slots=True)
class RowIssue:
    """One problem with one row: ``reason`` is a stable code, ``message`` is for people."""

    row: int
    column: str
    reason: str
    message: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Summary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    moved_out: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did (or, with ``dry_run``, would do)."""

    source: str
    site: str
    rows: int = 0
    dry_run: bool = False
    partial: bool = False
    written: bool = False
    summary: Summary = Summary()
    issues: tuple[RowIssue, ...] = ()
    enrolled_photos: int = 0
    new_site: bool = False
    """The site did not exist before this import (it is created when written)."""
    unchanged_photos: int = 0
    """Photos the occupant already had a template of (not enrolled again)."""
    failed_photos: int = 0
    """Photos that could not be read or enrolled (each a row issue)."""
    warnings: tuple[RowIssue, ...] = ()
    """Rows imported as asked but worth a look: a usable but poor photo
    (reason ``poor_photo``). Not failures: they do not stop an import."""

    @property
    def failed_rows(self) -> int:
        return len({i.row for i in self.issues})

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "site": self.site,
            "rows": self.rows,
            "dry_run": self.dry_run,
            "partial": self.partial,
            "written": self.written,
            "enrolled_photos": self.enrolled_photos,
            "new_site": self.new_site,
            "unchanged_photos": self.unchanged_photos,
            "failed_photos": self.failed_photos,
            "summary": asdict(self.summary),
            "issues": [asdict(i) for i in sorted(self.issues, key=_order)],
            "warnings": [asdict(i) for i in sorted(self.warnings, key=_order)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportReport:
        """The report :meth:`to_dict` gave (a report the server kept as JSON)."""
        return cls(
            source=str(data["source"]),
            site=str(data["site"]),
            rows=int(data["rows"]),
            dry_run=bool(data["dry_run"]),
            partial=bool(data["partial"]),
            written=bool(data["written"]),
            summary=Summary(**data["summary"]),
            issues=tuple(RowIssue(**i) for i in data["issues"]),
            enrolled_photos=int(data["enrolled_photos"]),
            new_site=bool(data["new_site"]),
            unchanged_photos=int(data["unchanged_photos"]),
            failed_photos=int(data["failed_photos"]),
            warnings=tuple(RowIssue(**i) for i in data["warnings"]),
        )

    def render_text(self, max_issues: int = 200) -> str:
        """The human summary printed at the end of an import."""
        out = io.StringIO()
        issues = sorted(self.issues, key=_order)
        for issue in issues[:max_issues]:
            who = f" ({issue.name})" if issue.name else ""
            out.write(f"row {issue.row}{who}, {issue.column}: {issue.message} [{issue.reason}]\n")
        if len(issues) > max_issues:
            out.write(f"... and {len(issues) - max_issues} more (see --report FILE)\n")
        warnings = sorted(self.warnings, key=_order)
        for w in warnings[:max_issues]:
            who = f" ({w.name})" if w.name else ""
            out.write(f"warning: row {w.row}{who}, {w.column}: {w.message} [{w.reason}]\n")
        if len(warnings) > max_issues:
            out.write(f"... and {len(warnings) - max_issues} more warnings (see --report FILE)\n")
        s = self.summary
        mode = (
            "dry run, nothing written"
            if self.dry_run
            else ("written" if self.written else "nothing written")
        )
        new = " (new site)" if self.new_site else ""
        if self.written:
            counts = (
                f"created {s.created}, updated {s.updated}, unchanged {s.unchanged}, "
                f"moved out {s.moved_out}, failed {s.failed}"
            )
        else:  # the counts of an import that wrote nothing are what it would have done
            counts = (
                f"would create {s.created}, update {s.updated}, leave unchanged {s.unchanged}, "
                f"move out {s.moved_out}; failed {s.failed}"
            )
        out.write(
            f"{self.source} -> site {self.site!r}{new}: {self.rows} rows; {counts} ({mode})\n"
        )
        if self.enrolled_photos or self.unchanged_photos or self.failed_photos:
            out.write(
                f"photos: enrolled {self.enrolled_photos}, unchanged {self.unchanged_photos}, "
                f"failed {self.failed_photos}, warnings {len(self.warnings)}\n"
            )
        if issues and not self.written and not self.dry_run and not self.partial:
            out.write(
                "All or nothing: fix the rows above and import again, "
                "or use --partial to import the good rows.\n"
            )
        return out.getvalue()

    def to_csv(self) -> str:
        """The report as CSV text: failures by row, then warnings; every cell formula-escaped."""
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        writer.writerow(["row", "column", "reason", "message", "name"])
        for i in sorted(self.issues, key=_order):
            # Names, headers and messages come from the register: never formulas.
            writer.writerow([safe_cell(v) for v in (i.row, i.column, i.reason, i.message, i.name)])
        # Warnings after the failures; their reason (poor_photo) tells them apart.
        for i in sorted(self.warnings, key=_order):
            writer.writerow([safe_cell(v) for v in (i.row, i.column, i.reason, i.message, i.name)])
        return out.getvalue()

    def write(self, path: Path) -> None:
        """Write the report as ``.csv`` or ``.json`` (chosen by the extension)."""
        suffix = path.suffix.lower()
        if suffix == ".json":
            text = json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n"
            path.write_text(text, encoding="utf-8")
        elif suffix == ".csv":
            # UTF-8 with BOM so Excel shows the Chinese.
            path.write_text(self.to_csv(), encoding="utf-8-sig", newline="")
        else:
            raise InputError(f"--report {path}: use a .csv or .json file name")


def _order(issue: RowIssue) -> tuple[int, str]:
    return (issue.row, issue.column)
