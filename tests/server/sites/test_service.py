"""Site services: names, units keyed by standard address."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from server.errors import Conflict, NotFound
from server.sites.service import (
    bump_gallery_version,
    create_site,
    get_or_create_entrance,
    get_or_create_unit,
    resolve_site,
)


def test_site_names_are_unique_and_resolvable(session: Session) -> None:
    site = create_site(session=session, name="Sunny Court", model_id="buffalo_s")
    with pytest.raises(Conflict):
        create_site(session=session, name="Sunny Court", model_id="buffalo_s")
    assert resolve_site(session=session, ref="Sunny Court").id == site.id
    assert resolve_site(session=session, ref=str(site.id)).id == site.id
    with pytest.raises(NotFound):
        resolve_site(session=session, ref="Elsewhere")


def test_unit_key_is_unique_per_site_after_normalising(session: Session) -> None:
    a = create_site(session=session, name="A", model_id="m")
    b = create_site(session=session, name="B", model_id="m")
    u1 = get_or_create_unit(session=session, site_id=a.id, address_key="3-2-1203", address="3幢")
    # Full-width digits and stray spaces are the same key.
    u2 = get_or_create_unit(session=session, site_id=a.id, address_key="３-２-１２０３ ")
    assert u1.id == u2.id and u1.address == "3幢"
    u3 = get_or_create_unit(session=session, site_id=b.id, address_key="3-2-1203")
    assert u3.id != u1.id


def test_entrances_and_gallery_bump(session: Session) -> None:
    site = create_site(session=session, name="A", model_id="m")
    e1 = get_or_create_entrance(session=session, site_id=site.id, name="north gate")
    assert get_or_create_entrance(session=session, site_id=site.id, name="north gate").id == e1.id
    v = site.gallery_version
    assert bump_gallery_version(session=session, site_id=site.id) == v + 1
    assert site.gallery_version == v + 1
    with pytest.raises(NotFound):
        bump_gallery_version(session=session, site_id=9999)
