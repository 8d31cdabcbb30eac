"""Notification channels, the event outbox, deliveries and their attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow
from server.notify.enums import DeliveryStatus


class NotifyChannel(Base):
    """Where a site's events go: a webhook, a DingTalk or WeCom robot, or an e-mail address.

    ``secret_sealed`` is the webhook/DingTalk signing secret or the SMTP password,
    sealed with the crop key (AES-GCM, associated data ``notify-channel:<id>``);
    it is never shown again after ``notify add``. ``failing`` is set after
    ``consecutive_failures`` reaches the sender's threshold and cleared by the
    next success.
    """

    __tablename__ = "notify_channels"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(1000))
    events: Mapped[list[str]] = mapped_column(JSON)
    language: Mapped[str] = mapped_column(String(8), default="en")
    # Site-local "HH:MM"; both set or both empty. Events other than device alarms
    # created inside the window wait until it ends.
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    thumbnail: Mapped[bool] = mapped_column(Boolean, default=False)
    digest: Mapped[bool] = mapped_column(Boolean, default=False)
    digest_at: Mapped[str] = mapped_column(String(5), default="08:00")
    link_base: Mapped[str | None] = mapped_column(String(300))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secret_key_id: Mapped[str | None] = mapped_column(String(16))
    secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    failing: Mapped[bool] = mapped_column(Boolean, default=False)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NotifyEvent(Base):
    """One thing that happened, written in the transaction of its cause (the outbox).

    ``event_id`` (a UUID) is what receivers see and deduplicate on;
    ``dedupe_key`` makes "once per transition" events (a device going offline,
    a case escalated) impossible to write twice.
    """

    __tablename__ = "notify_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NotifyDelivery(Base):
    """One event to one channel: ``pending`` until ``sent`` (or ``failed`` after the last try).

    ``next_attempt_at`` is when the sender may take it next: after a quiet
    window, a backoff, or the lease of a sender that took it and may have died.
    """

    __tablename__ = "notify_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "channel_id"),
        Index("ix_notify_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("notify_events.id", ondelete="CASCADE"))
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("notify_channels.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    digest: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NotifyAttempt(Base):
    """One try at sending a delivery, with what the channel answered."""

    __tablename__ = "notify_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("notify_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    answer: Mapped[str] = mapped_column(Text, default="")


class NotifyDeviceState(Base):
    """Whether the worker last saw a device offline, so each transition is told once."""

    __tablename__ = "notify_device_states"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    offline: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
