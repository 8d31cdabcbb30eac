"""Registry face chips on the web: shown to the site's users only, every view audited,
and a site that keeps photos in the office says so on the case (issue 14)."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import Engine, func, select

from server.audit.models import AuditEvent
from server.occupants import chips
from server.occupants.models import FaceTemplate
from tests.server.clusters.support import new_session
from tests.web.test_suggest import _case_of_new_person, _occupant_with_template
from tests.web.world import World, face_jpeg, login


def _chip_for(engine: Engine, occupant_id: int) -> int:
    with new_session(engine) as s:
        template = s.scalar(select(FaceTemplate).where(FaceTemplate.occupant_id == occupant_id))
        assert template is not None
        chips.put_chip(session=s, template=template, jpeg=face_jpeg(7))
        s.commit()
        return template.id


def _views(engine: Engine, template_id: int) -> int:
    with new_session(engine) as s:
        n = s.scalar(
            select(func.count()).where(
                AuditEvent.action == "chip.view", AuditEvent.object_id == str(template_id)
            )
        )
        return int(n or 0)


def test_the_case_shows_the_candidates_face_and_every_view_is_audited(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    occupant_id = _occupant_with_template(engine, world, "王芳", 0.38)
    template_id = _chip_for(engine, occupant_id)
    case_id = _case_of_new_person(engine, world)
    login(client, "mgr_a")
    page = client.get(f"/web/cases/{case_id}")
    assert re.search(rf'<img src="/web/chips/{template_id}\?case={case_id}"', page.text)
    for n in (1, 2):
        r = client.get(f"/web/chips/{template_id}?case={case_id}")
        assert r.status_code == 200 and r.content == face_jpeg(7)
        assert r.headers["cache-control"] == "private, no-store"
        assert _views(engine, template_id) == n
    # Another site's manager: it does not exist for them.
    client.cookies.clear()
    login(client, "mgr_b")
    assert client.get(f"/web/chips/{template_id}").status_code == 404
    assert _views(engine, template_id) == 2


def test_a_site_that_keeps_photos_in_the_office_says_so_on_the_case(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    occupant_id = _occupant_with_template(engine, world, "王芳", 0.38)
    template_id = _chip_for(engine, occupant_id)
    case_id = _case_of_new_person(engine, world)
    with new_session(engine) as s:
        chips.set_registry_chips(session=s, site_id=world.site_a, enabled=False)
        s.commit()
    login(client, "mgr_a")
    page = client.get(f"/web/cases/{case_id}")
    assert 'id="chips-off"' in page.text and "office only" in page.text
    assert "/web/chips/" not in page.text
    assert client.get(f"/web/chips/{template_id}").status_code == 404
