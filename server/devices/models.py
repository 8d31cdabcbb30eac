"""Edge devices and their cameras."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    true,
)
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
    # -- camera settings from the web (issue 17 D): bumped on every change of this
    # device's camera settings; the box reports the version it runs.
    config_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class Camera(Base):
    """A camera of a device, named by the edge; optionally placed at an entrance."""

    __tablename__ = "cameras"
    __table_args__ = (UniqueConstraint("device_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    entrance_id: Mapped[int | None] = mapped_column(ForeignKey("entrances.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # -- settings the box applies without a restart (issue 17 D); None: the box's own.
    analyse_fps: Mapped[float | None] = mapped_column(Float)
    # Region of interest [x1, y1, x2, y2], normalised 0..1 of the frame; None: all of it.
    roi: Mapped[list[float] | None] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class DeviceEnrolment(Base):
    """A one-time enrolment code: the box trades it for its own token (``lintel-edge enrol``).

    Only the SHA-256 of the code is stored; a code is single use and short-lived,
    so 40 random bits (8 base-32 characters) with attempts limited per address
    leave a guesser nothing.
    """

    __tablename__ = "device_enrolments"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(100))


class EnrolAttempt(Base):
    """A failed enrolment attempt, by client address (the rate limit's memory)."""

    __tablename__ = "device_enrol_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CameraSnapshot(Base):
    """The latest low-resolution frame of a camera (sealed like crops), for checking the
    angle and drawing the region of interest; one per camera, replaced, purged after the
    site's ``snapshot_retention_hours``."""

    __tablename__ = "camera_snapshots"

    camera_id: Mapped[int] = mapped_column(
        ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True
    )
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(16))
