"""Writing audit events: the one function every audit write goes through.

:func:`record` appends an event to the hash chain (:mod:`server.audit.chain`)
inside the caller's transaction. Appends are serialised so two transactions
never chain onto the same predecessor: on PostgreSQL with a
transaction-scoped advisory lock (held until the caller commits or rolls
back), on SQLite by the INSERT itself, which takes the database's single
write lock before the predecessor is read.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from server.audit.chain import GENESIS, event_hash
from server.audit.models import AuditEvent
from server.db import utcnow

# Arbitrary constant naming the audit chain's advisory lock (server.db uses 7411093 for migrations).
AUDIT_LOCK_KEY = 7411094


def _normalise(detail: dict[str, Any] | None) -> dict[str, Any] | None:
    # Hash what the database will hand back: tuples become lists, int keys strings.
    if detail is None:
        return None
    out: dict[str, Any] = json.loads(json.dumps(detail, default=str))
    return out


def record(
    *,
    session: Session,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | int | None = None,
    site_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event to the session's transaction (flushed, not committed).

    On PostgreSQL this holds the audit lock until the transaction ends, so
    commit soon after (every route and CLI command does).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
    event = AuditEvent(
        at=utcnow(),
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        site_id=site_id,
        detail=_normalise(detail),
    )
    session.add(event)
    session.flush()  # the INSERT: an id, and on SQLite the write lock
    prev = session.scalar(
        select(AuditEvent.hash)
        .where(AuditEvent.id < event.id)
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    event.prev_hash = prev or GENESIS
    event.hash = event_hash(event, event.prev_hash)
    session.flush()
    return event
