"""A small site with every kind of face data, built through the real services.

People (identity vectors from ``tests.server.clusters.support``) walk past the
gate with crops; the clustering worker opens cases; one case stays open, one
is closed as a visitor; a passer-by is seen once (no case); one occupant has
moved out, one is active, both with templates.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from server.cases import outcomes
from server.cases.models import Case
from server.occupants.service import add_template, upsert_occupant
from server.sightings.models import Sighting
from server.users.service import create_api_token, create_user
from tests.server.clusters.support import DAY0, MODEL, ingest, item, look, new_session, person, work
from tests.server.helpers import jpeg_bytes


@dataclass(frozen=True)
class World:
    site_id: int
    open_case: int
    closed_case: int
    open_sightings: frozenset[int]
    closed_sightings: frozenset[int]
    passerby_sightings: frozenset[int]
    active_occupant: int
    moved_out_occupant: int


def sightings_with_crops(
    engine: Engine, device_id: int, seed: int, days: list[int]
) -> list[uuid.UUID]:
    """One sighting with a crop of person ``seed`` on each of ``days``; their uuids."""
    items = []
    for d in days:
        it = item(look(person(seed), seed * 1000 + d), DAY0 + timedelta(days=d))
        it["crop_jpeg_b64"] = base64.b64encode(jpeg_bytes(seed * 100 + d)).decode()
        items.append(it)
    ingest(engine, device_id, items)
    uuids = [uuid.UUID(it["id"]) for it in items]
    # They arrived when they were seen (retention counts from arrival).
    with new_session(engine) as s:
        s.execute(
            update(Sighting).where(Sighting.uuid.in_(uuids)).values(received_at=Sighting.started_at)
        )
        s.commit()
    return uuids


def _ids(session: Session, uuids: list[uuid.UUID]) -> frozenset[int]:
    return frozenset(session.scalars(select(Sighting.id).where(Sighting.uuid.in_(uuids))))


def _case_of(session: Session, uuids: list[uuid.UUID]) -> Case:
    cluster_id = session.scalar(select(Sighting.cluster_id).where(Sighting.uuid == uuids[0]))
    case = session.scalar(select(Case).where(Case.cluster_id == cluster_id))
    assert case is not None
    return case


def build(engine: Engine, site_id: int, device_id: int) -> World:
    staying = sightings_with_crops(engine, device_id, 51, [0, 1, 2])  # case stays open
    visitor = sightings_with_crops(engine, device_id, 52, [0, 1, 2])  # closed as a visitor
    passing = sightings_with_crops(engine, device_id, 53, [0])  # a passer-by, no case
    work(engine)
    with new_session(engine) as s:
        open_case = _case_of(s, staying)
        closed_case = _case_of(s, visitor)
        outcomes.close_as_visitor(session=s, case_id=closed_case.id, notes="cousin", actor="test")
        active = upsert_occupant(session=s, site_id=site_id, name="Staying")
        add_template(session=s, occupant_id=active.id, embedding=person(61), model_id=MODEL)
        gone = upsert_occupant(session=s, site_id=site_id, name="Leaving")
        add_template(session=s, occupant_id=gone.id, embedding=person(62), model_id=MODEL)
        add_template(session=s, occupant_id=gone.id, embedding=person(63), model_id=MODEL)
        gone = upsert_occupant(session=s, site_id=site_id, name="Leaving", status="moved_out")
        s.commit()
        return World(
            site_id=site_id,
            open_case=open_case.id,
            closed_case=closed_case.id,
            open_sightings=_ids(s, staying),
            closed_sightings=_ids(s, visitor),
            passerby_sightings=_ids(s, passing),
            active_occupant=active.id,
            moved_out_occupant=gone.id,
        )


def user_token(engine: Engine, username: str, role: str, site_ids: list[int]) -> dict[str, str]:
    """Bearer headers of a new user."""
    with new_session(engine) as s:
        user = create_user(session=s, username=username, role=role, site_ids=site_ids)
        _row, token = create_api_token(session=s, user_id=user.id)
        s.commit()
    return {"Authorization": f"Bearer {token}"}


PASSWORD = "correct horse battery staple"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def web_login(
    client: httpx.Client, engine: Engine, username: str, role: str, sites: list[int]
) -> str:
    """Create a user and log ``client`` in through the real web form; the session's CSRF token."""
    with new_session(engine) as s:
        create_user(session=s, username=username, role=role, password=PASSWORD, site_ids=sites)
        s.commit()
    form = client.get("/web/login")
    token = CSRF_RE.search(form.text)
    assert token, "no CSRF token on the login form"
    r = client.post(
        "/web/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)},
    )
    assert r.status_code == 303, r.text
    page = client.get("/web/queue")
    token = CSRF_RE.search(page.text)
    assert token, "no CSRF token on the queue page"
    return token.group(1)
