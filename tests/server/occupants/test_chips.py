"""Registry face chips: sealed like the crops, made with case templates, gone with their
template, their occupant or the subject, and off for sites that keep photos in the office
(issue 14, the desk check; both databases)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from server.cases import outcomes
from server.cases.models import Case
from server.errors import InvalidInput
from server.occupants import chips
from server.occupants.models import FaceTemplate, Occupant
from server.occupants.service import add_template, delete_templates, upsert_occupant
from server.privacy.errors import CropDecryptFailed
from server.privacy.subject import erase_subject
from server.sites.models import Site
from server.sites.service import create_site, get_or_create_unit
from tests.server.clusters.support import new_session, work
from tests.server.conftest import DeviceCreds
from tests.server.helpers import unit_vector
from tests.web.world import face_jpeg, seed_person

MODEL = "buffalo_s"
CHIP = face_jpeg(5)


@pytest.fixture
def site(session: Session) -> Site:
    return create_site(session=session, name="S", model_id=MODEL)


def _template(session: Session, site: Site, name: str = "Wang", seed: int = 1) -> FaceTemplate:
    occ = upsert_occupant(session=session, site_id=site.id, name=name)
    return add_template(
        session=session,
        occupant_id=occ.id,
        embedding=unit_vector(seed),
        model_id=MODEL,
        source="registry:abc",
        chip=CHIP,
    )


def _raw_chip(session: Session, template_id: int) -> bytes | None:
    blob = session.scalar(select(FaceTemplate.chip).where(FaceTemplate.id == template_id))
    return None if blob is None else bytes(blob)


def test_a_chip_is_sealed_at_rest_and_bound_to_its_template(session: Session, site: Site) -> None:
    t = _template(session, site)
    raw = _raw_chip(session, t.id)
    assert raw is not None and CHIP not in raw and not raw.startswith(b"\xff\xd8")
    found = chips.get_chip(session=session, template_id=t.id)
    assert found is not None and found[1] == CHIP
    # Copied onto another template's row, it does not open.
    other = _template(session, site, name="Li", seed=2)
    other.chip, other.chip_key_id = raw, t.chip_key_id
    session.flush()
    with pytest.raises(CropDecryptFailed):
        chips.get_chip(session=session, template_id=other.id)
    assert [
        c.template_id for c in chips.occupant_chips(session=session, occupant_id=t.occupant_id)
    ] == [t.id]


def test_a_chip_must_be_a_small_jpeg(session: Session, site: Site) -> None:
    occ = upsert_occupant(session=session, site_id=site.id, name="Wang")
    with pytest.raises(InvalidInput, match="JPEG"):
        add_template(
            session=session,
            occupant_id=occ.id,
            embedding=unit_vector(1),
            model_id=MODEL,
            chip=b"\x89PNG....",
        )
    with pytest.raises(InvalidInput, match="at most"):
        chips.check_chip(b"\xff\xd8\xff" + bytes(chips.MAX_CHIP_BYTES))


def test_chips_go_with_template_deletion_occupant_deletion_and_subject_erase(
    session: Session, site: Site
) -> None:
    a = _template(session, site, "A", 1)
    b = _template(session, site, "B", 2)
    c = _template(session, site, "C", 3)
    delete_templates(session=session, occupant_id=a.occupant_id)
    occupant_b = b.occupant_id
    session.delete(session.get(Occupant, occupant_b))  # the occupant's deletion
    session.flush()
    erase_subject(session=session, occupant_id=c.occupant_id, actor="user:1")
    session.flush()
    left = session.scalar(
        select(func.count()).select_from(FaceTemplate).where(FaceTemplate.chip.is_not(None))
    )
    assert left == 0
    assert chips.occupant_chips(session=session, occupant_id=occupant_b) == []


def test_a_site_that_keeps_photos_in_the_office_keeps_no_chips(
    session: Session, site: Site
) -> None:
    kept = _template(session, site, "A", 1)
    dropped = chips.set_registry_chips(session=session, site_id=site.id, enabled=False)
    assert dropped == 1
    session.expire_all()
    assert _raw_chip(session, kept.id) is None
    later = _template(session, site, "B", 2)  # the import sends one: not stored
    assert _raw_chip(session, later.id) is None
    assert chips.occupant_chips(session=session, occupant_id=later.occupant_id) == []
    assert not chips.chips_enabled(session=session, site_id=site.id)


def test_case_made_templates_keep_the_door_crop_they_came_from(
    engine: Engine, device: DeviceCreds
) -> None:
    seed_person(engine, device.device_id, 21, [0, 1, 2])  # sightings with door crops
    work(engine)
    with new_session(engine) as s:
        cid = s.scalar(select(Case.id).where(Case.status == "open"))
        assert cid is not None
        unit = get_or_create_unit(session=s, site_id=device.site_id, address_key="1-101")
        s.commit()
        occupant = outcomes.enrol_from_case(
            session=s, case_id=cid, unit_id=unit.id, name="Zhang San", actor="user:1"
        )
        s.commit()
        refs = chips.occupant_chips(session=s, occupant_id=occupant.id)
        assert len(refs) == 3 and all(r.from_case for r in refs)
        found = chips.get_chip(session=s, template_id=refs[0].template_id)
        assert found is not None and found[1].startswith(b"\xff\xd8\xff")
        site = s.get(Site, device.site_id)
        assert site is not None and site.registry_chips
