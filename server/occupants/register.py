"""The register's changes from the web: edit, move out, add or delete a face.

One service function per policy, each auditing itself; the web routes
(:mod:`server.web.register`) call them and commit once. Field values go
through the registry import's own parsers (:mod:`registry.fields`), so a phone
or a date the import would refuse is refused here with the same words. A photo
is enrolled by the import's engine and gates (:mod:`server.occupants.face_engine`,
loaded only where a photo arrives); this module receives the enrolled face,
never the photo, and keeps only its template and chip. The reads are
:mod:`server.occupants.directory`.
"""

from __future__ import annotations

import unicodedata
from typing import Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.errors import FieldError
from registry.fields import normalise_date, normalise_name, normalise_phone, normalise_role
from server.audit.service import record
from server.errors import InvalidInput, NotFound
from server.occupants import service as occupants
from server.occupants.directory import (
    WEB_PHOTO_PREFIX,
    template_origin,
    today_in,
    visible_occupant,
)
from server.occupants.enums import OccupantStatus
from server.occupants.errors import PhotoRefused
from server.occupants.models import FaceTemplate, Occupant
from server.sites.models import Site, Unit


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
    if any(unicodedata.category(c) == "Cc" for c in new_name):
        # NUL and other control characters: PostgreSQL refuses NUL (a 500), none belong.
        raise InvalidInput("name: holds control characters")
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
