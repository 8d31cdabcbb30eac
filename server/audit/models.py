"""Audit log: who did what to which object (and who looked at biometric data)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    """One audited action. ``actor`` is e.g. ``cli``, ``user:3`` or ``device:7``.

    Append-only and hash-chained: ``hash`` is SHA-256 over the event's
    canonical JSON and ``prev_hash`` (the hash of the event before it, by id),
    so changing, deleting or reordering a stored event breaks every link after
    it (:func:`server.audit.chain.verify_chain`). Written only through
    :func:`server.audit.service.record`, which fills both.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_site_id_at", "site_id", "at"),
        # The login limits count recent failures (server/web/session.py).
        Index("ix_audit_events_action_at", "action", "at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str] = mapped_column(String(50))
    object_id: Mapped[str | None] = mapped_column(String(100))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="SET NULL"))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Null only between the INSERT and the UPDATE inside record() (one flush apart).
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))
