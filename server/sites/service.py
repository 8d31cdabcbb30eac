"""Sites, buildings, entrances and units."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.errors import Conflict, InvalidInput, NotFound
from server.sites.models import Building, Entrance, Site, Unit

_MAX_ID = 2**31 - 1  # sites.id is a 32-bit INTEGER on PostgreSQL: a larger one is no site


def normalise_address_key(key: str) -> str:
    """Fold width and case and drop spaces, so equal keys compare equal."""
    # The registry importer builds the real standard key (registry.address);
    # this only guards against cosmetic differences from other callers.
    folded = unicodedata.normalize("NFKC", key).upper()
    return "".join(folded.split())


def create_site(*, session: Session, name: str, model_id: str) -> Site:
    """Create a site; :class:`Conflict` if the name is taken."""
    name = name.strip()
    if not name:
        raise InvalidInput("site name is empty")
    if session.scalar(select(Site.id).where(Site.name == name)) is not None:
        raise Conflict(f"site {name!r} already exists")
    site = Site(name=name, model_id=model_id, gallery_version=1)
    session.add(site)
    session.flush()
    return site


def get_site(*, session: Session, site_id: int) -> Site:
    """The site with this id; :class:`NotFound` otherwise."""
    site = session.get(Site, site_id)
    if site is None:
        raise NotFound(f"site {site_id} does not exist")
    return site


def resolve_site(*, session: Session, ref: str, visible: Collection[int] | None = None) -> Site:
    """A site by name, or by numeric id (CLI convenience).

    ``visible``: the ids of the sites the caller may see (None: all). Any other
    site is looked past and answers exactly as a missing one (the same
    :class:`NotFound`, the same text), so a caller cannot learn that another
    tenant's site exists (issue 18, finding 9).
    """
    if "\x00" in ref:  # PostgreSQL refuses NUL in text (a 500); no site has one
        raise NotFound("site names hold no NUL characters")
    query = select(Site).where(Site.name == ref)
    if visible is not None:
        query = query.where(Site.id.in_(sorted(visible)))
    site = session.scalar(query)
    # ASCII digits only, and few: int() refuses "²" and 5,000-digit strings (a 500).
    if site is None and ref.isascii() and ref.isdigit() and len(ref) <= 10 and int(ref) <= _MAX_ID:
        by_id = session.get(Site, int(ref))
        if by_id is not None and (visible is None or by_id.id in visible):
            site = by_id
    if site is None:
        raise NotFound(f"site {ref!r} does not exist")
    return site


def list_sites(*, session: Session) -> list[Site]:
    """All sites, by id."""
    return list(session.scalars(select(Site).order_by(Site.id)))


def get_or_create_building(*, session: Session, site_id: int, name: str) -> Building:
    """The site's building of this name, created if missing."""
    building = session.scalar(
        select(Building).where(Building.site_id == site_id, Building.name == name)
    )
    if building is None:
        building = Building(site_id=site_id, name=name)
        session.add(building)
        session.flush()
    return building


def get_or_create_entrance(
    *, session: Session, site_id: int, name: str, building_id: int | None = None
) -> Entrance:
    """The site's entrance of this name, created if missing."""
    entrance = session.scalar(
        select(Entrance).where(Entrance.site_id == site_id, Entrance.name == name)
    )
    if entrance is None:
        entrance = Entrance(site_id=site_id, name=name, building_id=building_id)
        session.add(entrance)
        session.flush()
    return entrance


def get_or_create_unit(
    *,
    session: Session,
    site_id: int,
    address_key: str,
    address: str | None = None,
    building_id: int | None = None,
) -> Unit:
    """The site's unit with this standard address key, created if missing."""
    key = normalise_address_key(address_key)
    if not key:
        raise InvalidInput("unit address key is empty")
    unit = session.scalar(select(Unit).where(Unit.site_id == site_id, Unit.address_key == key))
    if unit is None:
        unit = Unit(
            site_id=site_id, address_key=key, address=address or key, building_id=building_id
        )
        session.add(unit)
        session.flush()
    return unit


def bump_gallery_version(*, session: Session, site_id: int) -> int:
    """Increment the site's gallery version (the edges' ETag) and return the new value."""
    # One UPDATE ... SET v = v + 1: two concurrent bumps never lose one.
    session.execute(
        update(Site).where(Site.id == site_id).values(gallery_version=Site.gallery_version + 1)
    )
    version = session.scalar(select(Site.gallery_version).where(Site.id == site_id))
    if version is None:
        raise NotFound(f"site {site_id} does not exist")
    site = session.get(Site, site_id)
    if site is not None:
        session.refresh(site, ["gallery_version"])
    return version
