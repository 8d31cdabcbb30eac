"""Site scope and roles: nobody reaches another site's data; viewers only look."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import Engine, select

from server.cases.models import Case
from server.sightings.models import Sighting
from tests.server.clusters.support import new_session
from tests.web.world import World, csrf_of, login


def _case_ids(html: str) -> set[int]:
    return {int(x) for x in re.findall(r'data-case="(\d+)"', html)}


def _site_cases(engine: Engine, site_id: int) -> set[int]:
    with new_session(engine) as s:
        return set(s.scalars(select(Case.id).where(Case.site_id == site_id)))


def test_a_manager_of_site_a_cannot_reach_site_b_by_url(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    login(client, "mgr_a")
    queue = client.get("/web/queue")
    assert _case_ids(queue.text) == _site_cases(engine, world.site_a)
    assert "Other Court" not in queue.text  # not even in the site filter
    with new_session(engine) as s:
        crop_b = s.scalar(select(Sighting.id).where(Sighting.site_id == world.site_b))
    for url in (
        f"/web/cases/{world.case_b}",
        f"/web/crops/{crop_b}",
        f"/web/queue?site={world.site_b}",
        f"/web/dashboard?site={world.site_b}",
        f"/web/devices?site={world.site_b}",
    ):
        r = client.get(url)
        assert r.status_code == 404, url
        assert "Other Court" not in r.text
    token = csrf_of(queue.text)
    r = client.post(
        f"/web/cases/{world.case_b}/close", data={"outcome": "visitor", "csrf_token": token}
    )
    assert r.status_code == 404
    with new_session(engine) as s:
        case_b = s.get(Case, world.case_b)
        assert case_b is not None and case_b.status == "open"
    devices = client.get("/web/devices")
    assert "gate-A" in devices.text and "gate-B" not in devices.text


def test_admin_sees_every_site(client: httpx.Client, world: World, engine: Engine) -> None:
    login(client, "admin")
    queue = client.get("/web/queue")
    assert _case_ids(queue.text) == _site_cases(engine, world.site_a) | {world.case_b}
    assert client.get(f"/web/cases/{world.case_b}").status_code == 200


def test_a_viewer_may_look_but_not_act(client: httpx.Client, world: World, engine: Engine) -> None:
    login(client, "viewer_a")
    queue = client.get("/web/queue")
    case_id = min(_case_ids(queue.text))
    page = client.get(f"/web/cases/{case_id}")
    assert page.status_code == 200
    assert f"/web/cases/{case_id}/close" not in page.text  # no action forms
    r = client.post(
        f"/web/cases/{case_id}/close",
        data={"outcome": "false_match", "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 403
    assert client.get("/web/audit").status_code == 403
    with new_session(engine) as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "open"
