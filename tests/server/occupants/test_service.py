"""Occupant and template services: upsert keys, gallery version bumps."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.orm import Session

from server.errors import InvalidInput, NotFound
from server.occupants.service import (
    add_template,
    delete_templates,
    gallery_entries,
    upsert_occupant,
)
from server.security import hash_id_number
from server.sites.models import Site
from server.sites.service import create_site, get_or_create_unit
from tests.server.helpers import unit_vector


@pytest.fixture
def site(session: Session) -> Site:
    return create_site(session=session, name="S", model_id="buffalo_s")


def test_upsert_matches_by_external_id_then_id_hash_then_unit_and_name(
    session: Session, site: Site
) -> None:
    unit = get_or_create_unit(session=session, site_id=site.id, address_key="3-2-1203")
    a = upsert_occupant(session=session, site_id=site.id, name="Wang", external_id="E1")
    again = upsert_occupant(
        session=session, site_id=site.id, name="Wang Wei", external_id="E1", role="owner"
    )
    assert again.id == a.id and again.name == "Wang Wei" and again.role == "owner"

    digest, last4 = hash_id_number("11010519491231002X", key="k")
    b = upsert_occupant(session=session, site_id=site.id, name="Li", id_hash=digest, id_last4=last4)
    assert upsert_occupant(session=session, site_id=site.id, name="Li", id_hash=digest).id == b.id
    assert b.id_last4 == "002X"

    c = upsert_occupant(session=session, site_id=site.id, name="Zhao", unit_id=unit.id)
    assert (
        upsert_occupant(session=session, site_id=site.id, name="Zhao", unit_id=unit.id).id == c.id
    )
    assert len({a.id, b.id, c.id}) == 3


def test_id_hash_is_keyed() -> None:
    one, _ = hash_id_number("110105194912310021", key="k1")
    assert one == hash_id_number("1101 0519 4912 3100 21", key="k1")[0]
    assert one != hash_id_number("110105194912310021", key="k2")[0]
    assert "110105" not in one


def test_upsert_validates(session: Session, site: Site) -> None:
    with pytest.raises(InvalidInput):
        upsert_occupant(session=session, site_id=site.id, name="X", role="landlord")
    with pytest.raises(InvalidInput):
        upsert_occupant(session=session, site_id=site.id, name=" ")
    other = create_site(session=session, name="T", model_id="buffalo_s")
    foreign_unit = get_or_create_unit(session=session, site_id=other.id, address_key="1-1-101")
    with pytest.raises(InvalidInput, match="not a unit of site"):
        upsert_occupant(session=session, site_id=site.id, name="X", unit_id=foreign_unit.id)


def test_template_changes_bump_gallery_version(session: Session, site: Site) -> None:
    occ = upsert_occupant(session=session, site_id=site.id, name="Wang")
    v0 = site.gallery_version
    tpl = add_template(
        session=session, occupant_id=occ.id, embedding=unit_vector(1), model_id="buffalo_s"
    )
    assert site.gallery_version == v0 + 1
    entries = gallery_entries(session=session, site=site)
    assert [e.template_id for e in entries] == [tpl.id]
    np.testing.assert_array_equal(np.frombuffer(entries[0].embedding, "<f4"), unit_vector(1))

    upsert_occupant(session=session, site_id=site.id, name="Wang", status="moved_out")
    assert site.gallery_version == v0 + 2
    assert gallery_entries(session=session, site=site) == []

    assert delete_templates(session=session, occupant_id=occ.id) == 1
    assert site.gallery_version == v0 + 3
    assert delete_templates(session=session, occupant_id=occ.id) == 0
    assert site.gallery_version == v0 + 3


def test_add_template_validates(session: Session, site: Site) -> None:
    occ = upsert_occupant(session=session, site_id=site.id, name="Wang")
    bad = unit_vector(1).copy()
    bad[3] = np.nan
    with pytest.raises(InvalidInput):
        add_template(session=session, occupant_id=occ.id, embedding=bad, model_id="buffalo_s")
    with pytest.raises(InvalidInput):
        add_template(session=session, occupant_id=occ.id, embedding=unit_vector(1), model_id="")
    with pytest.raises(NotFound):
        add_template(session=session, occupant_id=999, embedding=unit_vector(1), model_id="m")
