"""The audit log's hash chain: canonical form, hashing and verification.

Each :class:`~server.audit.models.AuditEvent` stores ``prev_hash`` (the hash
of the event before it, by id; :data:`GENESIS` for the first) and ``hash`` =
SHA-256 of the event's canonical JSON including ``prev_hash``. Editing a
stored event, deleting one or inserting one out of order breaks a link that
:func:`verify_chain` reports. This makes tampering *evident*, not impossible:
someone who can rewrite the whole table can recompute the chain, so keep the
last hash somewhere else too (``lintel-server audit verify --json`` prints it;
ship it to a log collector or a printout).

The migration ``0003_privacy`` carries a copy of :func:`canonical` to backfill
events written before the chain existed; the two must stay identical.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.models import AuditEvent

GENESIS = "0" * 64


def canonical(
    *,
    event_id: int,
    at: datetime,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | None,
    site_id: int | None,
    detail: Any,
    prev_hash: str,
) -> bytes:
    """The bytes that are hashed: sorted-key compact JSON, UTC time with microseconds."""
    if at.tzinfo is None:  # SQLite hands back naive UTC
        at = at.replace(tzinfo=UTC)
    doc = {
        "id": int(event_id),
        "at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "site_id": site_id,
        "detail": detail,
        "prev": prev_hash,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(event: AuditEvent, prev_hash: str) -> str:
    """Hex SHA-256 of ``event`` chained after ``prev_hash``."""
    return hashlib.sha256(
        canonical(
            event_id=event.id,
            at=event.at,
            actor=event.actor,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            site_id=event.site_id,
            detail=event.detail,
            prev_hash=prev_hash,
        )
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Result of :func:`verify_chain`.

    ``first_broken_id`` is the first event whose link does not hold (None when
    the chain is intact); ``reason`` says which check failed there.
    """

    ok: bool
    checked: int
    last_id: int | None
    last_hash: str | None
    first_broken_id: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``lintel-server audit verify --json``)."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "last_id": self.last_id,
            "last_hash": self.last_hash,
            "first_broken_id": self.first_broken_id,
            "reason": self.reason,
        }


def verify_chain(*, session: Session, batch: int = 2000) -> ChainReport:
    """Walk every audit event in id order and check each link; stops at the first break."""
    prev = GENESIS
    checked = 0
    last_id: int | None = None
    after = 0
    while True:
        rows = list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id).limit(batch)
            )
        )
        if not rows:
            break
        for event in rows:
            if event.prev_hash != prev:
                return ChainReport(
                    ok=False,
                    checked=checked,
                    last_id=last_id,
                    last_hash=prev,
                    first_broken_id=event.id,
                    reason="prev_hash does not match the event before it "
                    "(an event was deleted, inserted or reordered)",
                )
            if event.hash != event_hash(event, prev):
                return ChainReport(
                    ok=False,
                    checked=checked,
                    last_id=last_id,
                    last_hash=prev,
                    first_broken_id=event.id,
                    reason="hash does not match the event's content (the event was altered)",
                )
            prev = event.hash
            last_id = event.id
            checked += 1
        after = rows[-1].id
        # Verification reads the whole log: drop what was checked from the identity map.
        session.expunge_all()
    return ChainReport(ok=True, checked=checked, last_id=last_id, last_hash=prev)
