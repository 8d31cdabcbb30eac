"""Cases API for managers: the queue, one case, and outcomes.

``GET /api/v1/cases?site=<id or name>&status=open`` lists a site's cases,
highest priority first; ``GET /api/v1/cases/{id}`` shows one with its history;
``POST /api/v1/cases/{id}/actions`` takes one action (a JSON object with an
``action`` field); ``POST /api/v1/whitelist`` whitelists staff/couriers by
face; ``GET``/``PUT /api/v1/case-settings?site=`` read and change a site's
timezone, case rule and clustering thresholds. Authentication: a user's
bearer token (``lintel-server user add``); viewers may read, managers and
admins may act, each only on their sites.
Routes are thin: the service does the work and the route commits once, so an
outcome, its effects and its audit records are one transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from edge.wire import decode_embedding
from server.audit.service import record
from server.cases import likely, outcomes, service, whitelist
from server.cases.enums import CaseStatus
from server.cases.models import Case
from server.cases.rules import DEFAULT_TIMEZONE, CaseRule
from server.clusters.algo import ClusterParams
from server.clusters.models import ClusterSiteState, UnknownCluster
from server.clusters.service import configure_site, site_config
from server.deps import CallerDep, ManagerDep, SessionDep
from server.embeddings import InvalidEmbedding
from server.errors import InvalidInput, NotFound
from server.occupants.chips import chips_enabled, set_registry_chips
from server.sightings.models import Sighting
from server.sites.service import resolve_site

router = APIRouter(tags=["cases"])


# -- schemas ------------------------------------------------------------------------------
class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaseOut(_Out):
    id: int
    site_id: int
    cluster_id: int
    status: str
    outcome: str | None
    priority: float
    triggered_at: datetime
    opened_at: datetime
    closed_at: datetime | None
    assigned_to: int | None
    days_seen: int
    days: list[str]
    night_entries: int
    entrances: list[int]
    first_seen: datetime
    last_seen: datetime
    sightings: int
    best_sighting_ids: list[int] = Field(description="Sightings whose crops show this person.")
    suppression: str | None
    occupant_id: int | None = Field(description="Matched or enrolled occupant, if any.")
    desk_check_occupant_id: int | None = Field(
        default=None,
        description=(
            "A desk check: the registered occupant this case names (compare the crops with "
            "their registry photo; settle with merge_into_occupant). None: it names nobody."
        ),
    )


class CaseEventOut(_Out):
    at: datetime
    actor: str
    kind: str
    detail: dict[str, object] | None


class CaseDetail(CaseOut):
    notes: str
    unit_id: int | None
    events: list[CaseEventOut]


def _out(case: Case, cluster: UnknownCluster, desk_check: int | None) -> dict[str, object]:
    return {
        "id": case.id,
        "site_id": case.site_id,
        "cluster_id": case.cluster_id,
        "status": case.status,
        "outcome": case.outcome,
        "priority": round(case.priority, 4),
        "triggered_at": case.triggered_at,
        "opened_at": case.opened_at,
        "closed_at": case.closed_at,
        "assigned_to": case.assigned_to,
        "days_seen": len(cluster.days),
        "days": cluster.days,
        "night_entries": cluster.night_entries,
        "entrances": cluster.entrances,
        "first_seen": cluster.first_seen,
        "last_seen": cluster.last_seen,
        "sightings": cluster.count,
        "best_sighting_ids": cluster.best_sightings,
        "suppression": cluster.suppression,
        "occupant_id": case.occupant_id or cluster.occupant_id,
        "desk_check_occupant_id": desk_check,
    }


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Assign(_Action):
    action: Literal["assign"]
    user_id: int | None = Field(default=None, description="Default: the caller.")


class Contact(_Action):
    action: Literal["call", "visit"]
    result: Annotated[str, Field(min_length=1, max_length=200)]
    notes: Annotated[str, Field(max_length=4000)] = ""


class Enrol(_Action):
    action: Literal["enrol"]
    unit_id: int
    name: Annotated[str, Field(min_length=1, max_length=200)]
    role: Literal["owner", "tenant", "family"] = "tenant"
    phone: Annotated[str, Field(max_length=40)] | None = None


class MergeIntoOccupant(_Action):
    action: Literal["merge_into_occupant"]
    occupant_id: int


class Whitelist(_Action):
    action: Literal["staff", "courier"]
    label: Annotated[str, Field(max_length=200)] = ""


class Close(_Action):
    action: Literal["visitor", "false_match", "moved_out"]
    notes: Annotated[str, Field(max_length=4000)] = ""


class Reopen(_Action):
    action: Literal["reopen"] = Field(
        description="Reopen a closed case and reverse its outcome's effects "
        "(managers within 7 days of closing, admins always)."
    )


CaseAction = Annotated[
    Assign | Contact | Enrol | MergeIntoOccupant | Whitelist | Close | Reopen,
    Field(discriminator="action"),
]


class WhitelistIn(_Action):
    site: Annotated[str, Field(min_length=1, description="Site name or id.")]
    kind: Literal["staff", "courier"]
    label: Annotated[str, Field(max_length=200)] = ""
    model_id: str | None = Field(default=None, description="Default: the site's model.")
    embeddings_b64: Annotated[list[str], Field(min_length=1, max_length=32)]


class WhitelistOut(_Out):
    id: int
    site_id: int
    kind: str
    label: str


# -- routes -------------------------------------------------------------------------------
def _detail(session: SessionDep, case: Case) -> CaseDetail:
    cluster = session.get(UnknownCluster, case.cluster_id)
    assert cluster is not None  # FK with cascade
    events = [
        CaseEventOut(at=e.at, actor=e.actor, kind=e.kind, detail=e.detail)
        for e in service.case_events(session=session, case_id=case.id)
    ]
    named = service.desk_checks(session=session, case_ids=[case.id]).get(case.id)
    desk_check = named.occupant_id if named is not None else None
    return CaseDetail.model_validate(
        {
            **_out(case, cluster, desk_check),
            "notes": case.notes,
            "unit_id": case.unit_id,
            "events": events,
        }
    )


@router.get("/cases", response_model=list[CaseOut], summary="A site's cases, by priority")
def list_cases(
    session: SessionDep,
    caller: CallerDep,
    site: Annotated[str, Query(description="Site name or id.")],
    status: Annotated[str, Query(description="Comma-separated: open, assigned, closed.")] = "open",
) -> list[CaseOut]:
    """Cases of a site with the given statuses, highest priority first."""
    statuses = [s.strip() for s in status.split(",") if s.strip()]
    if not statuses or any(s not in tuple(CaseStatus) for s in statuses):
        raise InvalidInput("status must be open, assigned and/or closed")
    site_row = resolve_site(session=session, ref=site, visible=caller.site_ids)
    ranked = service.list_cases(session=session, site_id=site_row.id, statuses=statuses)
    clusters = {
        c.id: c
        for c in session.scalars(
            select(UnknownCluster).where(UnknownCluster.id.in_([c.cluster_id for c, _ in ranked]))
        )
    }
    named = {
        case_id: n.occupant_id
        for case_id, n in service.desk_checks(
            session=session, case_ids=[c.id for c, _ in ranked]
        ).items()
    }
    return [
        CaseOut.model_validate(
            {**_out(c, clusters[c.cluster_id], named.get(c.id)), "priority": round(p, 4)}
        )
        for c, p in ranked
    ]


@router.get("/cases/{case_id}", response_model=CaseDetail, summary="One case and its history")
def get_case(case_id: int, session: SessionDep, caller: CallerDep) -> CaseDetail:
    """A case; viewing it is audited (it leads to a person's face crops)."""
    case = service.view_case(
        session=session, case_id=case_id, actor=caller.actor, site_ids=caller.scope
    )
    out = _detail(session, case)
    session.commit()
    return out


@router.get(
    "/cases/{case_id}/crops/{sighting_id}",
    response_class=Response,
    summary="A face crop of one of the case's sightings (JPEG)",
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "No such crop"}},
)
def get_case_crop(
    case_id: int, sighting_id: int, session: SessionDep, caller: CallerDep
) -> Response:
    """The crop of a sighting in the case's cluster; every view is audited."""
    case = service.get_case(session=session, case_id=case_id, site_ids=caller.scope)
    sighting = session.get(Sighting, sighting_id)
    if sighting is None or sighting.cluster_id != case.cluster_id:
        raise NotFound(f"sighting {sighting_id} is not part of case {case_id}")
    jpeg = service.view_crop(session=session, sighting=sighting, actor=caller.actor, shown_for=case)
    if jpeg is None:
        raise NotFound(f"the crop of sighting {sighting_id} has expired or was never sent")
    session.commit()
    return Response(content=jpeg, media_type="image/jpeg")


@router.post("/cases/{case_id}/actions", response_model=CaseDetail, summary="Act on a case")
def act_on_case(
    case_id: int, body: CaseAction, session: SessionDep, caller: ManagerDep
) -> CaseDetail:
    """Assign, record a call/visit, close with an outcome or reopen; one transaction, audited."""
    kw: dict[str, Any] = {
        "session": session,
        "case_id": case_id,
        "actor": caller.actor,
        "site_ids": caller.scope,
    }
    if isinstance(body, Assign):
        service.assign_case(**kw, user_id=body.user_id or caller.user_id)
    elif isinstance(body, Contact):
        service.record_contact(**kw, kind=body.action, result=body.result, notes=body.notes)
    elif isinstance(body, Enrol):
        outcomes.enrol_from_case(
            **kw, unit_id=body.unit_id, name=body.name, role=body.role, phone=body.phone
        )
    elif isinstance(body, MergeIntoOccupant):
        outcomes.merge_into_occupant(**kw, occupant_id=body.occupant_id)
    elif isinstance(body, Whitelist):
        outcomes.close_with_outcome(**kw, outcome=body.action, label=body.label)
    elif isinstance(body, Reopen):
        outcomes.reopen_case(**kw, is_admin=caller.role == "admin")
    else:
        outcomes.close_with_outcome(**kw, outcome=body.action, notes=body.notes)
    case = service.get_case(session=session, case_id=case_id)
    out = _detail(session, case)
    session.commit()
    return out


@router.post("/whitelist", response_model=WhitelistOut, summary="Whitelist staff or a courier")
def add_whitelist(body: WhitelistIn, session: SessionDep, caller: ManagerDep) -> WhitelistOut:
    """Whitelist a person by face embeddings (e.g. from their staff photo)."""
    site_row = resolve_site(session=session, ref=body.site, visible=caller.site_ids)
    vecs = []
    for i, text in enumerate(body.embeddings_b64):
        try:
            vecs.append(decode_embedding(text))
        except ValueError as exc:
            raise InvalidEmbedding(f"embeddings_b64[{i}]: {exc}") from None
    entry = whitelist.add_whitelist(
        session=session,
        site_id=site_row.id,
        kind=body.kind,
        label=body.label,
        model_id=body.model_id or site_row.model_id,
        embeddings=vecs,
        actor=caller.actor,
    )
    out = WhitelistOut(id=entry.id, site_id=entry.site_id, kind=entry.kind, label=entry.label)
    session.commit()
    return out


class SiteCaseSettings(_Out):
    """A site's timezone, case rule and clustering thresholds (all with defaults)."""

    site_id: int
    timezone: str
    case_rule: CaseRule
    cluster_params: ClusterParams
    registry_chips: bool = Field(
        description="Registry face chips are kept on the server for the desk check "
        "(false: the site keeps photos in the office only)."
    )


class SiteCaseSettingsIn(_Action):
    """Fields to change; omitted ones keep their value."""

    timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    case_rule: CaseRule | None = None
    cluster_params: ClusterParams | None = None
    registry_chips: bool | None = Field(
        default=None,
        description="Keep registry face chips on the server; false also deletes the stored ones.",
    )


def _settings_out(session: SessionDep, site_id: int) -> SiteCaseSettings:
    state = session.get(ClusterSiteState, site_id)
    config = site_config(state)
    return SiteCaseSettings(
        site_id=site_id,
        timezone=state.timezone if state is not None else DEFAULT_TIMEZONE,
        case_rule=config.rule,
        cluster_params=config.params,
        registry_chips=chips_enabled(session=session, site_id=site_id),
    )


@router.get(
    "/case-settings", response_model=SiteCaseSettings, summary="A site's case rule and thresholds"
)
def get_case_settings(
    session: SessionDep,
    caller: CallerDep,
    site: Annotated[str, Query(description="Site name or id.")],
) -> SiteCaseSettings:
    """The rule and thresholds in force for the site."""
    site_row = resolve_site(session=session, ref=site, visible=caller.site_ids)
    return _settings_out(session, site_row.id)


@router.put("/case-settings", response_model=SiteCaseSettings, summary="Change a site's case rule")
def put_case_settings(
    body: SiteCaseSettingsIn,
    session: SessionDep,
    caller: ManagerDep,
    site: Annotated[str, Query(description="Site name or id.")],
) -> SiteCaseSettings:
    """Set the site's timezone, case rule and/or clustering thresholds (audited).

    New thresholds apply to sightings clustered from now on; existing clusters
    are not regrouped.
    """
    site_row = resolve_site(session=session, ref=site, visible=caller.site_ids)
    configure_site(
        session=session,
        site_id=site_row.id,
        timezone=body.timezone,
        case_rule=body.case_rule,
        cluster_params=body.cluster_params,
    )
    if body.registry_chips is not None:
        set_registry_chips(session=session, site_id=site_row.id, enabled=body.registry_chips)
    record(
        session=session,
        actor=caller.actor,
        action="case_settings.update",
        object_type="site",
        object_id=site_row.id,
        site_id=site_row.id,
        detail=body.model_dump(mode="json", exclude_none=True),
    )
    out = _settings_out(session, site_row.id)
    session.commit()
    return out


# -- likely occupants (server/cases/attribution.py) ----------------------------------------
class LikelyOccupantOut(_Out):
    cluster_id: int
    site_id: int
    occupant_id: int = Field(description="The occupant its sightings consistently point at.")
    days: list[str]
    first_seen: datetime
    last_seen: datetime
    sightings: int
    best_sighting_ids: list[int] = Field(description="Sightings whose crops show this person.")


class LikelyOccupantAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster_id: int = Field(ge=1, le=2**62)
    action: Literal["confirm", "reject"] = Field(
        description="confirm: its best crops become the occupant's templates; reject: it is "
        "not that occupant (never attributed again; its case opens if the rule holds)."
    )


class LikelyOccupantResult(_Out):
    cluster_id: int
    action: str
    templates_added: int
    case_id: int | None


def managed_site(
    session: SessionDep,
    caller: ManagerDep,
    site: Annotated[str, Query(description="Site name or id.")],
) -> int:
    """The site a manager acts on (checked before the body is read)."""
    site_row = resolve_site(session=session, ref=site, visible=caller.site_ids)
    return site_row.id


@router.get(
    "/likely-occupants",
    response_model=list[LikelyOccupantOut],
    summary="Clusters that are probably a registered occupant the edge keeps missing",
)
def list_likely_occupants(
    session: SessionDep,
    caller: CallerDep,
    site: Annotated[str, Query(description="Site name or id.")],
) -> list[LikelyOccupantOut]:
    """The site's ``likely_occupant`` clusters (no case was opened), most recent first."""
    site_row = resolve_site(session=session, ref=site, visible=caller.site_ids)
    return [
        LikelyOccupantOut(
            cluster_id=c.id,
            site_id=c.site_id,
            occupant_id=c.occupant_id or 0,
            days=list(c.days),
            first_seen=c.first_seen,
            last_seen=c.last_seen,
            sightings=c.count,
            best_sighting_ids=list(c.best_sightings),
        )
        for c in likely.likely_occupant_clusters(session=session, site_id=site_row.id)
    ]


@router.post(
    "/likely-occupants/actions",
    response_model=LikelyOccupantResult,
    summary="Confirm or reject a likely occupant",
)
def act_on_likely_occupant(
    body: LikelyOccupantAction,
    session: SessionDep,
    caller: ManagerDep,
    site_id: Annotated[int, Depends(managed_site)],
) -> LikelyOccupantResult:
    """Confirm (template augmentation, gallery bump) or reject (the case opens); audited."""
    added = 0
    case_id: int | None = None
    if body.action == "confirm":
        added = likely.confirm_likely_occupant(
            session=session, cluster_id=body.cluster_id, actor=caller.actor, site_ids={site_id}
        )
    else:
        case = likely.reject_likely_occupant(
            session=session, cluster_id=body.cluster_id, actor=caller.actor, site_ids={site_id}
        )
        case_id = None if case is None else case.id
    session.commit()
    return LikelyOccupantResult(
        cluster_id=body.cluster_id, action=body.action, templates_added=added, case_id=case_id
    )
