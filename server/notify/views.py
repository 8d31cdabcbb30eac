"""What the web UI shows of notification channels (the devices page's section)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.notify.enums import DeliveryStatus
from server.notify.models import NotifyChannel, NotifyDelivery
from server.notify.service import list_channels, shown_url
from server.sites.models import Site


@dataclass(frozen=True)
class ChannelRow:
    """One channel as the page shows it: never its secret, nor its URL's query (a robot key)."""

    id: int
    site_name: str
    name: str
    kind: str
    url: str
    events: list[str]
    enabled: bool
    failing: bool
    pending: int
    last_success_at: datetime | None
    last_error: str | None


def channel_rows(
    *, session: Session, scope: set[int] | None, site_id: int | None = None
) -> list[ChannelRow]:
    """Channels of the sites in ``scope`` (all when None), optionally of one site."""
    ids = scope if site_id is None else {site_id} & (scope if scope is not None else {site_id})
    channels: list[NotifyChannel] = list_channels(session=session, site_ids=ids)
    if not channels:
        return []
    names: dict[int, str] = {i: n for i, n in session.execute(select(Site.id, Site.name))}
    pending: dict[int, int] = {
        channel_id: n
        for channel_id, n in session.execute(
            select(NotifyDelivery.channel_id, func.count())
            .where(NotifyDelivery.status == DeliveryStatus.PENDING)
            .group_by(NotifyDelivery.channel_id)
        )
    }
    return [
        ChannelRow(
            id=c.id,
            site_name=names.get(c.site_id, str(c.site_id)),
            name=c.name,
            kind=c.kind,
            url=shown_url(c.url),
            events=list(c.events),
            enabled=c.enabled,
            failing=c.failing,
            pending=pending.get(c.id, 0),
            last_success_at=c.last_success_at,
            last_error=c.last_error,
        )
        for c in channels
    ]
