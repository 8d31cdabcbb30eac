"""Cases (核查任务), their history, and the staff/courier whitelist."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.cases.enums import CaseStatus
from server.db import Base, UTCDateTime, utcnow

# A cluster never has two cases that are not closed: enforced by the database.
_NOT_CLOSED = text("status != 'closed'")


class Case(Base):
    """A cluster that crossed the recurrence rule; a manager's to-do item."""

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_site_id_status", "site_id", "status"),
        Index(
            "uq_cases_cluster_id_not_closed",
            "cluster_id",
            unique=True,
            sqlite_where=_NOT_CLOSED,
            postgresql_where=_NOT_CLOSED,
        ),
        # SQLite: AUTOINCREMENT, so an erased row's id never names a later one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    cluster_id: Mapped[int] = mapped_column(
        ForeignKey("unknown_clusters.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=CaseStatus.OPEN)
    outcome: Mapped[str | None] = mapped_column(String(32))
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    # Event time of the sighting that met the rule (sightings may arrive late).
    triggered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assigned_to: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    notes: Mapped[str] = mapped_column(Text, default="")
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id", ondelete="SET NULL"))
    occupant_id: Mapped[int | None] = mapped_column(ForeignKey("occupants.id", ondelete="SET NULL"))
    # What closing changed, so a reopen can reverse it (server/cases/outcomes.py
    # reopen_case): the cluster's state before, templates and occupant created,
    # whitelist entry added, other clusters suppressed. Cleared by the reopen.
    undo: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CaseEvent(Base):
    """One step in a case's history: opened, assigned, a call or visit, closed..."""

    __tablename__ = "case_events"
    __table_args__ = (
        # SQLite: AUTOINCREMENT, so an erased row's id never names a later one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class WhitelistEntry(Base):
    """Staff or a courier of a site: clusters that match never become cases.

    ``embeddings`` are float32 rows (a cluster's centroid and exemplars, or
    embeddings given directly) made with ``model_id``.
    """

    __tablename__ = "whitelist_entries"
    __table_args__ = (
        Index("ix_whitelist_entries_site_id_active", "site_id", "active"),
        # SQLite: AUTOINCREMENT, so an erased row's id never names a later one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(200), default="")
    model_id: Mapped[str] = mapped_column(String(128))
    embeddings: Mapped[bytes] = mapped_column(LargeBinary)
    cluster_id: Mapped[int | None] = mapped_column(
        ForeignKey("unknown_clusters.id", ondelete="SET NULL")
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
