"""Edge devices and their cameras."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow


class Device(Base):
    """An edge box, bound to exactly one site; authenticates with a bearer token.

    Only the SHA-256 of the token is stored: the token has 256 bits of
    entropy, so a slow password hash would add latency and no safety.
    """

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    software_version: Mapped[str | None] = mapped_column(String(64))
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Sightings refused because they were dated in the future (the box's clock
    # is wrong); shown on the devices page so a manager can have it fixed.
    future_refused: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Camera(Base):
    """A camera of a device, named by the edge; optionally placed at an entrance."""

    __tablename__ = "cameras"
    __table_args__ = (UniqueConstraint("device_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    entrance_id: Mapped[int | None] = mapped_column(ForeignKey("entrances.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
