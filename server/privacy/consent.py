"""Occupants' consent and notice record (人脸识别 notice and consent; GDPR Art. 9(2)(a)).

The registry import keeps these fields as they are; this is where they are set.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from server.audit.service import record
from server.errors import InvalidInput, NotFound
from server.occupants.models import Occupant


def set_consent(
    *,
    session: Session,
    occupant_id: int,
    actor: str,
    consent_at: datetime | None,
    consent_ref: str | None,
    notice_given_at: datetime | None,
    site_ids: set[int] | None = None,
) -> Occupant:
    """Record when consent was given (and its reference, e.g. a form number) and when
    the notice was given; None clears a field (consent withdrawn). Audited."""
    occ = session.get(Occupant, occupant_id)
    if occ is None or (site_ids is not None and occ.site_id not in site_ids):
        raise NotFound(f"occupant {occupant_id} does not exist")
    for value in (consent_at, notice_given_at):
        if value is not None and value.tzinfo is None:
            raise InvalidInput("times need a time zone (e.g. 2026-11-28T10:00:00+08:00)")
    if consent_ref is not None and len(consent_ref) > 300:
        raise InvalidInput("consent_ref holds more than 300 characters")
    before = {
        "consent": occ.consent_at is not None,
        "notice": occ.notice_given_at is not None,
    }
    occ.consent_at = consent_at
    occ.consent_ref = consent_ref
    occ.notice_given_at = notice_given_at
    session.flush()
    record(
        session=session,
        actor=actor,
        action="occupant.consent",
        object_type="occupant",
        object_id=occ.id,
        site_id=occ.site_id,
        detail={
            "before": before,
            "consent": consent_at is not None,
            "notice": notice_given_at is not None,
        },
    )
    return occ
