"""Read-side queries of the web pages (queue, case, likely occupants, dashboard, devices, audit).

Everything here only reads; changes go through the :mod:`server.cases` services,
so the web UI and the JSON API act the same way. Every function takes the
caller's site scope (None: all sites) and never returns rows outside it.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from server.audit.models import AuditEvent
from server.cases import service as case_service
from server.cases.attribution import suggested_occupant as suggested_occupant_of
from server.cases.enums import NOT_CLOSED, CaseStatus
from server.cases.models import Case, CaseEvent
from server.cases.rules import CaseRule, latest_window_days, site_zone
from server.clusters.enums import ClusterStatus, Suppression
from server.clusters.models import ClusterSiteState, UnknownCluster
from server.clusters.service import cluster_days, site_config
from server.db import utcnow
from server.devices.health import ONLINE_WITHIN, DeviceHealth, device_health
from server.devices.models import Camera, Device
from server.occupants.chips import ChipRef, chips_enabled, occupant_chips
from server.occupants.enums import OccupantStatus
from server.occupants.models import FaceTemplate, Occupant
from server.sightings.models import Sighting
from server.sites.models import Building, Entrance, Site, Unit
from server.users.models import User

QUEUE_LIMIT = 200
PICKER_LIMIT = 50
STRIP_DAYS = 14


def _in_scope(column: Any, scope: set[int] | None) -> ColumnElement[bool]:
    if scope is None:
        return column.is_not(None)
    return column.in_(sorted(scope))


def visible_sites(*, session: Session, scope: set[int] | None) -> list[Site]:
    """Sites the caller may see, by name."""
    return list(session.scalars(select(Site).where(_in_scope(Site.id, scope)).order_by(Site.name)))


def site_timezones(*, session: Session, site_ids: Sequence[int]) -> dict[int, ZoneInfo]:
    """Each site's timezone (the clustering default where a site has no state yet)."""
    rows = session.execute(
        select(ClusterSiteState.site_id, ClusterSiteState.timezone).where(
            ClusterSiteState.site_id.in_(sorted(set(site_ids)))
        )
    )
    zones = {r.site_id: site_zone(r.timezone) for r in rows}
    return {sid: zones.get(sid, site_zone(None)) for sid in site_ids}


def usernames(*, session: Session, user_ids: Sequence[int]) -> dict[int, str]:
    """Display names of users."""
    if not user_ids:
        return {}
    rows = session.execute(select(User.id, User.username).where(User.id.in_(sorted(set(user_ids)))))
    return {r.id: r.username for r in rows}


def actor_label(actor: str, names: dict[int, str]) -> str:
    """``user:3`` -> the username; other actors (system, device, cli) as they are."""
    kind, _, ident = actor.partition(":")
    if kind == "user" and ident.isdigit():
        return names.get(int(ident), actor)
    return actor


def detail_names(
    *, session: Session, details: Sequence[dict[str, Any]], actors: Sequence[str] = ()
) -> dict[str, str]:
    """Display names of the users and occupants that events refer to
    (``"user:3" -> "mgr_a"``, ``"occupant:7" -> "王芳"``; see :mod:`server.web.humanize`)."""
    user_ids = set(_user_ids_in(actors))
    occupant_ids: set[int] = set()
    for d in details:
        if isinstance(d.get("user_id"), int):
            user_ids.add(d["user_id"])
        if isinstance(d.get("occupant_id"), int):
            occupant_ids.add(d["occupant_id"])
    out = {f"user:{k}": v for k, v in usernames(session=session, user_ids=sorted(user_ids)).items()}
    if occupant_ids:
        for oid, name in session.execute(
            select(Occupant.id, Occupant.name).where(Occupant.id.in_(sorted(occupant_ids)))
        ):
            out[f"occupant:{oid}"] = name
    return out


def _user_ids_in(actors: Sequence[str]) -> list[int]:
    out = []
    for actor in actors:
        kind, _, ident = actor.partition(":")
        if kind == "user" and ident.isdigit():
            out.append(int(ident))
    return out


# -- queue ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QueueRow:
    """One case as the queue shows it."""

    case_id: int
    site_id: int
    site_name: str
    status: str
    outcome: str | None
    priority: float
    days_seen: int
    night_entries: int
    first_seen: datetime
    last_seen: datetime
    entrances: tuple[str, ...]
    crop_sighting_id: int | None
    assigned_to: str | None
    desk_check: str | None = None
    """A desk check: the name of the registered occupant the case names."""


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Counts for the queue's header (within the site/building filter)."""

    open: int
    assigned: int
    mine: int
    closed_7d: int


def _entrance_names(session: Session, ids: Sequence[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(select(Entrance.id, Entrance.name).where(Entrance.id.in_(sorted(ids))))
    return {r.id: r.name for r in rows}


def _building_entrances(session: Session, building_id: int) -> set[int]:
    return set(session.scalars(select(Entrance.id).where(Entrance.building_id == building_id)))


def _first_crop(session: Session, sighting_ids: Sequence[int]) -> dict[int, bool]:
    if not sighting_ids:
        return {}
    rows = session.execute(
        select(Sighting.id, Sighting.has_crop).where(Sighting.id.in_(sorted(set(sighting_ids))))
    )
    return {r.id: bool(r.has_crop) for r in rows}


def queue(
    *,
    session: Session,
    scope: set[int] | None,
    site_id: int | None = None,
    building_id: int | None = None,
    statuses: Sequence[str] = NOT_CLOSED,
    assigned_to: int | None = None,
) -> tuple[list[QueueRow], QueueCounts]:
    """Cases by priority (highest first, then oldest) and the header counts."""
    where: list[ColumnElement[bool]] = [_in_scope(Case.site_id, scope)]
    if site_id is not None:
        where.append(Case.site_id == site_id)
    pairs = session.execute(
        select(Case, UnknownCluster)
        .join(UnknownCluster, UnknownCluster.id == Case.cluster_id)
        .where(*where, Case.status.in_(list(statuses)))
        .order_by(Case.priority.desc(), Case.id)
    ).all()
    if building_id is not None:
        # Clusters keep entrance ids, not buildings: a case is in a building if it
        # was seen at one of the building's entrances.
        doors = _building_entrances(session, building_id)
        pairs = [p for p in pairs if doors.intersection(p[1].entrances)]
    if assigned_to is not None:
        pairs = [p for p in pairs if p[0].assigned_to == assigned_to]
    pairs = pairs[:QUEUE_LIMIT]
    entrance_ids = sorted({e for _c, cl in pairs for e in cl.entrances})
    names = _entrance_names(session, entrance_ids)
    crops = _first_crop(session, [cl.best_sightings[0] for _c, cl in pairs if cl.best_sightings])
    sites = {s.id: s.name for s in session.scalars(select(Site))}
    people = usernames(session=session, user_ids=[c.assigned_to for c, _ in pairs if c.assigned_to])
    named = case_service.desk_checks(session=session, case_ids=[c.id for c, _ in pairs])
    occupant_names = (
        {
            r.id: r.name
            for r in session.execute(
                select(Occupant.id, Occupant.name).where(
                    Occupant.id.in_({n.occupant_id for n in named.values()})
                )
            )
        }
        if named
        else {}
    )
    rows = []
    for case, cluster in pairs:
        best = next((s for s in cluster.best_sightings if crops.get(s)), None)
        rows.append(
            QueueRow(
                case_id=case.id,
                site_id=case.site_id,
                site_name=sites.get(case.site_id, str(case.site_id)),
                status=case.status,
                outcome=case.outcome,
                priority=round(case.priority, 2),
                days_seen=len(cluster.days),
                night_entries=cluster.night_entries,
                first_seen=cluster.first_seen,
                last_seen=cluster.last_seen,
                entrances=tuple(names.get(e, f"#{e}") for e in cluster.entrances),
                crop_sighting_id=best,
                assigned_to=people.get(case.assigned_to) if case.assigned_to else None,
                desk_check=(
                    occupant_names.get(named[case.id].occupant_id) if case.id in named else None
                ),
            )
        )
    return rows, queue_counts(
        session=session, scope=scope, site_id=site_id, building_id=building_id, me=assigned_to
    )


def queue_counts(
    *,
    session: Session,
    scope: set[int] | None,
    site_id: int | None,
    building_id: int | None,
    me: int | None,
    now: datetime | None = None,
) -> QueueCounts:
    """Open / assigned / assigned-to-me / closed-in-7-days counts under the filter."""
    now = now or utcnow()
    where: list[ColumnElement[bool]] = [_in_scope(Case.site_id, scope)]
    if site_id is not None:
        where.append(Case.site_id == site_id)
    rows = session.execute(
        select(Case.status, Case.assigned_to, Case.closed_at, UnknownCluster.entrances)
        .join(UnknownCluster, UnknownCluster.id == Case.cluster_id)
        .where(
            *where,
            or_(Case.status != CaseStatus.CLOSED, Case.closed_at >= now - timedelta(days=7)),
        )
    ).all()
    if building_id is not None:
        doors = _building_entrances(session, building_id)
        rows = [r for r in rows if doors.intersection(r.entrances)]
    return QueueCounts(
        open=sum(1 for r in rows if r.status == CaseStatus.OPEN),
        assigned=sum(1 for r in rows if r.status == CaseStatus.ASSIGNED),
        mine=sum(1 for r in rows if r.status == CaseStatus.ASSIGNED and me and r.assigned_to == me),
        closed_7d=sum(1 for r in rows if r.status == CaseStatus.CLOSED),
    )


def cameras_without_entrance(
    *, session: Session, scope: set[int] | None, site_id: int | None = None
) -> int:
    """Cameras placed at no entrance: their sightings belong to no building."""
    query = (
        select(func.count())
        .select_from(Camera)
        .join(Device, Device.id == Camera.device_id)
        .where(Camera.entrance_id.is_(None), _in_scope(Device.site_id, scope))
    )
    if site_id is not None:
        query = query.where(Device.site_id == site_id)
    return int(session.scalar(query) or 0)


def buildings(*, session: Session, scope: set[int] | None, site_id: int | None) -> list[Building]:
    """Buildings for the queue filter."""
    query = select(Building).where(_in_scope(Building.site_id, scope))
    if site_id is not None:
        query = query.where(Building.site_id == site_id)
    return list(session.scalars(query.order_by(Building.site_id, Building.name)))


# -- case page ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StripRow:
    """One site-local day of the days x hours strip: sightings per hour 0..23."""

    day: date
    hours: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EventRow:
    """One history entry of a case."""

    at: datetime
    actor: str
    kind: str
    detail: dict[str, Any]
    actor_id: str = ""
    """The stored actor (``user:3``, ``system:worker``); ``actor`` is its display label."""
    names: dict[str, str] = field(default_factory=dict)
    """Names the detail refers to (:func:`detail_names`)."""


@dataclass(frozen=True, slots=True)
class CropInfo:
    """A door crop with when and where it was taken (the enlarged view's caption)."""

    sighting_id: int
    at: datetime
    entrance: str | None
    """None: the camera had no entrance set."""


@dataclass(frozen=True, slots=True)
class PriorityParts:
    """What raised a case's priority: each term of :func:`server.cases.rules.priority`."""

    days: int
    days_points: float
    nights: int
    night_points: float
    hours_ago: float
    recency_points: float


@dataclass(frozen=True, slots=True)
class CandidateFaces:
    """A registered occupant's faces to compare with the door crops (the desk check)."""

    occupant_id: int
    name: str
    unit: str | None
    role: str
    move_in: date | None
    templates: int
    chips: tuple[ChipRef, ...]


@dataclass(frozen=True, slots=True)
class CaseView:
    """Everything the case page shows."""

    case: Case
    cluster: UnknownCluster
    site_name: str
    tz: ZoneInfo
    crops: tuple[int, ...]
    strip: tuple[StripRow, ...]
    entrances: tuple[tuple[str, int], ...]
    events: tuple[EventRow, ...]
    assigned_to: str | None
    unit: str | None
    occupant: str | None
    suggested: Suggestion | None = None
    crop_info: tuple[CropInfo, ...] = ()
    no_entrance: int = 0
    """Sightings whose camera has no entrance set."""
    priority_parts: PriorityParts | None = None
    candidate: CandidateFaces | None = None
    """The suggested (or desk-check) occupant's registry faces."""
    chips_on: bool = True
    """False: the site keeps registry photos in the office only."""


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A registered occupant the case's face may be (for the manager to confirm)."""

    occupant_id: int
    name: str
    unit: str | None
    similarity: float
    share: float | None


def suggested_occupant(
    *, session: Session, case: Case, events: Sequence[CaseEvent]
) -> Suggestion | None:
    """The occupant the case's 'opened' evidence points at, if the hint is worth showing
    (:func:`server.cases.attribution.suggested_occupant`) and they are still active."""
    if case.status == CaseStatus.CLOSED:
        return None
    opened = next((e for e in events if e.kind == "opened"), None)
    hint = suggested_occupant_of(opened.detail or {}) if opened is not None else None
    if hint is None:
        return None
    occupant_id, similarity, share = hint.occupant_id, hint.similarity, hint.share
    occupant = session.get(Occupant, occupant_id)
    if (
        occupant is None
        or occupant.site_id != case.site_id
        or occupant.status != OccupantStatus.ACTIVE
    ):
        return None
    unit = session.get(Unit, occupant.unit_id) if occupant.unit_id else None
    return Suggestion(
        occupant_id=occupant.id,
        name=occupant.name,
        unit=unit.address if unit else None,
        similarity=similarity,
        share=share,
    )


def sighting_strip(
    *, session: Session, cluster_id: int, tz: ZoneInfo, days: int = STRIP_DAYS
) -> tuple[list[StripRow], Counter[int | None]]:
    """Sightings per (site-local day, hour) for the cluster's latest ``days`` days seen,
    and sightings per entrance id (None: the camera had no entrance set)."""
    rows = session.execute(
        select(Sighting.started_at, Sighting.entrance_id).where(Sighting.cluster_id == cluster_id)
    ).all()
    grid: dict[date, list[int]] = {}
    doors: Counter[int | None] = Counter()
    for r in rows:
        local = r.started_at.astimezone(tz)
        grid.setdefault(local.date(), [0] * 24)[local.hour] += 1
        doors[r.entrance_id] += 1
    latest = sorted(grid)[-days:]
    return [StripRow(day=d, hours=tuple(grid[d])) for d in latest], doors


def case_view(*, session: Session, case: Case) -> CaseView:
    """Crops, strip, entrances and history of a case (already scope-checked)."""
    cluster = session.get(UnknownCluster, case.cluster_id)
    assert cluster is not None  # FK with cascade
    site = session.get(Site, case.site_id)
    tz = site_timezones(session=session, site_ids=[case.site_id])[case.site_id]
    crops = _first_crop(session, cluster.best_sightings)
    strip, all_doors = sighting_strip(session=session, cluster_id=cluster.id, tz=tz)
    no_entrance = all_doors.pop(None, 0)
    doors: Counter[int] = Counter({d: n for d, n in all_doors.items() if d is not None})
    door_ids = sorted(set(doors) | set(cluster.entrances))
    names = _entrance_names(session, door_ids)
    shown = [s for s in cluster.best_sightings if crops.get(s)]
    events = list(
        session.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)
        )
    )
    people = usernames(
        session=session,
        user_ids=_user_ids_in([e.actor for e in events])
        + ([case.assigned_to] if case.assigned_to else []),
    )
    refs = detail_names(session=session, details=[e.detail or {} for e in events])
    unit = session.get(Unit, case.unit_id) if case.unit_id else None
    occupant_id = case.occupant_id or cluster.occupant_id
    occupant = session.get(Occupant, occupant_id) if occupant_id else None
    suggested = suggested_occupant(session=session, case=case, events=events)
    opened = next((e for e in events if e.kind == "opened"), None)
    candidate_id = suggested.occupant_id if suggested else _desk_check_occupant(opened)
    return CaseView(
        case=case,
        cluster=cluster,
        site_name=site.name if site else str(case.site_id),
        tz=tz,
        crops=tuple(s for s in cluster.best_sightings if crops.get(s)),
        strip=tuple(strip),
        entrances=tuple(
            sorted(
                ((names.get(d, f"#{d}"), doors.get(d, 0)) for d in door_ids), key=lambda x: -x[1]
            )
        ),
        events=tuple(
            EventRow(
                at=e.at,
                actor=actor_label(e.actor, people),
                kind=e.kind,
                detail=e.detail or {},
                actor_id=e.actor,
                names=refs,
            )
            for e in events
        ),
        assigned_to=people.get(case.assigned_to) if case.assigned_to else None,
        unit=unit.address if unit else None,
        occupant=occupant.name if occupant else None,
        suggested=suggested,
        crop_info=_crop_info(session, shown, names),
        no_entrance=no_entrance,
        priority_parts=priority_parts(session=session, case=case, cluster=cluster),
        candidate=(
            candidate_faces(session=session, site_id=case.site_id, occupant_id=candidate_id)
            if candidate_id is not None and case.status != CaseStatus.CLOSED
            else None
        ),
        chips_on=chips_enabled(session=session, site_id=case.site_id),
    )


def _desk_check_occupant(opened: CaseEvent | None) -> int | None:
    """The registered resident a desk-check case names (its 'opened' detail), if any."""
    detail = (opened.detail or {}) if opened is not None else {}
    check = detail.get("desk_check")
    if isinstance(check, dict):
        check = check.get("occupant_id")
    if isinstance(check, bool) or not check:
        return (
            int(detail["possible_occupant_id"])
            if check and detail.get("possible_occupant_id")
            else None
        )
    try:
        return int(check)
    except (TypeError, ValueError):
        return None


def _crop_info(
    session: Session, sighting_ids: Sequence[int], names: dict[int, str]
) -> tuple[CropInfo, ...]:
    if not sighting_ids:
        return ()
    rows = {
        r.id: r
        for r in session.execute(
            select(Sighting.id, Sighting.started_at, Sighting.entrance_id).where(
                Sighting.id.in_(sorted(set(sighting_ids)))
            )
        )
    }
    extra = _entrance_names(
        session,
        [r.entrance_id for r in rows.values() if r.entrance_id not in names and r.entrance_id],
    )
    names = {**names, **extra}
    return tuple(
        CropInfo(
            sighting_id=s,
            at=rows[s].started_at,
            entrance=names.get(rows[s].entrance_id) if rows[s].entrance_id else None,
        )
        for s in sighting_ids
        if s in rows
    )


def priority_parts(
    *, session: Session, case: Case, cluster: UnknownCluster, now: datetime | None = None
) -> PriorityParts:
    """The terms of the case's priority under the site's rule (what the number is made of)."""
    state = session.get(ClusterSiteState, case.site_id)
    rule = _site_rule(state)
    days = latest_window_days(cluster_days(cluster), rule)
    wall = max(now or utcnow(), cluster.last_seen)
    age_h = max((wall - cluster.last_seen).total_seconds() / 3600.0, 0.0)
    nights = min(cluster.night_entries, rule.night_cap)
    return PriorityParts(
        days=days,
        days_points=rule.days_weight * days,
        nights=cluster.night_entries,
        night_points=rule.night_weight * nights,
        hours_ago=age_h,
        recency_points=rule.recency_weight * 0.5 ** (age_h / 24.0 / rule.recency_half_life_days),
    )


def _site_rule(state: ClusterSiteState | None) -> CaseRule:
    return site_config(state).rule


def candidate_faces(*, session: Session, site_id: int, occupant_id: int) -> CandidateFaces | None:
    """An occupant of the site with their registry faces (None: not an occupant of the site)."""
    occupant = session.get(Occupant, occupant_id)
    if occupant is None or occupant.site_id != site_id:
        return None
    unit = session.get(Unit, occupant.unit_id) if occupant.unit_id else None
    count = session.scalar(
        select(func.count())
        .select_from(FaceTemplate)
        .where(FaceTemplate.occupant_id == occupant.id)
    )
    return CandidateFaces(
        occupant_id=occupant.id,
        name=occupant.name,
        unit=unit.address if unit else None,
        role=occupant.role,
        move_in=occupant.move_in,
        templates=int(count or 0),
        chips=tuple(occupant_chips(session=session, occupant_id=occupant.id)),
    )


def search_units(*, session: Session, site_id: int, q: str) -> list[Unit]:
    """A site's units whose address or key contains ``q`` (the enrol picker)."""
    query = select(Unit).where(Unit.site_id == site_id)
    q = q.strip()
    if q:
        like = f"%{q.replace('%', '').replace('_', '')}%"
        query = query.where(or_(Unit.address.ilike(like), Unit.address_key.ilike(like.upper())))
    return list(session.scalars(query.order_by(Unit.address_key).limit(PICKER_LIMIT)))


def search_occupants(*, session: Session, site_id: int, q: str) -> list[tuple[Occupant, str]]:
    """A site's active occupants whose name contains ``q``, with their unit's address."""
    query = (
        select(Occupant, Unit.address)
        .outerjoin(Unit, Unit.id == Occupant.unit_id)
        .where(Occupant.site_id == site_id, Occupant.status == OccupantStatus.ACTIVE)
    )
    q = q.strip()
    if q:
        query = query.where(Occupant.name.ilike(f"%{q.replace('%', '').replace('_', '')}%"))
    rows = session.execute(query.order_by(Occupant.name, Occupant.id).limit(PICKER_LIMIT)).all()
    return [(r[0], r[1] or "") for r in rows]


# -- dashboard ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DayCount:
    """Sightings on one site-local day."""

    day: date
    known: int
    unknown: int


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A site's safety report."""

    site: Site
    open_cases: int
    assigned_cases: int
    resolved_7d: tuple[tuple[str, int], ...]
    median_days_to_resolve: float | None
    resolved_30d: int
    per_day: tuple[DayCount, ...]
    devices_online: int
    devices_total: int


def dashboard(
    *, session: Session, site: Site, now: datetime | None = None, days: int = 14
) -> Dashboard:
    """Open cases, resolved this week by outcome, median days to resolve (cases closed
    in the last 30 days), sightings per site-local day (last ``days`` days), devices online."""
    now = now or utcnow()
    tz = site_timezones(session=session, site_ids=[site.id])[site.id]
    status_counts = dict(
        session.execute(
            select(Case.status, func.count())
            .where(Case.site_id == site.id, Case.status != CaseStatus.CLOSED)
            .group_by(Case.status)
        ).all()
    )
    closed = session.execute(
        select(Case.outcome, Case.opened_at, Case.closed_at).where(
            Case.site_id == site.id,
            Case.status == CaseStatus.CLOSED,
            Case.closed_at >= now - timedelta(days=30),
        )
    ).all()
    week = Counter(r.outcome or "?" for r in closed if r.closed_at >= now - timedelta(days=7))
    durations = [(r.closed_at - r.opened_at).total_seconds() / 86400 for r in closed]
    start_day = now.astimezone(tz).date() - timedelta(days=days - 1)
    # Bucketed here, not in SQL: the day boundary is the site's, and SQLite and
    # PostgreSQL disagree on time zone functions. Only two small columns are read.
    since = datetime.combine(start_day, datetime.min.time(), tzinfo=tz)
    per: dict[date, list[int]] = {start_day + timedelta(days=i): [0, 0] for i in range(days)}
    for started, kind in session.execute(
        select(Sighting.started_at, Sighting.kind).where(
            Sighting.site_id == site.id, Sighting.started_at >= since
        )
    ):
        slot = per.get(started.astimezone(tz).date())
        if slot is not None:
            slot[0 if kind == "known" else 1] += 1
    devices = list(session.scalars(select(Device).where(Device.site_id == site.id)))
    return Dashboard(
        site=site,
        open_cases=int(status_counts.get(CaseStatus.OPEN, 0)),
        assigned_cases=int(status_counts.get(CaseStatus.ASSIGNED, 0)),
        resolved_7d=tuple(sorted(week.items(), key=lambda kv: (-kv[1], kv[0]))),
        median_days_to_resolve=round(statistics.median(durations), 1) if durations else None,
        resolved_30d=len(closed),
        per_day=tuple(DayCount(day=d, known=v[0], unknown=v[1]) for d, v in sorted(per.items())),
        devices_online=sum(1 for d in devices if is_online(d, now)),
        devices_total=len(devices),
    )


# -- devices --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One device on the devices page."""

    id: int
    name: str
    site_id: int
    site_name: str
    online: bool
    disabled: bool
    last_heartbeat: datetime | None
    version: str | None
    fps: float | None
    dropped_frames: int | None
    outbox: int | None
    cameras: tuple[tuple[str, str], ...]
    future_refused: int = 0
    """Sightings refused for times in the future: the box's clock is wrong."""
    unplaced: tuple[str, ...] = ()
    """Cameras at no entrance: their sightings match no building's filter."""


def is_online(device: Device, now: datetime) -> bool:
    """Heartbeat within :data:`ONLINE_WITHIN` and not disabled."""
    beat = device.last_heartbeat_at
    return not device.disabled and beat is not None and now - beat <= ONLINE_WITHIN


def devices(
    *, session: Session, scope: set[int] | None, site_id: int | None, now: datetime | None = None
) -> list[DeviceRow]:
    """Devices with their last heartbeat's stats (summed over cameras)."""
    now = now or utcnow()
    query = select(Device, Site.name).join(Site, Site.id == Device.site_id)
    query = query.where(_in_scope(Device.site_id, scope))
    if site_id is not None:
        query = query.where(Device.site_id == site_id)
    found = session.execute(query.order_by(Site.name, Device.name)).all()
    unplaced: dict[int, list[str]] = {}
    if found:
        for device_id, name in session.execute(
            select(Camera.device_id, Camera.name)
            .where(
                Camera.device_id.in_(sorted({d.id for d, _ in found})),
                Camera.entrance_id.is_(None),
            )
            .order_by(Camera.name)
        ):
            unplaced.setdefault(device_id, []).append(name)
    out = []
    for device, site_name in found:
        stats = device.stats or {}
        cams = stats.get("cameras") or {}
        cams = cams if isinstance(cams, dict) else {}
        fps = sum(float(c.get("fps", 0.0)) for c in cams.values() if isinstance(c, dict))
        dropped = sum(int(c.get("dropped_frames", 0)) for c in cams.values() if isinstance(c, dict))
        outbox = stats.get("outbox_depth")
        out.append(
            DeviceRow(
                id=device.id,
                name=device.name,
                site_id=device.site_id,
                site_name=site_name,
                online=is_online(device, now),
                disabled=device.disabled,
                last_heartbeat=device.last_heartbeat_at,
                version=device.software_version,
                fps=round(fps, 1) if device.stats else None,
                dropped_frames=dropped if device.stats else None,
                outbox=int(outbox) if isinstance(outbox, int) else None,
                cameras=tuple(
                    (str(n), str(c.get("state", "?")) if isinstance(c, dict) else "?")
                    for n, c in sorted(cams.items())
                ),
                future_refused=device.future_refused,
                unplaced=tuple(unplaced.get(device.id, ())),
            )
        )
    return out


def devices_health(
    *, session: Session, scope: set[int] | None, site_id: int | None, now: datetime | None = None
) -> list[DeviceHealth]:
    """Health in words of the devices in scope (optionally of one site), by site and name:
    the one read behind the devices page and the dashboard's "needs attention"."""
    query = select(Device).join(Site, Site.id == Device.site_id)
    query = query.where(_in_scope(Device.site_id, scope))
    if site_id is not None:
        query = query.where(Device.site_id == site_id)
    found = list(session.scalars(query.order_by(Site.name, Device.name)))
    return device_health(session=session, devices=found, now=now or utcnow())


# -- audit ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AuditRow:
    """One audit event for display."""

    at: datetime
    actor: str
    action: str
    object: str
    site_name: str
    detail: dict[str, Any]
    actor_id: str = ""
    object_type: str = ""
    object_id: str | None = None
    site_id: int | None = None
    names: dict[str, str] = field(default_factory=dict)


def audit(
    *,
    session: Session,
    scope: set[int] | None,
    case_id: int | None = None,
    limit: int = 200,
) -> list[AuditRow]:
    """Recent audit events of the caller's sites (admins also see site-less ones)."""
    query = select(AuditEvent)
    if scope is not None:
        query = query.where(AuditEvent.site_id.in_(sorted(scope)))
    if case_id is not None:
        query = query.where(AuditEvent.object_type == "case", AuditEvent.object_id == str(case_id))
    events = list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))
    names = usernames(session=session, user_ids=_user_ids_in([e.actor for e in events]))
    refs = detail_names(session=session, details=[e.detail or {} for e in events])
    # Users as objects (user.disable of user 5) are named too.
    refs.update(
        {
            f"user:{k}": v
            for k, v in usernames(
                session=session,
                user_ids=[
                    int(e.object_id)
                    for e in events
                    if e.object_type == "user" and e.object_id and e.object_id.isdigit()
                ],
            ).items()
        }
    )
    sites = {s.id: s.name for s in session.scalars(select(Site))}
    return [
        AuditRow(
            at=e.at,
            actor=actor_label(e.actor, names),
            action=e.action,
            object=f"{e.object_type} {e.object_id or ''}".strip(),
            site_name=sites.get(e.site_id, "") if e.site_id else "",
            detail=e.detail or {},
            actor_id=e.actor,
            object_type=e.object_type,
            object_id=e.object_id,
            site_id=e.site_id,
            names=refs,
        )
        for e in events
    ]


# -- likely occupants -----------------------------------------------------------------------
LIKELY_LABEL_ACTION = "cluster.likely_occupant"
"""The worker's audit action when it labels a cluster (its detail is the evidence)."""


@dataclass(frozen=True, slots=True)
class LikelyRow:
    """One ``likely_occupant`` cluster: the occupant it points at, the evidence, its crops.

    The evidence is what the worker recorded when it labelled the cluster
    (None where that record names another occupant: a re-check moved it).
    """

    cluster_id: int
    site_id: int
    site_name: str
    occupant_id: int
    occupant_name: str
    unit: str | None
    share: float | None
    centroid_similarity: float | None
    margin: float | None
    occupant_known_days: int | None
    days_seen: int
    sightings: int
    first_seen: datetime
    last_seen: datetime
    crops: tuple[int, ...]
    chips: tuple[ChipRef, ...] = ()
    """The occupant's registry faces, to compare with the crops."""
    chips_on: bool = True
    """False: the site keeps registry photos in the office only."""


def _likely_where(scope: set[int] | None) -> list[ColumnElement[bool]]:
    # The same clusters as server.cases.likely.likely_occupant_clusters, over a scope.
    return [
        _in_scope(UnknownCluster.site_id, scope),
        UnknownCluster.status == ClusterStatus.ACTIVE,
        UnknownCluster.suppression == Suppression.LIKELY_OCCUPANT,
        UnknownCluster.occupant_id.is_not(None),
    ]


def likely_count(*, session: Session, scope: set[int] | None) -> int:
    """How many likely-occupant clusters wait for a manager in the caller's sites."""
    return int(
        session.scalar(
            select(func.count()).select_from(UnknownCluster).where(*_likely_where(scope))
        )
        or 0
    )


def _likely_evidence(
    session: Session, clusters: Sequence[UnknownCluster]
) -> dict[int, dict[str, Any]]:
    """The latest labelling record's evidence per cluster id."""
    if not clusters:
        return {}
    # Bounded by site and time (the label comes after the first sighting), so the
    # (site_id, at) index does the work on a long audit log.
    events = session.execute(
        select(AuditEvent.object_id, AuditEvent.detail)
        .where(
            AuditEvent.site_id.in_(sorted({c.site_id for c in clusters})),
            AuditEvent.at >= min(c.first_seen for c in clusters),
            AuditEvent.action == LIKELY_LABEL_ACTION,
            AuditEvent.object_type == "unknown_cluster",
            AuditEvent.object_id.in_(sorted(str(c.id) for c in clusters)),
        )
        .order_by(AuditEvent.id)
    )
    return {int(r.object_id): dict(r.detail or {}) for r in events}


def _num(detail: dict[str, Any], key: str) -> float | None:
    value = detail.get(key)
    return float(value) if isinstance(value, int | float) else None


def likely_occupants(
    *,
    session: Session,
    scope: set[int] | None,
    site_id: int | None = None,
    cluster_id: int | None = None,
) -> list[LikelyRow]:
    """Likely-occupant clusters of the caller's sites, most recently seen first."""
    where = _likely_where(scope)
    if site_id is not None:
        where.append(UnknownCluster.site_id == site_id)
    if cluster_id is not None:
        where.append(UnknownCluster.id == cluster_id)
    found = session.execute(
        select(UnknownCluster, Occupant, Unit.address)
        .join(Occupant, Occupant.id == UnknownCluster.occupant_id)
        .outerjoin(Unit, Unit.id == Occupant.unit_id)
        .where(*where)
        .order_by(UnknownCluster.last_seen.desc(), UnknownCluster.id)
        .limit(QUEUE_LIMIT)
    ).all()
    clusters = [r[0] for r in found]
    evidence = _likely_evidence(session, clusters)
    crops = _first_crop(session, [s for c in clusters for s in c.best_sightings])
    sites = {s.id: s.name for s in session.scalars(select(Site))}
    rows = []
    for cluster, occupant, address in found:
        ev = evidence.get(cluster.id, {})
        if ev.get("occupant_id") != occupant.id:
            ev = {}
        known = ev.get("occupant_known_days")
        rows.append(
            LikelyRow(
                cluster_id=cluster.id,
                site_id=cluster.site_id,
                site_name=sites.get(cluster.site_id, str(cluster.site_id)),
                occupant_id=occupant.id,
                occupant_name=occupant.name,
                unit=address,
                share=_num(ev, "share"),
                centroid_similarity=_num(ev, "centroid_similarity"),
                margin=_num(ev, "margin"),
                occupant_known_days=known if isinstance(known, int) else None,
                days_seen=len(cluster.days),
                sightings=cluster.count,
                first_seen=cluster.first_seen,
                last_seen=cluster.last_seen,
                crops=tuple(s for s in cluster.best_sightings if crops.get(s)),
                chips=tuple(occupant_chips(session=session, occupant_id=occupant.id)),
                chips_on=chips_enabled(session=session, site_id=cluster.site_id),
            )
        )
    return rows


def settled_cluster(
    *, session: Session, scope: set[int] | None, cluster_id: int, suppression: str
) -> tuple[UnknownCluster, str | None] | None:
    """A cluster of the caller's sites just confirmed/rejected, and its occupant's name."""
    cluster = session.get(UnknownCluster, cluster_id)
    if cluster is None or cluster.suppression != suppression:
        return None
    if scope is not None and cluster.site_id not in scope:
        return None
    occupant = session.get(Occupant, cluster.occupant_id) if cluster.occupant_id else None
    return cluster, occupant.name if occupant else None
