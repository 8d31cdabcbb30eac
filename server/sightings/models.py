"""Sightings (one face track at one entrance) and the crops of unknown ones."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Sighting(Base):
    """One face track reported by an edge.

    ``uuid`` is the client-made id, unique per device: a batch the same device
    re-sends stores nothing twice, while another device's sighting that
    happens to carry the same id is that device's own (never dropped, and
    nothing tells it the id exists elsewhere). Known sightings carry no face;
    unknown ones carry the embedding here and a crop in :class:`SightingCrop`.
    ``processed`` and
    ``cluster_id`` belong to the clustering worker (no FK yet: its table
    comes in a later migration).
    """

    __tablename__ = "sightings"
    __table_args__ = (
        UniqueConstraint("device_id", "uuid"),
        Index("ix_sightings_site_id_processed", "site_id", "processed"),
        Index("ix_sightings_site_id_started_at", "site_id", "started_at"),
        # Retention runs on arrival time (server/privacy/purge.py), not the device's clock.
        Index("ix_sightings_site_id_received_at", "site_id", "received_at"),
        # SQLite: ids are never reused (AUTOINCREMENT), so an erased or purged
        # sighting's id never names another person's later one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    uuid: Mapped[uuid.UUID] = mapped_column(Uuid)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    entrance_id: Mapped[int | None] = mapped_column(ForeignKey("entrances.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(8))
    occupant_id: Mapped[int | None] = mapped_column(ForeignKey("occupants.id", ondelete="SET NULL"))
    similarity: Mapped[float | None] = mapped_column(Float)
    quality: Mapped[float] = mapped_column(Float)
    model_id: Mapped[str | None] = mapped_column(String(128))
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    has_crop: Mapped[bool] = mapped_column(Boolean, default=False)
    processed: Mapped[bool] = mapped_column(Boolean, default=False)
    cluster_id: Mapped[int | None] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SightingCrop(Base):
    """JPEG crop of an unknown sighting, kept apart so sighting scans stay small.

    Reached only through :mod:`server.sightings.crops` (the storage seam that
    encryption and retention will change).
    """

    __tablename__ = "sighting_crops"

    sighting_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("sightings.id", ondelete="CASCADE"), primary_key=True
    )
    # AES-GCM ciphertext (nonce + sealed JPEG) under key ``key_id``
    # (server/privacy/crypto.py); a null key_id marks a plaintext crop stored
    # before encryption existed (``lintel-server crops rotate-key`` seals it).
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
