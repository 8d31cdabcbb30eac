"""Sites and their physical structure: buildings, entrances, units."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint, false, true
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow


class Site(Base):
    """A residential estate (小区/公寓); the unit of data separation.

    ``gallery_version`` is bumped on every change to the set of templates the
    site's edges should hold; it is the gallery's ETag.
    """

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    model_id: Mapped[str] = mapped_column(String(128))
    gallery_version: Mapped[int] = mapped_column(Integer, default=1)
    crop_retention_days: Mapped[int] = mapped_column(Integer, default=30)
    # -- retention (engineer P, server/privacy/purge.py): unknown crops/embeddings use
    # crop_retention_days; a closed case keeps its outcome but loses the face data
    # this many days after closing; a moved-out occupant's templates are deleted
    # this many days after the move-out (0: at the next purge).
    closed_case_retention_days: Mapped[int] = mapped_column(Integer, default=30)
    moved_out_template_days: Mapped[int] = mapped_column(Integer, default=0)
    # Keep a small face chip of each registry photo and case-made template on the
    # server for the desk check (False: photos stay in the office; chips are dropped).
    registry_chips: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Camera snapshots (issue 17 D): off unless the site opts in; kept this many hours.
    snapshots: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    snapshot_retention_hours: Mapped[int] = mapped_column(Integer, default=24, server_default="24")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Building(Base):
    """A building (幢) of a site."""

    __tablename__ = "buildings"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))


class Entrance(Base):
    """A door people walk through (单元门/出入口); cameras watch entrances."""

    __tablename__ = "entrances"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(100))


class Unit(Base):
    """A dwelling (户). ``address_key`` is the normalised standard address, unique per site."""

    __tablename__ = "units"
    __table_args__ = (UniqueConstraint("site_id", "address_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id", ondelete="SET NULL"))
    address_key: Mapped[str] = mapped_column(String(100))
    address: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
