"""Registry face chips: the small aligned face each template was made from.

The desk check needs the registered person's face beside the door crops: a
manager compares faces, not names. Each template may carry a chip (a 112x112
aligned face, JPEG) made by the office tool from the registry photo, or the
crop a case-made template came from. Chips are sealed with AES-GCM like the
crops (:mod:`server.privacy.crypto`), bound to their template's id, and live
in the template's row, so deleting a template, erasing the subject or
deleting the occupant removes them. A site with ``registry_chips`` off (photos
stay in the office only) stores none and drops those it had.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.errors import InvalidInput
from server.occupants.models import FaceTemplate, Occupant
from server.privacy.crypto import CropKeyring, current_keyring
from server.sites.models import Site

JPEG_MAGIC = b"\xff\xd8\xff"
MAX_CHIP_BYTES = 64 * 1024
"""A 112x112 JPEG is 3-8 KB; anything near this bound is not a chip."""

MAX_CHIPS_SHOWN = 6
"""Chips of one occupant shown on a case page (newest registry ones first)."""


def _aad(template_id: int) -> bytes:
    # Bound to its row: copied onto another template, it does not open.
    return f"template:{template_id}".encode()


def check_chip(jpeg: bytes) -> bytes:
    """The chip if it is a JPEG within :data:`MAX_CHIP_BYTES`; :class:`InvalidInput` otherwise."""
    if not jpeg.startswith(JPEG_MAGIC):
        raise InvalidInput("a face chip must be a JPEG image")
    if len(jpeg) > MAX_CHIP_BYTES:
        raise InvalidInput(f"a face chip is at most {MAX_CHIP_BYTES} bytes, not {len(jpeg)}")
    return jpeg


def chips_enabled(*, session: Session, site_id: int) -> bool:
    """Whether the site keeps registry chips on the server (its ``registry_chips`` switch)."""
    site = session.get(Site, site_id)
    return bool(site is not None and site.registry_chips)


def put_chip(
    *,
    session: Session,
    template: FaceTemplate,
    jpeg: bytes,
    keyring: CropKeyring | None = None,
) -> bool:
    """Seal and store a template's chip; False (nothing stored) when the site keeps none."""
    check_chip(jpeg)
    if not chips_enabled(session=session, site_id=template.site_id):
        return False
    if template.id is None:
        session.flush()
    key_id, blob = (keyring or current_keyring()).seal(jpeg, aad=_aad(template.id))
    template.chip = blob
    template.chip_key_id = key_id
    session.flush()
    return True


def get_chip(
    *, session: Session, template_id: int, keyring: CropKeyring | None = None
) -> tuple[FaceTemplate, bytes] | None:
    """A template and its chip's JPEG, or None (no such template, or no chip)."""
    row = session.execute(
        select(FaceTemplate.chip, FaceTemplate.chip_key_id).where(FaceTemplate.id == template_id)
    ).first()
    if row is None or row.chip is None or row.chip_key_id is None:
        return None
    template = session.get(FaceTemplate, template_id)
    assert template is not None
    ring = keyring or current_keyring()
    jpeg = ring.open(row.chip_key_id, bytes(row.chip), aad=_aad(template_id))
    return template, jpeg


@dataclass(frozen=True, slots=True)
class ChipRef:
    """One chip to show: its template, where it came from and when."""

    template_id: int
    source: str
    from_case: bool


def occupant_chips(
    *, session: Session, occupant_id: int, limit: int = MAX_CHIPS_SHOWN
) -> list[ChipRef]:
    """The occupant's templates that have a chip: registry photos first, then case-made."""
    rows = session.execute(
        select(FaceTemplate.id, FaceTemplate.source)
        .join(Occupant, Occupant.id == FaceTemplate.occupant_id)
        .join(Site, Site.id == FaceTemplate.site_id)
        .where(
            FaceTemplate.occupant_id == occupant_id,
            FaceTemplate.chip_key_id.is_not(None),
            Site.registry_chips.is_(True),
        )
        .order_by(FaceTemplate.id.desc())
    ).all()
    refs = [
        ChipRef(
            template_id=r.id,
            source=r.source,
            from_case=r.source.startswith(("case:", "cluster:")),
        )
        for r in rows
    ]
    refs.sort(key=lambda c: c.from_case)  # stable: registry photos first, newest first
    return refs[:limit]


def drop_site_chips(*, session: Session, site_id: int) -> int:
    """Delete every chip of a site's templates (the site turned chips off); returns how many."""
    result = session.execute(
        update(FaceTemplate)
        .where(FaceTemplate.site_id == site_id, FaceTemplate.chip_key_id.is_not(None))
        .values(chip=None, chip_key_id=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def set_registry_chips(*, session: Session, site_id: int, enabled: bool) -> int:
    """Turn a site's chips on or off; off drops the stored ones. Returns chips dropped."""
    site = session.get(Site, site_id)
    if site is None:
        raise InvalidInput(f"site {site_id} does not exist")
    site.registry_chips = enabled
    session.flush()
    return 0 if enabled else drop_site_chips(session=session, site_id=site_id)
