"""The register read in the web: buildings, units, occupant search, an occupant's page.

Reads for :mod:`server.web.register`; the changes are :mod:`server.occupants.register`.
Scope: ``site_ids`` is the caller's (None: every site); another site's occupant
does not exist for them (:class:`NotFound`), as on the case pages. Viewing an
occupant's page is audited (:func:`view_occupant`); their face chips are served,
and audited per view, by ``/web/chips/{id}``.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from registry.errors import FieldError
from registry.fields import normalise_phone
from server.audit.service import record
from server.cases.models import Case
from server.cases.rules import site_zone
from server.clusters.models import ClusterSiteState
from server.db import utcnow
from server.errors import NotFound
from server.occupants.enums import OccupantStatus, TemplateOrigin
from server.occupants.models import FaceTemplate, Occupant
from server.sites.models import Building, Site, Unit

WEB_PHOTO_PREFIX = "web:"
"""``source`` of a template enrolled from a photo added in the web: ``web:<sha256>``.
Not ``registry:`` on purpose: a later import only replaces the templates it made
itself (``registry.store``), so a face added at the desk survives a re-import."""

SEARCH_LIMIT = 50
"""Occupants one search shows (a unit has a handful; a name search narrows, not lists)."""

_ORIGINS = (
    ("registry:", TemplateOrigin.REGISTRY),
    (WEB_PHOTO_PREFIX, TemplateOrigin.WEB),
    ("case:", TemplateOrigin.CASE),
    ("cluster:", TemplateOrigin.ADAPTIVE),
)


def template_origin(source: str) -> TemplateOrigin:
    """The origin of a template from its ``source``."""
    for prefix, origin in _ORIGINS:
        if source.startswith(prefix):
            return origin
    return TemplateOrigin.OTHER


# -- reads ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BuildingRow:
    id: int | None
    """None: the units that belong to no building."""
    name: str
    units: int
    occupants: int


@dataclass(frozen=True, slots=True)
class UnitRow:
    id: int
    address: str
    building_id: int | None
    occupants: int
    moved_out: int


@dataclass(frozen=True, slots=True)
class OccupantRow:
    id: int
    name: str
    role: str
    phone_tail: str
    """The last four digits only: a list is no place for whole phone numbers."""
    unit_id: int | None
    unit: str
    status: str
    templates: int


@dataclass(frozen=True, slots=True)
class TemplateRow:
    id: int
    origin: TemplateOrigin
    source: str
    quality: float
    model_id: str
    in_gallery: bool
    """Made with the site's model (templates of another model never reach its edges)."""
    has_chip: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CaseRow:
    id: int
    status: str
    outcome: str | None
    opened_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class OccupantPage:
    occupant: Occupant
    site: Site
    unit: Unit | None
    building: str | None
    templates: tuple[TemplateRow, ...]
    cases: tuple[CaseRow, ...]
    units: tuple[UnitRow, ...]
    """The site's units, for the edit form's unit choice."""


def visible_occupant(*, session: Session, occupant_id: int, site_ids: set[int] | None) -> Occupant:
    """The occupant if the caller may see their site; :class:`NotFound` otherwise."""
    occupant = session.get(Occupant, occupant_id)
    if occupant is None or (site_ids is not None and occupant.site_id not in site_ids):
        raise NotFound(f"occupant {occupant_id} does not exist")
    return occupant


def buildings(*, session: Session, site_id: int) -> list[BuildingRow]:
    """The site's buildings with their unit and active-occupant counts (name order)."""
    unit_counts = dict(
        session.execute(
            select(Unit.building_id, func.count(Unit.id))
            .where(Unit.site_id == site_id)
            .group_by(Unit.building_id)
        ).all()
    )
    occ_counts = dict(
        session.execute(
            select(Unit.building_id, func.count(Occupant.id))
            .join(Occupant, Occupant.unit_id == Unit.id)
            .where(Unit.site_id == site_id, Occupant.status == OccupantStatus.ACTIVE)
            .group_by(Unit.building_id)
        ).all()
    )
    rows = [
        BuildingRow(b.id, b.name, int(unit_counts.get(b.id, 0)), int(occ_counts.get(b.id, 0)))
        for b in session.scalars(
            select(Building).where(Building.site_id == site_id).order_by(Building.name)
        )
    ]
    if unit_counts.get(None):
        rows.append(BuildingRow(None, "", int(unit_counts[None]), int(occ_counts.get(None, 0))))
    return rows


def units(
    *, session: Session, site_id: int, building_id: int | None = None, unplaced: bool = False
) -> list[UnitRow]:
    """The site's units (of one building, or ``unplaced``: of none) with occupant counts."""
    query = (
        select(
            Unit.id,
            Unit.address,
            Unit.address_key,
            Unit.building_id,
            func.count(Occupant.id).filter(Occupant.status == OccupantStatus.ACTIVE),
            func.count(Occupant.id).filter(Occupant.status == OccupantStatus.MOVED_OUT),
        )
        .outerjoin(Occupant, Occupant.unit_id == Unit.id)
        .where(Unit.site_id == site_id)
        .group_by(Unit.id, Unit.address, Unit.address_key, Unit.building_id)
        .order_by(Unit.address_key)
    )
    if building_id is not None:
        query = query.where(Unit.building_id == building_id)
    elif unplaced:
        query = query.where(Unit.building_id.is_(None))
    return [UnitRow(r[0], r[1] or r[2], r[3], int(r[4]), int(r[5])) for r in session.execute(query)]


def search(
    *,
    session: Session,
    site_id: int,
    q: str = "",
    unit_id: int | None = None,
    include_moved_out: bool = False,
) -> list[OccupantRow]:
    """Occupants of a site by name, phone tail or unit address (any of them), or of one unit.

    A query of 3-11 digits also matches the end of a phone number: a manager
    asks "who is 5678?" when a caller gives only the last digits.
    """
    text = q.strip()
    if "\x00" in text:
        return []  # PostgreSQL refuses NUL in text (a 500); no occupant's name holds one
    template_count = (
        select(func.count(FaceTemplate.id))
        .where(FaceTemplate.occupant_id == Occupant.id)
        .correlate(Occupant)
        .scalar_subquery()
    )
    query = (
        select(Occupant, Unit.address, Unit.address_key, template_count)
        .outerjoin(Unit, Unit.id == Occupant.unit_id)
        .where(Occupant.site_id == site_id)
    )
    if unit_id is not None:
        query = query.where(Occupant.unit_id == unit_id)
    if not include_moved_out and unit_id is None:
        query = query.where(Occupant.status == OccupantStatus.ACTIVE)
    if text:
        digits = text.lstrip("+")
        clauses = [
            Occupant.name.contains(text, autoescape=True),
            Unit.address.contains(text, autoescape=True),
            Unit.address_key.contains(text, autoescape=True),
        ]
        if digits.isdigit() and 3 <= len(digits) <= 11:
            clauses.append(Occupant.phone.endswith(digits, autoescape=True))
        with suppress(FieldError):
            # A whole number as people write it (+86 138-1234-5678): as the import stores it.
            clauses.append(Occupant.phone == normalise_phone(text))
        query = query.where(or_(*clauses))
    query = query.order_by(Unit.address_key, Occupant.name, Occupant.id).limit(SEARCH_LIMIT)
    return [
        OccupantRow(
            id=occ.id,
            name=occ.name,
            role=occ.role,
            phone_tail=(occ.phone or "")[-4:],
            unit_id=occ.unit_id,
            unit=address or key or "",
            status=occ.status,
            templates=int(n or 0),
        )
        for occ, address, key, n in session.execute(query)
    ]


def occupant_page(*, session: Session, occupant_id: int, site_ids: set[int] | None) -> OccupantPage:
    """One occupant with their templates by origin and the cases that touched them."""
    occupant = visible_occupant(session=session, occupant_id=occupant_id, site_ids=site_ids)
    site = session.get(Site, occupant.site_id)
    assert site is not None  # the foreign key
    unit = session.get(Unit, occupant.unit_id) if occupant.unit_id is not None else None
    building = session.get(Building, unit.building_id) if unit and unit.building_id else None
    templates = tuple(
        TemplateRow(
            id=t.id,
            origin=template_origin(t.source),
            source=t.source,
            quality=t.quality,
            model_id=t.model_id,
            in_gallery=t.model_id == site.model_id,
            has_chip=t.chip_key_id is not None and site.registry_chips,
            created_at=t.created_at,
        )
        for t in session.scalars(
            select(FaceTemplate)
            .where(FaceTemplate.occupant_id == occupant.id)
            .order_by(FaceTemplate.id)
        )
    )
    # Cases that name them, and those whose faces became their templates.
    from_cases = [
        int(s.split(":", 1)[1])
        for s in (t.source for t in templates)
        if s.startswith("case:") and s.split(":", 1)[1].isdigit()
    ]
    cases = tuple(
        CaseRow(c.id, c.status, c.outcome, c.opened_at, c.closed_at)
        for c in session.scalars(
            select(Case)
            .where(
                Case.site_id == occupant.site_id,
                or_(Case.occupant_id == occupant.id, Case.id.in_(from_cases)),
            )
            .order_by(Case.opened_at.desc(), Case.id.desc())
        )
    )
    return OccupantPage(
        occupant=occupant,
        site=site,
        unit=unit,
        building=building.name if building else None,
        templates=templates,
        cases=cases,
        units=tuple(units(session=session, site_id=site.id)),
    )


def view_occupant(
    *, session: Session, occupant_id: int, actor: str, site_ids: set[int] | None
) -> OccupantPage:
    """:func:`occupant_page`, audited (``occupant.view``): a person's register entry was read."""
    found = occupant_page(session=session, occupant_id=occupant_id, site_ids=site_ids)
    record(
        session=session,
        actor=actor,
        action="occupant.view",
        object_type="occupant",
        object_id=found.occupant.id,
        site_id=found.occupant.site_id,
    )
    return found


def today_in(session: Session, site_id: int) -> date:
    """Today's date in the site's timezone (the move-out form's default and bound)."""
    zone = session.scalar(
        select(ClusterSiteState.timezone).where(ClusterSiteState.site_id == site_id)
    )
    return utcnow().astimezone(site_zone(zone)).date()
