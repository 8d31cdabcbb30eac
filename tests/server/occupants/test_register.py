"""The register's services (server/occupants/directory.py and register.py) on SQLite and
PostgreSQL.

Faces here are unit vectors standing in for the engine's output (the services
receive an enrolled face, never a photo); the real engine is exercised by
tests/web/test_register.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.models import AuditEvent
from server.errors import InvalidInput, NotFound
from server.occupants import directory, register
from server.occupants.enums import OccupantStatus, TemplateOrigin
from server.occupants.errors import PhotoRefused
from server.occupants.models import FaceTemplate, Occupant
from server.occupants.service import add_template, gallery_entries, upsert_occupant
from server.sites.models import Site
from server.sites.service import create_site, get_or_create_building, get_or_create_unit
from tests.server.helpers import unit_vector

MODEL = "buffalo_s/w600k_mbf"


@dataclass(frozen=True)
class Face:
    """An enrolled face as registry.enrol.Enrolled carries it."""

    embedding: npt.NDArray[np.float32]
    quality: float = 0.8
    model_id: str = MODEL
    chip: bytes | None = None
    warning: str = ""


@dataclass(frozen=True)
class World:
    site: Site
    other: Site
    unit: int
    unit2: int
    wang: int
    li: int
    zhao: int
    """An occupant of the other site."""


@pytest.fixture
def w(session: Session) -> World:
    site = create_site(session=session, name="S", model_id=MODEL)
    other = create_site(session=session, name="T", model_id=MODEL)
    b = get_or_create_building(session=session, site_id=site.id, name="3幢")
    u1 = get_or_create_unit(
        session=session,
        site_id=site.id,
        address_key="3-1-502",
        address="3幢1单元502",
        building_id=b.id,
    )
    u2 = get_or_create_unit(
        session=session,
        site_id=site.id,
        address_key="3-1-601",
        address="3幢1单元601",
        building_id=b.id,
    )
    get_or_create_unit(session=session, site_id=site.id, address_key="9-9-9")  # no building
    wang = upsert_occupant(
        session=session, site_id=site.id, name="王芳", unit_id=u1.id, phone="+8613812345678"
    )
    li = upsert_occupant(
        session=session, site_id=site.id, name="李_雷", unit_id=u2.id, phone="+8613900001111"
    )
    ou = get_or_create_unit(session=session, site_id=other.id, address_key="1-1-101")
    zhao = upsert_occupant(
        session=session, site_id=other.id, name="赵敏", unit_id=ou.id, phone="+8613700005678"
    )
    session.flush()
    return World(site, other, u1.id, u2.id, wang.id, li.id, zhao.id)


def _actions(session: Session, action: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_buildings_and_units_count_active_occupants(session: Session, w: World) -> None:
    rows = directory.buildings(session=session, site_id=w.site.id)
    assert [(b.name, b.units, b.occupants) for b in rows] == [("3幢", 2, 2), ("", 1, 0)]
    units = directory.units(session=session, site_id=w.site.id, building_id=rows[0].id)
    assert [(u.address, u.occupants) for u in units] == [("3幢1单元502", 1), ("3幢1单元601", 1)]
    unplaced = directory.units(session=session, site_id=w.site.id, unplaced=True)
    assert [u.address for u in unplaced] == ["9-9-9"]


def test_search_by_phone_tail_name_unit_within_one_site(session: Session, w: World) -> None:
    def names(q: str) -> list[str]:
        return [r.name for r in directory.search(session=session, site_id=w.site.id, q=q)]

    assert names("5678") == ["王芳"]  # 赵敏 has the same tail, on another site
    assert names("王") == ["王芳"]
    assert names("601") == ["李_雷"]
    assert names("_") == ["李_雷"]  # a LIKE wildcard matches itself only
    assert names("12") == []  # two digits are not a phone tail
    assert sorted(names("3-1")) == ["李_雷", "王芳"]
    assert names("+86 138-1234-5678") == ["王芳"]  # a whole number, as people write it
    assert names("王\x00") == []  # PostgreSQL would refuse the NUL: nobody has one
    row = directory.search(session=session, site_id=w.site.id, q="5678")[0]
    assert row.phone_tail == "5678" and row.unit == "3幢1单元502"


def test_another_sites_occupant_does_not_exist_for_a_scoped_caller(
    session: Session, w: World
) -> None:
    with pytest.raises(NotFound):
        directory.occupant_page(session=session, occupant_id=w.zhao, site_ids={w.site.id})
    with pytest.raises(NotFound):
        register.move_out(
            session=session,
            occupant_id=w.zhao,
            actor="user:1",
            site_ids={w.site.id},
            on="2025-01-01",
        )
    page = directory.occupant_page(session=session, occupant_id=w.zhao, site_ids=None)
    assert page.occupant.name == "赵敏"


def test_edit_validates_with_the_import_parsers_and_audits_field_names(
    session: Session, w: World
) -> None:
    def edit(**over: object) -> list[str]:
        fields: dict[str, object] = {
            "name": "王芳",
            "role": "tenant",
            "phone": "",
            "move_in": "",
            "unit_id": w.unit,
        }
        fields.update(over)
        return register.edit_occupant(
            session=session,
            occupant_id=w.wang,
            actor="user:1",
            site_ids=None,
            name=str(fields["name"]),
            role=str(fields["role"]),
            phone=str(fields["phone"]),
            move_in=str(fields["move_in"]),
            unit_id=fields["unit_id"] if isinstance(fields["unit_id"], int) else None,
        )

    for bad, message in (
        ({"phone": "1381234"}, "phone"),
        ({"role": "boss"}, "role"),
        ({"move_in": "2024-02-30"}, "does not exist"),
        ({"name": "  "}, "name is empty"),
        ({"name": "王\x00芳"}, "control characters"),
        ({"unit_id": 10**9}, "not a unit of this site"),
        ({"unit_id": None}, "choose the occupant's unit"),
    ):
        with pytest.raises(InvalidInput, match=message):
            edit(**bad)
    occ = session.get(Occupant, w.wang)
    assert occ is not None and occ.phone == "+8613812345678" and occ.role == "tenant"
    # The import's spellings are accepted and normalised the same way.
    changed = edit(phone="+86 139-0000-2222", move_in="2023/5/1", role="业主")
    assert changed == ["role", "phone", "move_in"]
    assert (occ.role, occ.phone, occ.move_in) == ("owner", "+8613900002222", date(2023, 5, 1))
    (event,) = _actions(session, "occupant.edit")
    assert event.detail == {"fields": ["role", "phone", "move_in"], "via": "web"}
    # Nothing changed: nothing audited.
    assert edit(phone="13900002222", move_in="2023-05-01", role="owner") == []
    assert len(_actions(session, "occupant.edit")) == 1


def test_move_out_deletes_their_templates_and_bumps_the_gallery(session: Session, w: World) -> None:
    add_template(session=session, occupant_id=w.wang, embedding=unit_vector(1), model_id=MODEL)
    session.refresh(w.site)
    version = w.site.gallery_version

    def move_out(on: str) -> int:
        return register.move_out(
            session=session, occupant_id=w.wang, actor="user:1", site_ids={w.site.id}, on=on
        )

    tomorrow = (directory.today_in(session, w.site.id) + timedelta(days=1)).isoformat()
    with pytest.raises(InvalidInput, match="in the future"):
        move_out(tomorrow)
    with pytest.raises(InvalidInput, match="give the date"):
        move_out("")
    assert move_out("2025-06-30") == 1
    occ = session.get(Occupant, w.wang)
    assert occ is not None and occ.status == OccupantStatus.MOVED_OUT
    assert occ.move_out == date(2025, 6, 30)
    session.refresh(w.site)
    assert w.site.gallery_version == version + 1
    assert gallery_entries(session=session, site=w.site) == []
    assert (
        session.scalars(select(FaceTemplate).where(FaceTemplate.occupant_id == w.wang)).all() == []
    )
    (event,) = _actions(session, "occupant.move_out")
    assert event.detail == {"on": "2025-06-30", "templates": 1, "via": "web"}
    with pytest.raises(InvalidInput, match="already moved out"):
        move_out("2025-06-30")
    with pytest.raises(InvalidInput, match="moved out"):
        register.photo_target(session=session, occupant_id=w.wang, site_ids=None)


def test_add_photo_keeps_the_face_and_refuses_model_duplicate_and_anothers_face(
    session: Session, w: World
) -> None:
    def add(occupant_id: int, face: Face, sha: str, threshold: float | None = 0.8) -> FaceTemplate:
        return register.add_photo(
            session=session,
            occupant_id=occupant_id,
            actor="user:1",
            site_ids={w.site.id},
            face=face,
            photo_sha256=sha,
            same_face_similarity=threshold,
        )

    face = Face(unit_vector(5))
    session.refresh(w.site)
    version = w.site.gallery_version
    template = add(w.wang, face, "ab" * 32)
    assert template.source == "web:" + "ab" * 32
    # told apart from the office import's photos (a later import keeps these)
    assert directory.template_origin(template.source) == TemplateOrigin.WEB
    assert directory.template_origin("registry:" + "ab" * 32) == TemplateOrigin.REGISTRY
    session.refresh(w.site)
    assert w.site.gallery_version == version + 1
    (event,) = _actions(session, "occupant.photo_add")
    assert event.detail is not None and event.detail["template_id"] == template.id

    def refused(occupant_id: int, f: Face, sha: str) -> str:
        with pytest.raises(PhotoRefused) as info:
            add(occupant_id, f, sha)
        return info.value.reason

    assert refused(w.wang, face, "ab" * 32) == "duplicate"
    assert refused(w.wang, Face(unit_vector(6), model_id="sface/x"), "cd" * 32) == "wrong_model"
    assert refused(w.li, Face(unit_vector(5)), "ef" * 32) == "same_face"  # 王芳's face
    # Another person's face under 李_雷 is fine; with the check off (None), so is hers.
    add(w.li, Face(unit_vector(7)), "01" * 32)
    add(w.li, Face(unit_vector(5)), "02" * 32, threshold=None)
    assert len(session.scalars(select(FaceTemplate)).all()) == 3
    assert len(_actions(session, "occupant.photo_add")) == 3


def test_delete_template_and_origins_on_the_page(session: Session, w: World) -> None:
    a = add_template(
        session=session,
        occupant_id=w.wang,
        embedding=unit_vector(1),
        model_id=MODEL,
        source="registry:" + "0" * 64,
    )
    b = add_template(
        session=session,
        occupant_id=w.wang,
        embedding=unit_vector(2),
        model_id=MODEL,
        source="case:7",
    )
    c = add_template(
        session=session,
        occupant_id=w.wang,
        embedding=unit_vector(3),
        model_id=MODEL,
        source="cluster:9",
    )
    page = directory.view_occupant(
        session=session, occupant_id=w.wang, actor="user:1", site_ids=None
    )
    assert [t.origin for t in page.templates] == [
        TemplateOrigin.REGISTRY,
        TemplateOrigin.CASE,
        TemplateOrigin.ADAPTIVE,
    ]
    assert len(_actions(session, "occupant.view")) == 1
    with pytest.raises(NotFound):
        register.delete_template(
            session=session, occupant_id=w.li, template_id=a.id, actor="user:1", site_ids=None
        )
    register.delete_template(
        session=session, occupant_id=w.wang, template_id=b.id, actor="user:1", site_ids=None
    )
    left = session.scalars(select(FaceTemplate.id).where(FaceTemplate.occupant_id == w.wang)).all()
    assert sorted(left) == sorted([a.id, c.id])
    (event,) = _actions(session, "face_template.delete")
    assert event.detail == {"occupant_id": w.wang, "origin": "case", "via": "web"}
