"""Channels and the outbox: add/list/change channels, emit events with their deliveries.

Services flush; the caller owns the commit, so :func:`emit` writes the event
in the transaction of its cause (a rolled-back cause leaves no event).
"""

from __future__ import annotations

import re
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.cases.rules import site_zone
from server.clusters.models import ClusterSiteState
from server.db import utcnow
from server.notify.channels import KINDS
from server.notify.enums import DeliveryStatus
from server.notify.errors import ChannelInvalid, ChannelNotFound
from server.notify.messages import LANGUAGES
from server.notify.models import NotifyChannel, NotifyDelivery, NotifyEvent
from server.privacy.crypto import current_keyring

EVENT_KINDS = (
    "case.opened",
    "case.unassigned",
    "case.reopened",
    "device.offline",
    "device.online",
    "import.finished",
)
DEFAULT_EVENTS = (
    "case.opened",
    "case.reopened",
    "device.offline",
    "device.online",
    "import.finished",
)
"""What a new channel gets unless told otherwise; ``case.unassigned`` is the escalation,
meant for a second channel (the supervisor's), so it is opt-in."""

ALARMS = frozenset({"device.offline", "device.online"})
"""Kinds sent at once even in quiet hours and on digest channels (a box is down now)."""

THUMBNAIL_KINDS = frozenset({"webhook", "email"})
"""The only channel kinds that may carry a face thumbnail (opt-in): chat robots
forward to group chats whose members Lintel cannot know."""

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _aad(channel_id: int) -> bytes:
    return f"notify-channel:{channel_id}".encode()


def _check_hhmm(value: str | None, what: str) -> None:
    if value is not None and not _HHMM.match(value):
        raise ChannelInvalid(f"{what} must be HH:MM (24 h, site-local), not {value!r}")


def _check_url(kind: str, url: str) -> None:
    scheme = url.split(":", 1)[0].lower()
    wanted = ("smtp",) if kind == "email" else ("http", "https")
    if scheme not in wanted or "//" not in url:
        raise ChannelInvalid(
            f"a {kind} channel's URL starts with {' or '.join(w + '://' for w in wanted)}"
        )


def add_channel(
    *,
    session: Session,
    site_id: int,
    name: str,
    kind: str,
    url: str,
    secret: str | None = None,
    events: list[str] | None = None,
    language: str = "en",
    quiet_start: str | None = None,
    quiet_end: str | None = None,
    thumbnail: bool = False,
    digest: bool = False,
    digest_at: str = "08:00",
    link_base: str | None = None,
    options: dict[str, Any] | None = None,
) -> NotifyChannel:
    """Validate and add a channel; its secret is sealed at rest and never returned."""
    if kind not in KINDS:
        raise ChannelInvalid(f"unknown channel kind {kind!r}; one of {', '.join(KINDS)}")
    _check_url(kind, url)
    chosen = list(DEFAULT_EVENTS if events is None else events)
    unknown = sorted(set(chosen) - set(EVENT_KINDS))
    if unknown or not chosen:
        raise ChannelInvalid(
            f"events must be some of {', '.join(EVENT_KINDS)} (got {unknown or 'none'})"
        )
    if language not in LANGUAGES:
        raise ChannelInvalid(f"language must be one of {', '.join(LANGUAGES)}")
    if (quiet_start is None) != (quiet_end is None) or (quiet_start and quiet_start == quiet_end):
        raise ChannelInvalid("quiet hours need a start and a different end (e.g. 22:00 and 07:00)")
    _check_hhmm(quiet_start, "quiet start")
    _check_hhmm(quiet_end, "quiet end")
    _check_hhmm(digest_at, "digest time")
    if thumbnail and kind not in THUMBNAIL_KINDS:
        raise ChannelInvalid("a thumbnail can be sent to webhook and e-mail channels only")
    opts = dict(options or {})
    if kind == "email" and (not opts.get("from") or not opts.get("to")):
        raise ChannelInvalid("an e-mail channel needs a sender (--from) and recipients (--to)")
    if kind == "dingtalk" and not secret:
        raise ChannelInvalid("a DingTalk robot needs its signing secret (SEC...; 加签)")
    if session.scalar(
        select(NotifyChannel.id).where(NotifyChannel.site_id == site_id, NotifyChannel.name == name)
    ):
        raise ChannelInvalid(f"site already has a channel named {name!r}")
    channel = NotifyChannel(
        site_id=site_id,
        name=name,
        kind=kind,
        url=url,
        events=chosen,
        language=language,
        quiet_start=quiet_start,
        quiet_end=quiet_end,
        thumbnail=thumbnail,
        digest=digest,
        digest_at=digest_at,
        link_base=link_base,
        options=opts,
    )
    session.add(channel)
    session.flush()
    if secret:
        channel.secret_key_id, channel.secret_sealed = current_keyring().seal(
            secret.encode(), aad=_aad(channel.id)
        )
        session.flush()
    return channel


def channel_secret(channel: NotifyChannel) -> str | None:
    """The channel's secret in clear, for signing or logging in (never for display)."""
    if channel.secret_sealed is None or channel.secret_key_id is None:
        return None
    return (
        current_keyring()
        .open(channel.secret_key_id, channel.secret_sealed, aad=_aad(channel.id))
        .decode()
    )


def list_channels(*, session: Session, site_ids: set[int] | None = None) -> list[NotifyChannel]:
    """Channels (of ``site_ids`` when given), by site then name."""
    stmt = select(NotifyChannel).order_by(NotifyChannel.site_id, NotifyChannel.name)
    if site_ids is not None:
        stmt = stmt.where(NotifyChannel.site_id.in_(site_ids))
    return list(session.scalars(stmt))


def get_channel(*, session: Session, site_id: int, ref: str) -> NotifyChannel:
    """A site's channel by id or name."""
    stmt = select(NotifyChannel).where(NotifyChannel.site_id == site_id)
    stmt = (
        stmt.where(NotifyChannel.id == int(ref))
        if ref.isdigit()
        else stmt.where(NotifyChannel.name == ref)
    )
    channel = session.scalar(stmt)
    if channel is None:
        raise ChannelNotFound(f"no notification channel {ref!r} in site {site_id}")
    return channel


def set_enabled(*, session: Session, channel: NotifyChannel, enabled: bool) -> None:
    """Enable or disable a channel; enabling clears ``failing`` (an admin fixed it)."""
    channel.enabled = enabled
    if enabled:
        channel.failing = False
        channel.consecutive_failures = 0
    session.flush()


def remove_channel(*, session: Session, channel: NotifyChannel) -> None:
    """Delete a channel with its deliveries and attempts (the events stay for other channels)."""
    session.delete(channel)
    session.flush()


def pending_count(*, session: Session) -> int:
    """Deliveries not yet sent nor given up (the ``lintel_notify_pending`` gauge)."""
    return (
        session.scalar(select(func.count()).where(NotifyDelivery.status == DeliveryStatus.PENDING))
        or 0
    )


def shown_url(url: str) -> str:
    """The URL without its query or credentials (WeCom's key and DingTalk's token are secrets)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))


# -- emitting ------------------------------------------------------------------------------
def site_tz(session: Session, site_id: int) -> ZoneInfo:
    """The site's time zone (set with the clustering settings; Asia/Shanghai by default)."""
    name = session.scalar(
        select(ClusterSiteState.timezone).where(ClusterSiteState.site_id == site_id)
    )
    return site_zone(name)


def _hhmm(value: str) -> time:
    hour, minute = value.split(":")
    return time(int(hour), int(minute))


def _at_local(now: datetime, tz: ZoneInfo, hhmm: str, *, after: bool) -> datetime:
    """The next (``after``) local ``hhmm`` at or after ``now``, in UTC."""
    hour, minute = (int(p) for p in hhmm.split(":"))
    local = now.astimezone(tz)
    at = datetime.combine(local.date(), time(hour, minute), tzinfo=tz)
    if after and at <= local:
        at = datetime.combine(local.date() + timedelta(days=1), time(hour, minute), tzinfo=tz)
    return at.astimezone(now.tzinfo)


def quiet_until(channel: NotifyChannel, now: datetime, tz: ZoneInfo) -> datetime | None:
    """The end of the channel's quiet window if ``now`` falls in it, else None."""
    if not channel.quiet_start or not channel.quiet_end:
        return None
    t = now.astimezone(tz).time().replace(second=0, microsecond=0)
    start = _hhmm(channel.quiet_start)
    end = _hhmm(channel.quiet_end)
    inside = start <= t < end if start < end else (t >= start or t < end)
    return _at_local(now, tz, channel.quiet_end, after=True) if inside else None


@dataclass(frozen=True)
class Emitted:
    """An event written to the outbox and the number of deliveries it got."""

    event: NotifyEvent
    deliveries: int


def emit(
    *,
    session: Session,
    site_id: int,
    kind: str,
    data: dict[str, Any],
    dedupe_key: str | None = None,
    now: datetime | None = None,
) -> Emitted | None:
    """Write an event and one delivery per enabled channel of the site that wants it.

    Flushes only: the caller's commit makes the event real together with its
    cause. With ``dedupe_key``, an event already written under that key makes
    this a no-op (None): "once per transition" events.
    """
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown notification event kind {kind!r}")
    if dedupe_key is not None and session.scalar(
        select(NotifyEvent.id).where(NotifyEvent.dedupe_key == dedupe_key)
    ):
        return None
    wall = now or utcnow()
    event = NotifyEvent(
        event_id=str(uuid.uuid4()),
        site_id=site_id,
        kind=kind,
        data=data,
        dedupe_key=dedupe_key,
        created_at=wall,
    )
    session.add(event)
    session.flush()
    channels = [
        c
        for c in session.scalars(
            select(NotifyChannel).where(
                NotifyChannel.site_id == site_id, NotifyChannel.enabled.is_(True)
            )
        )
        if kind in c.events
    ]
    tz = site_tz(session, site_id) if channels else None
    for channel in channels:
        assert tz is not None
        due = wall
        digest = False
        if kind not in ALARMS:
            if channel.digest:
                digest = True
                due = _at_local(wall, tz, channel.digest_at, after=True)
            else:
                due = quiet_until(channel, wall, tz) or wall
        session.add(
            NotifyDelivery(
                event_id=event.id, channel_id=channel.id, next_attempt_at=due, digest=digest
            )
        )
    session.flush()
    return Emitted(event=event, deliveries=len(channels))


def emit_case_opened(
    *, session: Session, case: Any, cluster: Any, desk_check: bool = False
) -> Emitted | None:
    """``case.opened`` for a case the worker just opened (no names, no faces).

    ``desk_check``: the case names a registered occupant (the message then asks for a
    comparison of faces at the desk, not a visit), without saying whom."""
    return emit(
        session=session,
        site_id=case.site_id,
        kind="case.opened",
        data={
            "case_id": case.id,
            "cluster_id": cluster.id,
            "days": len(cluster.days),
            "night_entries": cluster.night_entries,
            "priority": round(float(case.priority), 3),
            "desk_check": desk_check,
        },
    )


def emit_case_reopened(*, session: Session, case: Any, actor: str) -> Emitted | None:
    """``case.reopened``: written by :func:`server.cases.service.reopen_case` with the reopen."""
    return emit(
        session=session,
        site_id=case.site_id,
        kind="case.reopened",
        data={"case_id": case.id, "cluster_id": case.cluster_id, "by": actor},
    )


def emit_import_finished(
    *, session: Session, site_id: int | None, counts: dict[str, Any]
) -> Emitted | None:
    """``import.finished`` with the import's counts (rows, created, updated, moved out, failed)."""
    if site_id is None:
        return None
    return emit(session=session, site_id=site_id, kind="import.finished", data=dict(counts))
