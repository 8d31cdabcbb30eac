"""Case actions from the web: the same services as the API, one transaction, audited."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import Engine, func, select

from server.audit.models import AuditEvent
from server.cases.models import Case, CaseEvent, WhitelistEntry
from server.clusters.models import UnknownCluster
from server.occupants.models import FaceTemplate, Occupant
from server.occupants.service import upsert_occupant
from server.sightings import crops
from server.users.models import User
from tests.server.clusters.support import new_session
from tests.web.world import World, csrf_of, login


def _top_case(client: httpx.Client) -> tuple[int, str]:
    """The first case of the queue and the CSRF token of the page."""
    queue = client.get("/web/queue")
    assert queue.status_code == 200
    first = re.search(r'data-case="(\d+)"', queue.text)
    assert first
    return int(first.group(1)), csrf_of(queue.text)


def _open_count(client: httpx.Client) -> int:
    m = re.search(r'id="count-open">(\d+)<', client.get("/web/queue").text)
    assert m
    return int(m.group(1))


def _uid(engine: Engine, username: str) -> int:
    with new_session(engine) as s:
        uid = s.scalar(select(User.id).where(User.username == username))
        assert uid is not None
        return uid


def test_enrol_closes_the_case_makes_an_occupant_and_is_audited(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    login(client, "mgr_a")
    before = _open_count(client)
    case_id, token = _top_case(client)
    page = client.get(f"/web/cases/{case_id}")
    assert page.status_code == 200
    assert "A1 幢 1 单元 101" in page.text  # the unit picker offers the site's units
    r = client.post(
        f"/web/cases/{case_id}/enrol",
        data={"unit_id": str(world.unit_a), "name": "王芳", "role": "tenant", "csrf_token": token},
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/web/queue?done={case_id}"
    queue = client.get(r.headers["location"])
    assert f"Case #{case_id} closed" in queue.text
    assert f'data-case="{case_id}"' not in queue.text
    assert _open_count(client) == before - 1
    with new_session(engine) as s:
        case = s.get(Case, case_id)
        assert case is not None
        assert (case.status, case.outcome, case.unit_id) == ("closed", "enrolled", world.unit_a)
        occupant = s.get(Occupant, case.occupant_id)
        assert occupant is not None and occupant.name == "王芳"
        templates = s.scalar(
            select(func.count())
            .select_from(FaceTemplate)
            .where(FaceTemplate.occupant_id == occupant.id)
        )
        assert templates and templates > 0
        closed = s.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "case.closed", AuditEvent.object_id == str(case_id)
            )
        ).all()
        assert [e.actor for e in closed] == [f"user:{_uid(engine, 'mgr_a')}"]
    audit = client.get(f"/web/audit?case={case_id}")
    assert "case.closed" in audit.text and "mgr_a" in audit.text


def test_enrol_into_another_sites_unit_is_refused_and_changes_nothing(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    login(client, "mgr_a")
    case_id, token = _top_case(client)
    r = client.post(
        f"/web/cases/{case_id}/enrol",
        data={"unit_id": str(world.unit_b), "name": "X", "csrf_token": token},
    )
    assert r.status_code == 422
    r = client.post(f"/web/cases/{case_id}/enrol", data={"unit_id": "1", "csrf_token": token})
    assert r.status_code == 422  # no name
    with new_session(engine) as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "open"
        assert s.scalar(select(func.count()).select_from(Occupant)) == 0


def test_assign_and_log_a_call_keep_the_case_open_with_history(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    login(client, "mgr_a")
    case_id, token = _top_case(client)
    assert (
        client.post(f"/web/cases/{case_id}/assign", data={"csrf_token": token}).status_code == 303
    )
    r = client.post(
        f"/web/cases/{case_id}/contact",
        data={"kind": "call", "result": "no answer", "notes": "rang 101", "csrf_token": token},
    )
    assert r.headers["location"] == f"/web/cases/{case_id}"
    page = client.get(f"/web/cases/{case_id}")
    assert "rang 101" in page.text and "no answer" in page.text
    mine = client.get("/web/queue?mine=true")
    assert f'data-case="{case_id}"' in mine.text
    assert len(re.findall(r"data-case=", mine.text)) == 1
    with new_session(engine) as s:
        kinds = list(
            s.scalars(
                select(CaseEvent.kind).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
            )
        )
        assert kinds == ["opened", "assigned", "call"]
        case = s.get(Case, case_id)
        assert case is not None and case.status == "assigned"


def test_close_as_courier_whitelists_and_visitor_suppresses(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    login(client, "mgr_a")
    first, token = _top_case(client)
    r = client.post(
        f"/web/cases/{first}/close",
        data={"outcome": "courier", "notes": "SF Express", "csrf_token": token},
    )
    assert r.status_code == 303
    second, token = _top_case(client)
    assert second != first
    client.post(f"/web/cases/{second}/close", data={"outcome": "visitor", "csrf_token": token})
    assert _open_count(client) == 0
    with new_session(engine) as s:
        entry = s.scalar(select(WhitelistEntry))
        assert entry is not None and (entry.kind, entry.label) == ("courier", "SF Express")
        visitor = s.get(Case, second)
        assert visitor is not None and visitor.outcome == "visitor"
        cluster = s.get(UnknownCluster, visitor.cluster_id)
        assert cluster is not None and cluster.suppression == "visitor"
    r = client.post(f"/web/cases/{first}/close", data={"outcome": "visitor", "csrf_token": token})
    assert r.status_code == 409  # already closed
    # Said in the reader's words (issue 14, #6), not the service's English detail.
    assert f"Case #{first} is already closed (Courier)" in r.text


def test_merge_into_an_existing_occupant(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    with new_session(engine) as s:
        occupant = upsert_occupant(
            session=s, site_id=world.site_a, name="李雷", unit_id=world.unit_a
        )
        s.commit()
        occupant_id = occupant.id
    login(client, "mgr_a")
    case_id, token = _top_case(client)
    page = client.get(f"/web/cases/{case_id}?occupant_q=李")
    assert "李雷" in page.text
    r = client.post(
        f"/web/cases/{case_id}/merge", data={"occupant_id": str(occupant_id), "csrf_token": token}
    )
    assert r.status_code == 303
    with new_session(engine) as s:
        case = s.get(Case, case_id)
        assert case is not None
        assert (case.outcome, case.occupant_id) == ("merged_into_occupant", occupant_id)


def test_crops_are_served_to_the_site_and_every_view_is_audited(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    login(client, "mgr_a")
    page = client.get("/web/queue")
    src = re.search(r'src="(/web/crops/(\d+)\?case=(\d+))"', page.text)
    assert src
    url, sighting_id, case_id = src.group(1), int(src.group(2)), int(src.group(3))
    r = client.get(url)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert "no-store" in r.headers["cache-control"]
    with new_session(engine) as s:
        assert r.content == crops.get(session=s, sighting_id=sighting_id)
    client.get(url)
    with new_session(engine) as s:
        views = s.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "crop.view", AuditEvent.object_id == str(sighting_id)
            )
        ).all()
        assert len(views) == 2
        assert all(v.actor == f"user:{_uid(engine, 'mgr_a')}" for v in views)
        assert views[0].detail == {"case_id": case_id}
    # A made-up case id is not written into the audit trail as if it were true.
    client.get(f"/web/crops/{sighting_id}?case={case_id + 1000}")
    with new_session(engine) as s:
        last = s.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "crop.view")
            .order_by(AuditEvent.id.desc())
        ).first()
        assert last is not None and last.detail is None
    client.get(f"/web/cases/{case_id}")
    with new_session(engine) as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "case.view", AuditEvent.object_id == str(case_id))
            )
            == 1
        )
