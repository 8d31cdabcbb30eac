"""Admin API for privacy: the audit log, subject requests, retention and enrolment counts.

Every route here but one is for admins (a user API token with role
``admin``): anonymous or unknown tokens get 401, managers and viewers 403.
The exception is recording an occupant's consent/notice, which managers of
the occupant's site may do too. Every read of the log or of a person's data
and every change is itself audited (``audit.view``, ``audit.export``,
``subject.export``, ``subject.erase``, ``site.retention``,
``occupant.consent``), in the same transaction as its effect; the chain check
and the enrolment counts (no personal data) are not.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from server.audit import export
from server.audit.chain import verify_chain
from server.audit.service import record
from server.deps import AdminDep, ManagerDep, SessionDep
from server.privacy import counts, subject
from server.privacy.consent import set_consent
from server.privacy.retention import set_site_retention
from server.sites.service import resolve_site

router = APIRouter(tags=["privacy"])
# PostgreSQL refuses NUL characters in text parameters; refuse them as input (422), not a 500.
NO_NUL = r"^[^\x00]*$"
# Personal data: no proxy or browser cache keeps a copy.
NO_STORE = "no-store"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuditEventOut(_Out):
    id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str | None
    site_id: int | None
    detail: dict[str, Any] | None
    prev_hash: str | None
    hash: str | None


class ChainOut(_Out):
    ok: bool
    checked: int
    last_id: int | None
    last_hash: str | None
    first_broken_id: int | None
    reason: str | None


class TemplateCountOut(_Out):
    site_id: int
    site: str
    people_with_templates: int
    warning: str | None = Field(description="Set from 90,000 people (filing threshold 100,000).")


class RetentionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_retention_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    closed_case_retention_days: Annotated[int, Field(ge=0, le=3650)] | None = None
    moved_out_template_days: Annotated[int, Field(ge=0, le=3650)] | None = None


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    consent_at: datetime | None = Field(
        default=None, description="When consent was given; null: none (or withdrawn)."
    )
    consent_ref: Annotated[str, Field(max_length=300, pattern=NO_NUL)] | None = Field(
        default=None, description="E.g. the signed form's number."
    )
    notice_given_at: datetime | None = None


class ConsentOut(_Out):
    occupant_id: int
    consent_at: datetime | None
    consent_ref: str | None
    notice_given_at: datetime | None


class RetentionOut(_Out):
    site_id: int
    crop_retention_days: int
    closed_case_retention_days: int
    moved_out_template_days: int


def _filter(
    session: SessionDep,
    site: Annotated[str | None, Query(description="Site name or id.")] = None,
    actor: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    action: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    object_type: Annotated[str | None, Query(max_length=50, pattern=NO_NUL)] = None,
    object_id: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> export.AuditFilter:
    site_id = resolve_site(session=session, ref=site).id if site else None
    return export.AuditFilter(
        site_id=site_id,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        since=since,
        until=until,
        after_id=after_id,
    )


FilterDep = Annotated[export.AuditFilter, Depends(_filter)]


def _filter_detail(flt: export.AuditFilter) -> dict[str, Any]:
    return {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in asdict(flt).items()
        if v is not None
    }


@router.get("/audit", response_model=list[AuditEventOut], summary="Audit events (admins)")
def list_audit(
    session: SessionDep,
    caller: AdminDep,
    flt: FilterDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventOut]:
    """Events matching the filters, oldest first; page with ``after_id``."""
    events = export.list_events(session=session, flt=flt, limit=limit)
    out = [AuditEventOut.model_validate(e, from_attributes=True) for e in events]
    record(
        session=session,
        actor=caller.actor,
        action="audit.view",
        object_type="audit",
        detail={**_filter_detail(flt), "returned": len(out)},
    )
    session.commit()
    return out


@router.get(
    "/audit/export.csv",
    response_class=Response,
    summary="Audit events as CSV (admins; formula cells escaped)",
    responses={200: {"content": {"text/csv": {}}}},
)
def export_audit(
    session: SessionDep,
    caller: AdminDep,
    flt: FilterDep,
    limit: Annotated[int, Query(ge=1, le=200_000)] = 100_000,
) -> Response:
    """CSV of the matching events; the export itself is audited (before it is read)."""
    events = export.list_events(session=session, flt=flt, limit=limit)
    body = "".join(export.csv_lines(events))
    record(
        session=session,
        actor=caller.actor,
        action="audit.export",
        object_type="audit",
        detail={**_filter_detail(flt), "rows": len(events)},
    )
    session.commit()
    return Response(
        content=body.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="lintel-audit.csv"',
            "Cache-Control": NO_STORE,
        },
    )


@router.get("/audit/verify", response_model=ChainOut, summary="Check the audit hash chain")
def verify_audit(session: SessionDep, caller: AdminDep) -> ChainOut:
    """Walk the chain; reports the first event whose link does not hold."""
    report = verify_chain(session=session)
    return ChainOut.model_validate(report.as_dict())


@router.get("/subjects/{occupant_id}", summary="Everything held on one occupant (admins)")
def export_subject(
    occupant_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    caller: AdminDep,
    response: Response,
    include_biometrics: bool = False,
) -> dict[str, Any]:
    """A subject access export; raw embeddings only with ``include_biometrics``; audited."""
    response.headers["Cache-Control"] = NO_STORE
    out = subject.export_subject(
        session=session,
        occupant_id=occupant_id,
        actor=caller.actor,
        include_biometrics=include_biometrics,
    )
    session.commit()
    return out


@router.post("/subjects/{occupant_id}/erase", summary="Erase one occupant everywhere (admins)")
def erase_subject(
    occupant_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    caller: AdminDep,
) -> dict[str, int]:
    """Delete templates, face data and links of one occupant; edges drop them on next sync."""
    out = subject.erase_subject(session=session, occupant_id=occupant_id, actor=caller.actor)
    session.commit()
    return out


@router.get(
    "/privacy/enrolment-counts",
    response_model=list[TemplateCountOut],
    summary="People with face templates per site (filing threshold)",
)
def enrolment_counts(session: SessionDep, caller: AdminDep) -> list[TemplateCountOut]:
    """Distinct people with templates per site; a warning from 90,000."""
    return [
        TemplateCountOut.model_validate(c.as_dict())
        for c in counts.people_with_templates(session=session)
    ]


@router.put(
    "/sites/{site_id}/retention", response_model=RetentionOut, summary="Set a site's retention"
)
def set_retention(
    site_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: RetentionIn,
    session: SessionDep,
    caller: AdminDep,
) -> RetentionOut:
    """Change any of the site's retention periods (days); audited with old and new values."""
    site = set_site_retention(
        session=session,
        site_id=site_id,
        actor=caller.actor,
        **body.model_dump(exclude_none=True),
    )
    out = RetentionOut(
        site_id=site.id,
        crop_retention_days=site.crop_retention_days,
        closed_case_retention_days=site.closed_case_retention_days,
        moved_out_template_days=site.moved_out_template_days,
    )
    session.commit()
    return out


@router.put(
    "/occupants/{occupant_id}/consent",
    response_model=ConsentOut,
    summary="Record an occupant's consent and notice",
)
def put_consent(
    occupant_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: ConsentIn,
    session: SessionDep,
    caller: ManagerDep,
) -> ConsentOut:
    """Managers of the occupant's site and admins; other sites' occupants do not exist (404)."""
    occ = set_consent(
        session=session,
        occupant_id=occupant_id,
        actor=caller.actor,
        consent_at=body.consent_at,
        consent_ref=body.consent_ref,
        notice_given_at=body.notice_given_at,
        site_ids=caller.scope,
    )
    out = ConsentOut(
        occupant_id=occ.id,
        consent_at=occ.consent_at,
        consent_ref=occ.consent_ref,
        notice_given_at=occ.notice_given_at,
    )
    session.commit()
    return out
