"""A case whose face weakly matches a registered occupant names them, with a one-click merge.

The worker does not attribute such a cluster on its own (below the attribution
thresholds: a look-alike stranger can come as close), so a case opens; the case
page then says who it may be, and "It is X" merges the case's faces into X.
"""

from __future__ import annotations

import re

import httpx
from sqlalchemy import Engine, func, select

from server.cases.attribution import SUGGEST_MIN_SIMILARITY
from server.cases.models import Case, CaseEvent
from server.occupants.models import FaceTemplate
from server.occupants.service import upsert_occupant
from server.sites.service import get_or_create_unit
from tests.server.clusters.support import MODEL, at_cos, new_session, person, work
from tests.web.world import World, csrf_of, login, seed_person

SEED = 51  # a person of site A's device who is not in the world yet


def _occupant_with_template(engine: Engine, world: World, name: str, cos: float) -> int:
    """An occupant of site A whose one template sits at ``cos`` from person SEED."""
    with new_session(engine) as s:
        unit = get_or_create_unit(
            session=s, site_id=world.site_a, address_key="A1-2-201", address="A1 幢 2 单元 201"
        )
        occupant = upsert_occupant(session=s, site_id=world.site_a, name=name, unit_id=unit.id)
        s.add(
            FaceTemplate(
                occupant_id=occupant.id,
                site_id=world.site_a,
                embedding=at_cos(person(SEED), cos, seed=7).tobytes(),
                model_id=MODEL,
                quality=0.9,
                source="registry photo",
            )
        )
        s.commit()
        return occupant.id


def _case_of_new_person(engine: Engine, world: World) -> int:
    with new_session(engine) as s:
        before = set(s.scalars(select(Case.id)))
    seed_person(engine, world.device_a, SEED, [7, 8, 9])
    work(engine)
    with new_session(engine) as s:
        new = set(s.scalars(select(Case.id).where(Case.site_id == world.site_a))) - before
    assert len(new) == 1, new
    return new.pop()


def test_a_weak_match_is_named_on_the_case_and_one_click_merges(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    occupant_id = _occupant_with_template(engine, world, "韩梅梅", 0.38)
    case_id = _case_of_new_person(engine, world)
    with new_session(engine) as s:
        opened = s.scalar(
            select(CaseEvent).where(CaseEvent.case_id == case_id, CaseEvent.kind == "opened")
        )
        assert opened is not None
        evidence = opened.detail["evidence"]
        # Too weak for the worker to call it the occupant on its own ...
        assert evidence["occupant_id"] == occupant_id
        assert SUGGEST_MIN_SIMILARITY <= evidence["centroid_similarity"] < 0.35
    login(client, "mgr_a")
    page = client.get(f"/web/cases/{case_id}")
    assert page.status_code == 200
    box = re.search(r'<section class="notice suggest".*?</section>', page.text, re.S)
    assert box, "the case names the possible occupant"
    assert "韩梅梅" in box.group(0) and "A1 幢 2 单元 201" in box.group(0)
    assert f'name="occupant_id" value="{occupant_id}"' in box.group(0)
    # Marked as a desk check on the page and in the queue.
    assert 'id="desk-check"' in page.text
    assert re.search(r'id="desk-check-name">[^<]*韩梅梅', page.text)
    queue = client.get("/web/queue").text
    assert re.search(rf'/cases/{case_id}".*?class="badge desk-check">[^<]*韩梅梅', queue, re.S)
    r = client.post(
        f"/web/cases/{case_id}/merge",
        data={"occupant_id": str(occupant_id), "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 303
    with new_session(engine) as s:
        case = s.get(Case, case_id)
        assert case is not None
        assert (case.status, case.outcome, case.occupant_id) == (
            "closed",
            "merged_into_occupant",
            occupant_id,
        )
        templates = s.scalar(
            select(func.count())
            .select_from(FaceTemplate)
            .where(FaceTemplate.occupant_id == occupant_id)
        )
        assert templates is not None and templates > 1  # the case's faces joined the photo
    closed = client.get(f"/web/cases/{case_id}")
    assert 'class="notice suggest"' not in closed.text  # nothing left to suggest


def test_no_suggestion_without_a_match_nor_for_a_viewer(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    _occupant_with_template(engine, world, "李雷", 0.0)  # unrelated face
    case_id = _case_of_new_person(engine, world)
    login(client, "mgr_a")
    page = client.get(f"/web/cases/{case_id}").text
    assert 'class="notice suggest"' not in page
    assert 'id="desk-check"' not in page
    assert "badge desk-check" not in client.get("/web/queue").text


def test_a_viewer_sees_no_merge_button(client: httpx.Client, world: World, engine: Engine) -> None:
    _occupant_with_template(engine, world, "韩梅梅", 0.38)
    case_id = _case_of_new_person(engine, world)
    login(client, "viewer_a")
    page = client.get(f"/web/cases/{case_id}")
    assert page.status_code == 200
    assert 'class="notice suggest"' not in page.text
    assert 'id="desk-check"' in page.text  # a viewer still sees what kind of case it is
