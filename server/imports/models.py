"""A register import started from the web: its options, progress and reports.

The uploaded files are never stored here (nor anywhere on disk): the job's
runner keeps the read rows and the enrolled faces in memory between the dry
run and the apply (:mod:`server.imports.runner`). This row is what every
server process and the page's progress poll can read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow
from server.imports.enums import ImportStatus


class ImportJob(Base):
    __tablename__ = "import_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(300))
    """The register file's name as uploaded."""
    photos_name: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default=ImportStatus.CHECKING)
    partial: Mapped[bool] = mapped_column(Boolean, default=False)
    sync: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_same_face: Mapped[bool] = mapped_column(Boolean, default=False)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    """Photos read so far / to read (the dry run's slow part: enrolment)."""
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 of the register as the dry run saw it and of the uploaded files: the
    apply refuses unless the register it would write to hashes the same."""
    dry_report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """Who the dry run's plan adds, changes and moves out (``add``/``change``: [row, name,
    unit]; ``move_out``: [name, unit]), at most :data:`~server.imports.service.MAX_LISTED`
    each, with the full counts under ``n_*``: the report counts, this names."""
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The apply's report (what was written)."""
    gallery_version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When the dry run's data (rows, faces) is dropped if not applied."""
