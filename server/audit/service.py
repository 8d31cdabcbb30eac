"""Writing audit events."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from server.audit.models import AuditEvent


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
    """Add one audit event to the session's transaction (flushed, not committed)."""
    event = AuditEvent(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        site_id=site_id,
        detail=detail,
    )
    session.add(event)
    session.flush()
    return event
