"""Row validation: raw cells -> :class:`OccupantRecord`, or row issues.

Every cell of every row is checked, so the report lists all problems in one
pass. Cross-row checks catch the same person (external id or ID number) or the
same photo twice in one file. The plain ID number is hashed here and dropped.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from registry.address import UnitAddress, address_from_parts, parse_address
from registry.errors import FieldError
from registry.fields import (
    Role,
    normalise_date,
    normalise_external_id,
    normalise_name,
    normalise_phone,
    normalise_role,
)
from registry.idnumber import ProtectedId, normalise_id, protect_id
from registry.reader import RawRow, Sheet
from registry.report import RowIssue

T = TypeVar("T")

MAX_PHOTOS = 3
"""Photos one row may name. Several help: with one registry photo, residents who look
unlike it at the door become cases (55 resident cases in 100 simulated sites; 1 with
two photos, bench/attribution_limits.py --enrol-photos 2), and FNIR fell from 0.36%
(1 photo) to 0.06% (3 photos, max over templates; bench/accuracy.py)."""
# ";" and its full-width form (a Chinese IME types "；") and "|".
_PHOTO_SEPARATORS = re.compile(r"[;；|]")


def split_photos(cell: str) -> tuple[str, ...]:
    """The file names of a photo cell: split on ``;``, ``；`` or ``|``; blanks dropped."""
    return tuple(part.strip() for part in _PHOTO_SEPARATORS.split(cell) if part.strip())


@dataclass(frozen=True, slots=True)
class OccupantRecord:
    """One valid row, normalised; holds no plain ID number."""

    row: int
    name: str
    unit: UnitAddress
    role: Role
    protected_id: ProtectedId | None
    phone: str | None
    move_in: date | None
    photo: str | None
    """The photo cell as written (for messages); :attr:`photos` are its file names."""
    external_id: str | None
    photos: tuple[str, ...] = ()
    """The file names in the photo cell (1 to :data:`MAX_PHOTOS`), each its own template."""


@dataclass(frozen=True, slots=True)
class Validated:
    records: tuple[OccupantRecord, ...]
    issues: tuple[RowIssue, ...]
    identities: Mapping[int, tuple[str | None, str | None]]
    """Row -> (external id, id hash) of *every* row whose identity could be read,
    failed rows included, so ``--sync`` never moves out someone whose row failed."""


class _RowChecker:
    def __init__(self, row: RawRow, headers: Mapping[str, str]) -> None:
        self.row = row
        self.headers = headers
        self.issues: list[RowIssue] = []
        self.name = ""

    def header(self, key: str) -> str:
        return self.headers.get(key, key)

    def issue(self, key: str, reason: str, message: str) -> None:
        self.issues.append(RowIssue(self.row.number, self.header(key), reason, message, self.name))

    def field(self, key: str, parse: Callable[[str], T], reason: str) -> T | None:
        text = self.row.text(key)
        if not text:
            return None
        try:
            return parse(text)
        except FieldError as exc:
            self.issue(key, reason, str(exc))
            return None


def _address(check: _RowChecker) -> UnitAddress | None:
    row = check.row
    text = row.text("address")
    split = [row.text(k) for k in ("building", "entrance", "room")]
    parsed: UnitAddress | None = None
    if text:
        try:
            parsed = parse_address(text)
        except FieldError as exc:
            check.issue("address", "bad_address", str(exc))
            return None
    if any(split):
        try:
            from_parts = address_from_parts(*[s or None for s in split])
        except FieldError as exc:
            check.issue("room" if split[0] else "building", "bad_address", str(exc))
            return None
        if parsed is not None and parsed != from_parts:
            check.issue(
                "address",
                "bad_address",
                f"address {text!r} ({parsed.key}) disagrees with the building/entrance/room "
                f"columns ({from_parts.key})",
            )
            return None
        return from_parts
    if parsed is None:
        check.issue("address", "missing", "the address is empty")
    return parsed


def validate_row(
    row: RawRow, headers: Mapping[str, str], secret: bytes
) -> tuple[OccupantRecord | None, list[RowIssue], tuple[str | None, str | None]]:
    """Check one row: ``(record or None, issues, (external id, id hash))``."""
    check = _RowChecker(row, headers)
    name_text = row.text("name")
    name: str | None = None
    if not name_text:
        check.issue("name", "missing", "the name is empty")
    else:
        name = check.field("name", normalise_name, "bad_name")
        check.name = name or ""
    external_id = check.field("external_id", normalise_external_id, "bad_external_id") or None
    protected: ProtectedId | None = None
    id_text = row.text("id_number")
    if id_text:
        try:
            protected = protect_id(normalise_id(id_text), secret)
        except FieldError as exc:
            check.issue("id_number", "bad_id_number", str(exc))
    elif external_id is None and not check.issues:
        check.issue("id_number", "missing", "needs an ID number or an external id")
    role: Role | None = None
    if not row.text("role"):
        check.issue("role", "missing", "the role is empty (业主/租户/家属)")
    else:
        role = check.field("role", normalise_role, "bad_role")
    phone = check.field("phone", normalise_phone, "bad_phone")
    move_in = _move_in(check)
    unit = _address(check)
    photo = row.text("photo") or None
    photos = _photos(check, photo)
    identity = (external_id, protected.id_hash if protected else None)
    if check.issues or name is None or role is None or unit is None:
        return None, check.issues, identity
    record = OccupantRecord(
        row=row.number,
        name=name,
        unit=unit,
        role=role,
        protected_id=protected,
        phone=phone,
        move_in=move_in,
        photo=photo,
        external_id=external_id,
        photos=photos,
    )
    return record, [], identity


def _photos(check: _RowChecker, cell: str | None) -> tuple[str, ...]:
    """The row's photo file names; more than :data:`MAX_PHOTOS` or one twice is an issue."""
    names = split_photos(cell or "")
    if len(names) > MAX_PHOTOS:
        check.issue(
            "photo",
            "too_many_photos",
            f"{len(names)} photos; a row may name at most {MAX_PHOTOS} (separated by ';')",
        )
        return ()
    seen: dict[str, str] = {}
    for name in names:
        key = name.casefold()
        if key in seen:
            check.issue("photo", "duplicate", f"photo {name!r} is named twice in this row")
            return ()
        seen[key] = name
    return names


def _move_in(check: _RowChecker) -> date | None:
    value = check.row.cells.get("move_in")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, str | int | float | date):
            return normalise_date(value)
    except FieldError as exc:
        check.issue("move_in", "bad_date", str(exc))
    return None


def validate_sheet(sheet: Sheet, secret: bytes) -> Validated:
    """Validate every row, then the cross-row rules (no person or photo twice)."""
    records: list[OccupantRecord] = []
    issues: list[RowIssue] = []
    identities: dict[int, tuple[str | None, str | None]] = {}
    for row in sheet.rows:
        record, row_issues, identity = validate_row(row, sheet.columns, secret)
        identities[row.number] = identity
        issues.extend(row_issues)
        if record is not None:
            records.append(record)
    bad = _duplicates(records, sheet.columns)
    issues.extend(bad)
    bad_rows = {i.row for i in bad}
    good = tuple(r for r in records if r.row not in bad_rows)
    return Validated(records=good, issues=tuple(issues), identities=identities)


def _duplicates(records: Sequence[OccupantRecord], headers: Mapping[str, str]) -> list[RowIssue]:
    keys: dict[tuple[str, str], list[OccupantRecord]] = defaultdict(list)
    for r in records:
        if r.external_id:
            keys[("external_id", r.external_id)].append(r)
        if r.protected_id:
            keys[("id_number", r.protected_id.id_hash)].append(r)
        for name in r.photos:
            keys[("photo", name.casefold())].append(r)
    issues: list[RowIssue] = []
    what = {"external_id": "external id", "id_number": "ID number", "photo": "photo"}
    for (column, _value), group in keys.items():
        if len(group) < 2:
            continue
        rows = [r.row for r in group]
        for r in group:
            others = ", ".join(str(n) for n in rows if n != r.row)
            issues.append(
                RowIssue(
                    r.row,
                    headers.get(column, column),
                    "duplicate",
                    f"the same {what[column]} is also on row {others}",
                    r.name,
                )
            )
    return issues
