"""Likely occupants on the web: listed with evidence and crops, confirmed or rejected, scoped.

These run on SQLite and on PostgreSQL: confirm and reject write templates,
the gallery version, a case and audit events in one request.
"""

from __future__ import annotations

import base64
import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from server.audit.models import AuditEvent
from server.cases.models import Case
from server.clusters.models import UnknownCluster
from server.occupants.models import FaceTemplate
from server.occupants.service import add_template, upsert_occupant
from server.sites.models import Site
from server.users.models import User
from tests.server.clusters.support import (
    DAY0,
    MODEL,
    at_cos,
    ingest,
    item,
    look,
    new_session,
    person,
    work,
)
from tests.web.backends import pg_factory, web_engine_on_both_backends  # noqa: F401
from tests.web.world import World, csrf_of, face_jpeg, login


def _known(occupant_id: int, day: int) -> dict[str, Any]:
    """The edge recognised the occupant on ``day`` (no face leaves the box)."""
    at = DAY0 + timedelta(days=day, hours=-2)
    return {
        "id": str(uuid.uuid4()),
        "camera": "gate",
        "started_at": at.isoformat(),
        "ended_at": (at + timedelta(seconds=3)).isoformat(),
        "quality": 0.8,
        "kind": "known",
        "occupant_id": occupant_id,
        "similarity": 0.6,
        "model_id": MODEL,
    }


def _resident_missed(
    engine: Engine, *, site_id: int, device_id: int, unit_id: int, seed: int, name: str
) -> int:
    """A resident enrolled from a poor photo whom the entrance misses on 3 days.

    As in tests/server/cases/test_attribution.py: the worker labels the cluster
    ``likely_occupant`` (no case). Returns the cluster id.
    """
    face = person(seed)
    with new_session(engine) as s:
        for i in range(8):  # other residents
            o = upsert_occupant(session=s, site_id=site_id, name=f"Resident {seed}-{i}")
            add_template(
                session=s, occupant_id=o.id, embedding=person(seed * 10 + i), model_id=MODEL
            )
        occ = upsert_occupant(session=s, site_id=site_id, name=name, unit_id=unit_id)
        add_template(session=s, occupant_id=occ.id, embedding=at_cos(face, 0.38, 5), model_id=MODEL)
        s.commit()
        occ_id = occ.id
    items = []
    for d in range(3):
        it = item(look(face, seed + d), DAY0 + timedelta(days=d))
        it["crop_jpeg_b64"] = base64.b64encode(face_jpeg(seed + d)).decode()
        items += [it, _known(occ_id, d)]
    ingest(engine, device_id, items)
    work(engine)
    with new_session(engine) as s:
        cluster = s.scalars(
            select(UnknownCluster).where(UnknownCluster.occupant_id == occ_id)
        ).one()
        assert cluster.suppression == "likely_occupant"
        return cluster.id


@pytest.fixture
def likely(world: World, engine: Engine) -> tuple[int, int]:
    """One likely occupant in site A (王芳, unit A1-1-101) and one in site B."""
    a = _resident_missed(
        engine,
        site_id=world.site_a,
        device_id=world.device_a,
        unit_id=world.unit_a,
        seed=31,
        name="王芳",
    )
    b = _resident_missed(
        engine,
        site_id=world.site_b,
        device_id=world.device_b,
        unit_id=world.unit_b,
        seed=61,
        name="李雷",
    )
    return a, b


def _nav_count(html: str) -> int:
    m = re.search(r'id="likely-count"[^>]*>(\d+)<', html)
    assert m, "no likely-occupant count in the nav"
    return int(m.group(1))


def _listed(html: str) -> set[int]:
    return {int(x) for x in re.findall(r'data-cluster="(\d+)"', html)}


def _cluster(engine: Engine, cluster_id: int) -> UnknownCluster:
    with new_session(engine) as s:
        cluster = s.get(UnknownCluster, cluster_id)
        assert cluster is not None
        s.expunge(cluster)
        return cluster


def _templates(engine: Engine, occupant_id: int) -> int:
    with new_session(engine) as s:
        n = s.scalar(
            select(func.count())
            .select_from(FaceTemplate)
            .where(FaceTemplate.occupant_id == occupant_id)
        )
        return int(n or 0)


def _gallery_version(engine: Engine, site_id: int) -> int:
    with new_session(engine) as s:
        site = s.get(Site, site_id)
        assert site is not None
        return site.gallery_version


def _actor(engine: Engine, username: str) -> str:
    with new_session(engine) as s:
        return f"user:{s.scalar(select(User.id).where(User.username == username))}"


def _audited(engine: Engine, action: str, object_id: int) -> list[str]:
    with new_session(engine) as s:
        return list(
            s.scalars(
                select(AuditEvent.actor).where(
                    AuditEvent.action == action, AuditEvent.object_id == str(object_id)
                )
            )
        )


def test_the_list_names_the_occupant_with_evidence_and_crops(
    client: httpx.Client, world: World, engine: Engine, likely: tuple[int, int]
) -> None:
    mine, _theirs = likely
    login(client, "mgr_a")
    page = client.get("/web/likely")
    assert page.status_code == 200
    assert _listed(page.text) == {mine}
    assert "李雷" not in page.text and "Other Court" not in page.text
    assert _nav_count(page.text) == 1  # the nav count, also on other pages
    assert _nav_count(client.get("/web/queue").text) == 1
    cluster = _cluster(engine, mine)
    assert "Probably 王芳" in page.text and "A1 幢 1 单元 101" in page.text
    assert "Confirm: this is 王芳" in page.text and "Not this person" in page.text
    # The evidence the worker recorded when it labelled the cluster.
    with new_session(engine) as s:
        detail = s.scalars(
            select(AuditEvent.detail).where(
                AuditEvent.action == "cluster.likely_occupant",
                AuditEvent.object_id == str(mine),
            )
        ).one()
    assert detail is not None
    for value in (
        f"{detail['share'] * 100:.0f}%",
        f"{detail['centroid_similarity']:.2f}",
        f"{detail['margin']:.2f}",
    ):
        assert f"<dd>{value}</dd>" in page.text
    assert f'class="days-seen">{len(cluster.days)}<' in page.text
    # Its best crops side by side, through the audited crop endpoint.
    shown = [int(x) for x in re.findall(r'src="/web/crops/(\d+)"', page.text)]
    assert shown and set(shown) <= set(cluster.best_sightings)
    one = client.get(f"/web/likely/{mine}")
    assert one.status_code == 200 and _listed(one.text) == {mine}
    zh = client.get("/web/likely", headers={"Accept-Language": "zh-CN"})
    assert "确认：这是 王芳" in zh.text and "不是此人" in zh.text


def test_another_sites_manager_gets_404(
    client: httpx.Client, world: World, engine: Engine, likely: tuple[int, int]
) -> None:
    mine, theirs = likely
    login(client, "mgr_b")
    page = client.get("/web/likely")
    assert _listed(page.text) == {theirs}
    for url in (f"/web/likely/{mine}", f"/web/likely?site={world.site_a}"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert "王芳" not in r.text
    token = csrf_of(page.text)
    for action in ("confirm", "reject"):
        r = client.post(f"/web/likely/{mine}/{action}", data={"csrf_token": token})
        assert r.status_code == 404
    assert _cluster(engine, mine).suppression == "likely_occupant"


def test_a_viewer_sees_them_but_cannot_act(
    client: httpx.Client, world: World, engine: Engine, likely: tuple[int, int]
) -> None:
    mine, _ = likely
    login(client, "viewer_a")
    page = client.get("/web/likely")
    assert page.status_code == 200 and _listed(page.text) == {mine}
    assert f"/web/likely/{mine}/confirm" not in page.text
    token = csrf_of(page.text)  # the logout form's
    for action in ("confirm", "reject"):
        r = client.post(f"/web/likely/{mine}/{action}", data={"csrf_token": token})
        assert r.status_code == 403
    assert _cluster(engine, mine).suppression == "likely_occupant"


def test_confirm_adds_templates_bumps_the_gallery_and_leaves_the_list(
    client: httpx.Client, world: World, engine: Engine, likely: tuple[int, int]
) -> None:
    mine, _ = likely
    cluster = _cluster(engine, mine)
    occupant_id = cluster.occupant_id
    assert occupant_id is not None
    templates, version = _templates(engine, occupant_id), _gallery_version(engine, world.site_a)
    login(client, "mgr_a")
    token = csrf_of(client.get("/web/likely").text)
    r = client.post(f"/web/likely/{mine}/confirm", data={"csrf_token": token})
    assert r.status_code == 303
    assert r.headers["location"] == f"/web/likely?confirmed={mine}"
    after = client.get(r.headers["location"])
    assert f"Face group #{mine} confirmed as 王芳" in after.text
    assert mine not in _listed(after.text)
    assert _nav_count(after.text) == 0
    added = _templates(engine, occupant_id) - templates
    assert added == len(cluster.best_sightings)
    assert _gallery_version(engine, world.site_a) == version + 1
    assert _cluster(engine, mine).suppression == "occupant"
    actor = _actor(engine, "mgr_a")
    assert _audited(engine, "cluster.likely_occupant_confirmed", mine) == [actor]
    # Settled: a second confirm is refused and adds nothing.
    again = client.post(f"/web/likely/{mine}/confirm", data={"csrf_token": token})
    assert again.status_code == 422
    assert _templates(engine, occupant_id) - templates == added
    assert client.get(f"/web/likely/{mine}").status_code == 404


def test_reject_opens_the_case_and_goes_to_it(
    client: httpx.Client, world: World, engine: Engine, likely: tuple[int, int]
) -> None:
    mine, _ = likely
    login(client, "mgr_a")
    token = csrf_of(client.get("/web/likely").text)
    r = client.post(f"/web/likely/{mine}/reject", data={"csrf_token": token})
    assert r.status_code == 303
    with new_session(engine) as s:
        case = s.scalars(select(Case).where(Case.cluster_id == mine)).one()
        assert (case.status, case.site_id) == ("open", world.site_a)
    assert r.headers["location"] == f"/web/cases/{case.id}"
    assert client.get(r.headers["location"]).status_code == 200
    cluster = _cluster(engine, mine)
    assert (cluster.suppression, cluster.occupant_id) == ("not_occupant", None)
    assert _audited(engine, "cluster.likely_occupant_rejected", mine) == [_actor(engine, "mgr_a")]
    assert mine not in _listed(client.get("/web/likely").text)


def test_a_post_without_the_csrf_token_is_refused(
    client: httpx.Client, world: World, engine: Engine, likely: tuple[int, int]
) -> None:
    mine, _ = likely
    login(client, "mgr_a")
    for action in ("confirm", "reject"):
        for data in ({}, {"csrf_token": "forged"}):
            r = client.post(f"/web/likely/{mine}/{action}", data=data)
            assert r.status_code == 403, (action, data)
    assert _cluster(engine, mine).suppression == "likely_occupant"
    with new_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Case).where(Case.cluster_id == mine)) == 0


def test_viewing_a_crop_is_audited(
    client: httpx.Client, world: World, engine: Engine, likely: tuple[int, int]
) -> None:
    mine, _ = likely
    login(client, "viewer_a")
    page = client.get("/web/likely")
    crop = int(re.findall(r'src="/web/crops/(\d+)"', page.text)[0])
    assert crop in _cluster(engine, mine).best_sightings
    assert _audited(engine, "crop.view", crop) == []
    r = client.get(f"/web/crops/{crop}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content[:2] == b"\xff\xd8"
    assert _audited(engine, "crop.view", crop) == [_actor(engine, "viewer_a")]
