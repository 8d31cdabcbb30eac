"""The register in the web: browse and search occupants, edit, move out, add or delete faces.

One service function per policy, each auditing itself; the web routes
(:mod:`server.web.register`) call them and commit once. Field values go
through the registry import's own parsers (:mod:`registry.fields`), so a phone
or a date the import would refuse is refused here with the same words. A photo
is enrolled by the import's engine and gates (:mod:`server.occupants.face_engine`,
loaded only where a photo arrives); this module receives the enrolled face,
never the photo, and keeps only its template and chip.

Scope: ``site_ids`` is the caller's (None: every site); another site's occupant
does not exist for them (:class:`NotFound`), as on the case pages.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from registry.errors import FieldError
from registry.fields import normalise_date, normalise_name, normalise_phone, normalise_role
from server.audit.service import record
from server.cases.models import Case
from server.cases.rules import site_zone
from server.clusters.models import ClusterSiteState
from server.db import utcnow
from server.errors import InvalidInput, NotFound
from server.occupants import service as occupants
from server.occupants.enums import OccupantStatus, TemplateOrigin
from server.occupants.errors import PhotoRefused
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
    (WEB_PHOTO_PREFIX, TemplateOrigin.REGISTRY),
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


# -- changes --------------------------------------------------------------------------------
def _field(parse_error: FieldError, label: str) -> InvalidInput:
    return InvalidInput(f"{label}: {parse_error}")


def edit_occupant(
    *,
    session: Session,
    occupant_id: int,
    actor: str,
    site_ids: set[int] | None,
    name: str,
    role: str,
    phone: str,
    move_in: str,
    unit_id: int | None,
) -> list[str]:
    """Change an occupant's register fields; the import's parsers validate each one.

    Empty ``phone`` or ``move_in`` clears it. Returns the names of the fields that
    changed (audited as ``occupant.edit``; the values are not copied into the log).
    """
    occupant = visible_occupant(session=session, occupant_id=occupant_id, site_ids=site_ids)
    try:
        new_name = normalise_name(name)
    except FieldError as exc:
        raise _field(exc, "name") from None
    try:
        new_role = normalise_role(role).value
    except FieldError as exc:
        raise _field(exc, "role") from None
    try:
        new_phone = normalise_phone(phone) if phone.strip() else None
    except FieldError as exc:
        raise _field(exc, "phone") from None
    try:
        new_move_in = normalise_date(move_in) if move_in.strip() else None
    except FieldError as exc:
        raise _field(exc, "move_in") from None
    if unit_id is not None:
        unit = session.get(Unit, unit_id)
        if unit is None or unit.site_id != occupant.site_id:
            raise InvalidInput(f"unit: {unit_id} is not a unit of this site")
    if occupant.unit_id is not None and unit_id is None:
        raise InvalidInput("unit: choose the occupant's unit")
    wanted = {
        "name": new_name,
        "role": new_role,
        "phone": new_phone,
        "move_in": new_move_in,
        "unit_id": unit_id,
    }
    changed = [k for k, v in wanted.items() if getattr(occupant, k) != v]
    if not changed:
        return []
    for key in changed:
        setattr(occupant, key, wanted[key])
    session.flush()
    record(
        session=session,
        actor=actor,
        action="occupant.edit",
        object_type="occupant",
        object_id=occupant.id,
        site_id=occupant.site_id,
        detail={"fields": changed, "via": "web"},
    )
    return changed


def move_out(
    *,
    session: Session,
    occupant_id: int,
    actor: str,
    site_ids: set[int] | None,
    on: str,
) -> int:
    """Move an occupant out on a date (today or earlier, site time); returns templates deleted.

    As the import's ``--sync`` does: status ``moved_out``, the date kept, and their
    face leaves the gallery *and* the database (deletion on move-out), so the
    site's gallery version bumps and every edge drops them on its next sync.
    """
    occupant = visible_occupant(session=session, occupant_id=occupant_id, site_ids=site_ids)
    if occupant.status == OccupantStatus.MOVED_OUT:
        raise InvalidInput(f"{occupant.name} has already moved out")
    try:
        day = normalise_date(on) if on.strip() else None
    except FieldError as exc:
        raise _field(exc, "move_out") from None
    if day is None:
        raise InvalidInput("move_out: give the date they moved out")
    today = today_in(session, occupant.site_id)
    if day > today:
        # Their face would leave the doors before they do; move them out on the day.
        raise InvalidInput(f"move_out: {day.isoformat()} is in the future (today is {today})")
    if occupant.move_in is not None and day < occupant.move_in:
        raise InvalidInput(
            f"move_out: {day.isoformat()} is before they moved in ({occupant.move_in})"
        )
    occupant.status = OccupantStatus.MOVED_OUT
    occupant.move_out = day
    session.flush()
    deleted = occupants.delete_templates(session=session, occupant_id=occupant.id)
    record(
        session=session,
        actor=actor,
        action="occupant.move_out",
        object_type="occupant",
        object_id=occupant.id,
        site_id=occupant.site_id,
        detail={"on": day.isoformat(), "templates": deleted, "via": "web"},
    )
    return deleted


class EnrolledPhoto(Protocol):
    """An enrolled face as the import keeps it (``registry.enrol.Enrolled`` fits)."""

    @property
    def embedding(self) -> npt.NDArray[np.float32]: ...
    @property
    def quality(self) -> float: ...
    @property
    def model_id(self) -> str: ...
    @property
    def chip(self) -> bytes | None: ...
    @property
    def warning(self) -> str: ...


def photo_target(*, session: Session, occupant_id: int, site_ids: set[int] | None) -> Site:
    """The site whose model a photo for this occupant must be enrolled with; refuses a
    moved-out occupant before the engine runs."""
    occupant = visible_occupant(session=session, occupant_id=occupant_id, site_ids=site_ids)
    if occupant.status != OccupantStatus.ACTIVE:
        raise InvalidInput(f"{occupant.name} has moved out; their faces are not kept")
    site = session.get(Site, occupant.site_id)
    assert site is not None
    return site


def add_photo(
    *,
    session: Session,
    occupant_id: int,
    actor: str,
    site_ids: set[int] | None,
    face: EnrolledPhoto,
    photo_sha256: str,
    same_face_similarity: float | None,
) -> FaceTemplate:
    """Keep an enrolled photo's face as a template of the occupant (gallery bump).

    Refused (:class:`PhotoRefused`, nothing written): a face of another model
    than the site's, a photo already enrolled for them, and (like the import's
    ``same_face`` check) a face that is another active occupant's.
    """
    site = photo_target(session=session, occupant_id=occupant_id, site_ids=site_ids)
    if face.model_id != site.model_id:
        raise PhotoRefused(
            "wrong_model",
            f"the site's gallery uses model {site.model_id!r} but this server's face engine is "
            f"{face.model_id!r}; templates of another model never reach its edges",
        )
    sources = (WEB_PHOTO_PREFIX + photo_sha256, "registry:" + photo_sha256)
    if session.scalar(
        select(FaceTemplate.id).where(
            FaceTemplate.occupant_id == occupant_id, FaceTemplate.source.in_(sources)
        )
    ):
        raise PhotoRefused("duplicate", "this photo is already one of their faces")
    vec = np.asarray(face.embedding, dtype=np.float32)
    if same_face_similarity is not None:
        _refuse_other_persons_face(session, site, occupant_id, vec, same_face_similarity)
    template = occupants.add_template(
        session=session,
        occupant_id=occupant_id,
        embedding=vec,
        model_id=face.model_id,
        quality=face.quality,
        source=WEB_PHOTO_PREFIX + photo_sha256,
        chip=face.chip,
    )
    record(
        session=session,
        actor=actor,
        action="occupant.photo_add",
        object_type="occupant",
        object_id=occupant_id,
        site_id=site.id,
        detail={
            "template_id": template.id,
            "quality": round(float(face.quality), 3),
            **({"warning": face.warning} if face.warning else {}),
            "via": "web",
        },
    )
    return template


def _refuse_other_persons_face(
    session: Session,
    site: Site,
    occupant_id: int,
    vec: npt.NDArray[np.float32],
    threshold: float,
) -> None:
    rows = session.execute(
        select(FaceTemplate.embedding, Occupant.name, Occupant.id)
        .join(Occupant, Occupant.id == FaceTemplate.occupant_id)
        .where(
            FaceTemplate.site_id == site.id,
            FaceTemplate.model_id == site.model_id,
            Occupant.status == OccupantStatus.ACTIVE,
            Occupant.id != occupant_id,
        )
    ).all()
    if not rows:
        return
    others = np.stack([np.frombuffer(r[0], dtype="<f4") for r in rows]).astype(np.float32)
    if others.shape[1] != vec.shape[0]:
        return
    sims = others @ vec
    best = int(np.argmax(sims))
    if float(sims[best]) >= threshold:
        raise PhotoRefused(
            "same_face",
            f"the face in this photo is registered occupant {rows[best][1]!r}'s "
            f"(similarity {float(sims[best]):.2f}); a photo of the wrong person?",
        )


def delete_template(
    *,
    session: Session,
    occupant_id: int,
    template_id: int,
    actor: str,
    site_ids: set[int] | None,
) -> None:
    """Delete one of an occupant's templates and its chip (gallery bump); audited."""
    occupant = visible_occupant(session=session, occupant_id=occupant_id, site_ids=site_ids)
    template = session.get(FaceTemplate, template_id)
    if template is None or template.occupant_id != occupant.id:
        raise NotFound(f"face {template_id} of occupant {occupant_id} does not exist")
    origin = template_origin(template.source)
    occupants.delete_template_ids(
        session=session, occupant_id=occupant.id, template_ids=[template_id]
    )
    record(
        session=session,
        actor=actor,
        action="face_template.delete",
        object_type="face_template",
        object_id=template_id,
        site_id=occupant.site_id,
        detail={"occupant_id": occupant.id, "origin": str(origin), "via": "web"},
    )


def today_in(session: Session, site_id: int) -> date:
    """Today's date in the site's timezone (the move-out form's default and bound)."""
    zone = session.scalar(
        select(ClusterSiteState.timezone).where(ClusterSiteState.site_id == site_id)
    )
    return utcnow().astimezone(site_zone(zone)).date()
