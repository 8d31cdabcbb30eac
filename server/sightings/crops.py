"""Storage seam for crops of unknown faces.

Everything that reads or writes crop bytes goes through this module, so that
encryption at rest and the retention TTL (a later issue) change one place.
Today the bytes live in the ``sighting_crops`` table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from server.db import utcnow
from server.sightings.models import Sighting, SightingCrop

JPEG_MAGIC = b"\xff\xd8\xff"


def put_many(
    *, session: Session, crops: Sequence[tuple[int, bytes]], expires_at: datetime | None
) -> None:
    """Store ``(sighting_id, jpeg)`` pairs in one statement."""
    if not crops:
        return
    now = utcnow()
    session.execute(
        insert(cast(Table, SightingCrop.__table__)),
        [
            {"sighting_id": sid, "jpeg": jpeg, "created_at": now, "expires_at": expires_at}
            for sid, jpeg in crops
        ],
    )


def get(*, session: Session, sighting_id: int) -> bytes | None:
    """The crop of a sighting, or None (none taken, or expired and deleted)."""
    return session.scalar(select(SightingCrop.jpeg).where(SightingCrop.sighting_id == sighting_id))


def delete_expired(*, session: Session, now: datetime | None = None) -> int:
    """Delete crops past their expiry; returns how many."""
    now = now or utcnow()
    ids = list(
        session.scalars(select(SightingCrop.sighting_id).where(SightingCrop.expires_at < now))
    )
    if not ids:
        return 0
    session.execute(delete(SightingCrop).where(SightingCrop.sighting_id.in_(ids)))
    session.execute(update(Sighting).where(Sighting.id.in_(ids)).values(has_crop=False))
    return len(ids)
