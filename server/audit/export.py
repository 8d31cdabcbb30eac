"""Reading the audit log for admins: filters, and CSV that spreadsheets cannot execute."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from server.audit.models import AuditEvent

# A cell starting with one of these is a formula to Excel/LibreOffice/Sheets
# (OWASP "CSV injection"); tab and CR too, as some apps strip them first.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = (
    "id",
    "at",
    "actor",
    "action",
    "object_type",
    "object_id",
    "site_id",
    "detail",
    "hash",
)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which events to list; every field optional (None: no condition)."""

    site_id: int | None = None
    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_id: int | None = None


def query_events(flt: AuditFilter, *, limit: int | None = None) -> Select[Any]:
    """The SELECT for ``flt`` in id order (the chain's order)."""
    query = select(AuditEvent)
    if flt.site_id is not None:
        query = query.where(AuditEvent.site_id == flt.site_id)
    if flt.actor is not None:
        query = query.where(AuditEvent.actor == flt.actor)
    if flt.action is not None:
        query = query.where(AuditEvent.action == flt.action)
    if flt.object_type is not None:
        query = query.where(AuditEvent.object_type == flt.object_type)
    if flt.object_id is not None:
        query = query.where(AuditEvent.object_id == flt.object_id)
    if flt.since is not None:
        query = query.where(AuditEvent.at >= flt.since)
    if flt.until is not None:
        query = query.where(AuditEvent.at < flt.until)
    if flt.after_id is not None:
        query = query.where(AuditEvent.id > flt.after_id)
    query = query.order_by(AuditEvent.id)
    if limit is not None:
        query = query.limit(limit)
    return query


def list_events(*, session: Session, flt: AuditFilter, limit: int) -> list[AuditEvent]:
    """Up to ``limit`` events matching ``flt``, oldest first."""
    return list(session.scalars(query_events(flt, limit=limit)))


def safe_cell(value: object) -> str:
    """A CSV cell that a spreadsheet shows as text: formula starts get a leading apostrophe."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def event_row(event: AuditEvent) -> list[str]:
    """One event as escaped CSV cells in :data:`CSV_COLUMNS` order."""
    detail = (
        "" if event.detail is None else json.dumps(event.detail, sort_keys=True, ensure_ascii=False)
    )
    values: list[object] = [
        event.id,
        event.at.isoformat(),
        event.actor,
        event.action,
        event.object_type,
        event.object_id,
        event.site_id,
        detail,
        event.hash,
    ]
    return [safe_cell(v) for v in values]


def csv_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    """The header line, then one CSV line per event."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    yield buf.getvalue()
    for event in events:
        buf.seek(0)
        buf.truncate()
        writer.writerow(event_row(event))
        yield buf.getvalue()
