"""Storage seam for crops of unknown faces.

Everything that reads or writes crop bytes goes through this module. Crops
are sealed with AES-GCM before they reach the ``sighting_crops`` table
(:mod:`server.privacy.crypto`; ``key_id`` names the key, null marks a crop
stored in plaintext before encryption existed). Retention is
:mod:`server.privacy.purge`'s job (:func:`server.privacy.purge.delete_expired`
is its crop half).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from server.db import utcnow
from server.privacy.crypto import CropKeyring, current_keyring
from server.sightings.models import Sighting, SightingCrop

JPEG_MAGIC = b"\xff\xd8\xff"


def _aad(sighting_id: int) -> bytes:
    # Binds a ciphertext to its row: copied onto another sighting, it does not open.
    return f"sighting:{sighting_id}".encode()


def put_many(
    *,
    session: Session,
    crops: Sequence[tuple[int, bytes]],
    expires_at: datetime | None,
    keyring: CropKeyring | None = None,
) -> None:
    """Seal and store ``(sighting_id, jpeg)`` pairs in one statement."""
    if not crops:
        return
    ring = keyring or current_keyring()
    now = utcnow()
    rows = []
    for sid, jpeg in crops:
        key_id, blob = ring.seal(jpeg, aad=_aad(sid))
        rows.append(
            {
                "sighting_id": sid,
                "jpeg": blob,
                "key_id": key_id,
                "created_at": now,
                "expires_at": expires_at,
            }
        )
    session.execute(insert(cast(Table, SightingCrop.__table__)), rows)


def get(*, session: Session, sighting_id: int, keyring: CropKeyring | None = None) -> bytes | None:
    """The crop of a sighting, or None (none taken, or expired and deleted).

    Raises :class:`server.privacy.errors.CropKeyError` when the crop's key is
    not configured or the stored bytes do not open.
    """
    row = session.execute(
        select(SightingCrop.jpeg, SightingCrop.key_id).where(
            SightingCrop.sighting_id == sighting_id
        )
    ).first()
    if row is None:
        return None
    if row.key_id is None:
        return bytes(row.jpeg)
    return (keyring or current_keyring()).open(row.key_id, bytes(row.jpeg), aad=_aad(sighting_id))


def delete_many(*, session: Session, sighting_ids: Sequence[int]) -> int:
    """Delete the crops of these sightings (and clear ``has_crop``); returns how many."""
    ids = sorted(set(sighting_ids))
    if not ids:
        return 0
    deleted = 0
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        result = session.execute(delete(SightingCrop).where(SightingCrop.sighting_id.in_(chunk)))
        deleted += int(getattr(result, "rowcount", 0) or 0)
        session.execute(update(Sighting).where(Sighting.id.in_(chunk)).values(has_crop=False))
    return deleted


def reseal(
    *, session: Session, keyring: CropKeyring, batch: int = 200, opener: CropKeyring | None = None
) -> int:
    """Re-encrypt every crop not sealed with ``keyring``'s active key; returns how many.

    ``opener`` opens the old crops (default: ``keyring``). Works in id order,
    ``batch`` rows per statement, all in the caller's transaction.
    """
    opener = opener or keyring
    done = 0
    after = -1
    while True:
        rows = session.execute(
            select(SightingCrop.sighting_id, SightingCrop.jpeg, SightingCrop.key_id)
            .where(
                SightingCrop.sighting_id > after,
                (SightingCrop.key_id.is_(None)) | (SightingCrop.key_id != keyring.active_id),
            )
            .order_by(SightingCrop.sighting_id)
            .limit(batch)
        ).all()
        if not rows:
            return done
        for r in rows:
            plain = (
                bytes(r.jpeg)
                if r.key_id is None
                else opener.open(r.key_id, bytes(r.jpeg), aad=_aad(r.sighting_id))
            )
            key_id, blob = keyring.seal(plain, aad=_aad(r.sighting_id))
            session.execute(
                update(SightingCrop)
                .where(SightingCrop.sighting_id == r.sighting_id)
                .values(jpeg=blob, key_id=key_id)
            )
            done += 1
        after = rows[-1].sighting_id
