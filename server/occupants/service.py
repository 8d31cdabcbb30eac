"""Occupants and face templates. Every template change bumps the site's gallery version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.embeddings import check_embedding, model_dimension
from server.errors import InvalidInput, NotFound
from server.occupants.chips import put_chip
from server.occupants.enums import OccupantStatus
from server.occupants.models import FaceTemplate, Occupant
from server.sites.models import Site, Unit
from server.sites.service import bump_gallery_version

ROLES = ("owner", "tenant", "family")


@dataclass(frozen=True, slots=True)
class GalleryEntry:
    """One template as the site's edges receive it."""

    template_id: int
    occupant_id: int
    embedding: bytes


def upsert_occupant(
    *,
    session: Session,
    site_id: int,
    name: str,
    unit_id: int | None = None,
    role: str = "tenant",
    phone: str | None = None,
    external_id: str | None = None,
    id_hash: str | None = None,
    id_last4: str | None = None,
    move_in: date | None = None,
    move_out: date | None = None,
    status: str = OccupantStatus.ACTIVE,
    consent_at: datetime | None = None,
    consent_ref: str | None = None,
    notice_given_at: datetime | None = None,
) -> Occupant:
    """Create or update an occupant: matched by external id, else ID hash, else (unit, name).

    All other fields are set as given; ``external_id``, ``id_hash`` and
    ``id_last4`` left None keep their stored values. Pass ``id_hash``/``id_last4``
    from :func:`server.security.hash_id_number`, never a plain ID number.
    Moving out (or back in) bumps the gallery version.
    """
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {ROLES}, not {role!r}")
    if status not in tuple(OccupantStatus):
        raise InvalidInput(
            f"status must be one of {tuple(map(str, OccupantStatus))}, not {status!r}"
        )
    if not name.strip():
        raise InvalidInput("occupant name is empty")
    if id_last4 is not None and len(id_last4) > 4:
        raise InvalidInput("id_last4 holds more than 4 characters")
    if unit_id is not None:
        unit = session.get(Unit, unit_id)
        if unit is None or unit.site_id != site_id:
            raise InvalidInput(f"unit {unit_id} is not a unit of site {site_id}")

    occupant = None
    if external_id is not None:
        occupant = session.scalar(
            select(Occupant).where(Occupant.site_id == site_id, Occupant.external_id == external_id)
        )
    if occupant is None and id_hash is not None:
        occupant = session.scalar(
            select(Occupant).where(Occupant.site_id == site_id, Occupant.id_hash == id_hash)
        )
    if occupant is None and external_id is None and id_hash is None:
        same_unit = Occupant.unit_id.is_(None) if unit_id is None else Occupant.unit_id == unit_id
        occupant = session.scalar(
            select(Occupant).where(Occupant.site_id == site_id, same_unit, Occupant.name == name)
        )
    if occupant is None:
        occupant = Occupant(site_id=site_id, name=name, status=status)
        session.add(occupant)
    status_changed = occupant.status != status
    occupant.name = name
    occupant.unit_id = unit_id
    occupant.role = role
    occupant.phone = phone
    # Identity keys are only ever added or replaced, never wiped by a caller
    # that did not know them (e.g. a re-import without the ID column).
    if external_id is not None:
        occupant.external_id = external_id
    if id_hash is not None:
        occupant.id_hash = id_hash
    if id_last4 is not None:
        occupant.id_last4 = id_last4
    occupant.move_in = move_in
    occupant.move_out = move_out
    occupant.status = status
    occupant.consent_at = consent_at
    occupant.consent_ref = consent_ref
    occupant.notice_given_at = notice_given_at
    session.flush()
    if status_changed and occupant.id is not None and _has_templates(session, occupant.id):
        # Moved-out occupants leave the gallery; edges must drop them.
        bump_gallery_version(session=session, site_id=site_id)
    return occupant


def create_occupant(
    *,
    session: Session,
    site_id: int,
    name: str,
    unit_id: int,
    role: str = "tenant",
    phone: str | None = None,
) -> Occupant:
    """A new occupant of a unit, never matched to an existing one.

    Enrolment from a case uses this: the same name in the same unit is not the
    same person (王芳 is the most common name in China), so only a manager's
    explicit pick of an existing occupant adds faces to them.
    """
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {ROLES}, not {role!r}")
    if not name.strip():
        raise InvalidInput("occupant name is empty")
    unit = session.get(Unit, unit_id)
    if unit is None or unit.site_id != site_id:
        raise InvalidInput(f"unit {unit_id} is not a unit of site {site_id}")
    occupant = Occupant(
        site_id=site_id,
        name=name,
        unit_id=unit_id,
        role=role,
        phone=phone,
        status=OccupantStatus.ACTIVE,
    )
    session.add(occupant)
    session.flush()
    return occupant


def _has_templates(session: Session, occupant_id: int) -> bool:
    return (
        session.scalar(select(FaceTemplate.id).where(FaceTemplate.occupant_id == occupant_id))
        is not None
    )


def get_occupant(*, session: Session, occupant_id: int) -> Occupant:
    """The occupant with this id; :class:`NotFound` otherwise."""
    occupant = session.get(Occupant, occupant_id)
    if occupant is None:
        raise NotFound(f"occupant {occupant_id} does not exist")
    return occupant


def add_template(
    *,
    session: Session,
    occupant_id: int,
    embedding: npt.NDArray[np.float32],
    model_id: str,
    quality: float = 0.0,
    source: str = "",
    bump: bool = True,
    chip: bytes | None = None,
) -> FaceTemplate:
    """Store one face embedding for an occupant and bump the site's gallery version.

    ``bump=False`` lets a bulk caller (the registry import) bump once at the end.
    ``chip``: the aligned face JPEG it was made from, kept sealed for the desk
    check unless the site keeps photos in the office only (:mod:`server.occupants.chips`).
    """
    occupant = get_occupant(session=session, occupant_id=occupant_id)
    if not model_id:
        raise InvalidInput("model_id is empty")
    what = f"embedding of {source}" if source else "embedding"
    vec = check_embedding(embedding, dim=model_dimension(session, model_id), what=what)
    template = FaceTemplate(
        occupant_id=occupant.id,
        site_id=occupant.site_id,
        embedding=vec.astype("<f4").tobytes(),
        model_id=model_id,
        quality=float(quality),
        source=source,
    )
    session.add(template)
    session.flush()
    if chip is not None:
        put_chip(session=session, template=template, jpeg=chip)
    if bump:
        bump_gallery_version(session=session, site_id=occupant.site_id)
    return template


def delete_template_ids(*, session: Session, occupant_id: int, template_ids: list[int]) -> int:
    """Delete these templates of one occupant (their chips go with them); bumps if any."""
    occupant = get_occupant(session=session, occupant_id=occupant_id)
    if not template_ids:
        return 0
    result = session.execute(
        delete(FaceTemplate).where(
            FaceTemplate.occupant_id == occupant_id, FaceTemplate.id.in_(template_ids)
        )
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        bump_gallery_version(session=session, site_id=occupant.site_id)
    return count


def delete_templates(*, session: Session, occupant_id: int) -> int:
    """Delete all of an occupant's templates (deletion on request); bumps the gallery if any."""
    occupant = get_occupant(session=session, occupant_id=occupant_id)
    result = session.execute(delete(FaceTemplate).where(FaceTemplate.occupant_id == occupant_id))
    count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        bump_gallery_version(session=session, site_id=occupant.site_id)
    return count


def gallery_entries(*, session: Session, site: Site) -> list[GalleryEntry]:
    """Templates of the site's active occupants made with the site's model."""
    rows = session.execute(
        select(FaceTemplate.id, FaceTemplate.occupant_id, FaceTemplate.embedding)
        .join(Occupant, Occupant.id == FaceTemplate.occupant_id)
        .where(
            FaceTemplate.site_id == site.id,
            FaceTemplate.model_id == site.model_id,
            Occupant.status == OccupantStatus.ACTIVE,
        )
        .order_by(FaceTemplate.id)
    )
    return [GalleryEntry(template_id=r[0], occupant_id=r[1], embedding=r[2]) for r in rows]
