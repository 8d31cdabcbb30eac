"""Registered occupants and their face templates."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from sqlalchemy import (
    Date,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow
from server.occupants.enums import OccupantStatus

OccupantRole = Literal["owner", "tenant", "family"]


class Occupant(Base):
    """A person on a site's register.

    ID numbers are never stored: ``id_hash`` is a keyed HMAC (for matching a
    re-import) and ``id_last4`` is what a manager may see.
    """

    __tablename__ = "occupants"
    __table_args__ = (
        UniqueConstraint("site_id", "external_id"),
        Index("ix_occupants_site_id_unit_id", "site_id", "unit_id"),
        # SQLite: AUTOINCREMENT, so an erased occupant's id (and the audit events
        # that name it) never passes to the next person enrolled.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default="tenant")
    phone: Mapped[str | None] = mapped_column(String(40))
    id_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    id_last4: Mapped[str | None] = mapped_column(String(4))
    external_id: Mapped[str | None] = mapped_column(String(100))
    move_in: Mapped[date | None] = mapped_column(Date)
    move_out: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default=OccupantStatus.ACTIVE)
    # Consent / notice record (人脸识别 notice and consent; GDPR Art. 9).
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consent_ref: Mapped[str | None] = mapped_column(String(300))
    notice_given_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class FaceTemplate(Base):
    """One enrolled face embedding of an occupant (float32 bytes + model id)."""

    __tablename__ = "face_templates"
    __table_args__ = (
        Index("ix_face_templates_site_id_model_id", "site_id", "model_id"),
        # SQLite: AUTOINCREMENT, so an erased row's id never names a later one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    occupant_id: Mapped[int] = mapped_column(
        ForeignKey("occupants.id", ondelete="CASCADE"), index=True
    )
    # Denormalised so a site's gallery is one indexed query.
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    model_id: Mapped[str] = mapped_column(String(128))
    quality: Mapped[float] = mapped_column(Float, default=0.0)
    source: Mapped[str] = mapped_column(String(300), default="")
    # The face this template was made from, as a small aligned JPEG "chip" for the
    # desk check (server/occupants/chips.py): AES-GCM sealed like the crops under
    # key ``chip_key_id``; null when the site keeps photos in the office only.
    # It lives and dies with its template (deletion, subject erase, occupant deletion).
    chip: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    chip_key_id: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
