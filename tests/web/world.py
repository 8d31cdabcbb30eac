"""A small two-site world for the web tests: users, units, entrances and real cases.

Cases come from the real pipeline: unknown sightings (with JPEG crops) go
through the ingest service and the clustering worker, which opens the cases.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import timedelta

import cv2
import httpx
import numpy as np
from argon2 import PasswordHasher
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server.cases.models import Case
from server.devices.models import Camera
from server.devices.service import create_device
from server.sites.service import (
    create_site,
    get_or_create_building,
    get_or_create_entrance,
    get_or_create_unit,
)
from server.users.service import create_user
from tests.server.clusters.support import DAY0, MODEL, ingest, item, look, new_session, person, work

PASSWORD = "correct horse battery staple"
# Argon2 with the production cost takes ~0.7 s a check on a busy 2-core box; the
# stored hash carries its parameters, so a cheap hash makes test logins fast while
# the login code path (argon2 verify) stays the real one.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
CHEAP_HASH = CHEAP_HASHER.hash(PASSWORD)
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def face_jpeg(seed: int, size: int = 112) -> bytes:
    """A drawn face (not a person) so crops and screenshots show something face-like."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 235, np.uint8)
    skin = tuple(int(x) for x in rng.integers(120, 220, 3))
    c = size // 2
    cv2.circle(img, (c, c), size * 2 // 5, skin, -1)
    for dx in (-size // 7, size // 7):
        cv2.circle(img, (c + dx, c - size // 10), size // 18, (40, 40, 40), -1)
    cv2.ellipse(img, (c, c + size // 7), (size // 6, size // 14), 0, 0, 180, (60, 40, 160), 3)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


@dataclass(frozen=True)
class World:
    site_a: int
    site_b: int
    device_a: int
    device_b: int
    unit_a: int
    unit_b: int
    case_b: int


def seed_person(
    engine: Engine, device_id: int, seed: int, days: list[int], *, hour: int = 0
) -> None:
    """Unknown sightings (with crops) of one person on ``days``, at the gate camera."""
    base = person(seed)
    items = []
    for d in days:
        it = item(look(base, seed * 1000 + d), DAY0 + timedelta(days=d, hours=hour))
        it["crop_jpeg_b64"] = base64.b64encode(face_jpeg(seed)).decode()
        items.append(it)
    ingest(engine, device_id, items)


def build_world(engine: Engine) -> World:
    """Sites A and B, their users (admin, mgr_a, viewer_a, mgr_b), units and cases.

    Site A: two cases (seen on 5 days and on 3 days); site B: one case.
    """
    with new_session(engine) as s:
        a = create_site(session=s, name="Sunny Court", model_id=MODEL)
        b = create_site(session=s, name="Other Court", model_id=MODEL)
        ids = {}
        for site, label in ((a, "A"), (b, "B")):
            building = get_or_create_building(session=s, site_id=site.id, name=f"{label}1")
            door = get_or_create_entrance(
                session=s, site_id=site.id, name=f"{label}1 east door", building_id=building.id
            )
            device, _token = create_device(session=s, site_id=site.id, name=f"gate-{label}")
            s.add(Camera(device_id=device.id, name="gate", entrance_id=door.id))
            unit = get_or_create_unit(
                session=s,
                site_id=site.id,
                address_key=f"{label}1-1-101",
                address=f"{label}1 幢 1 单元 101",
                building_id=building.id,
            )
            get_or_create_unit(session=s, site_id=site.id, address_key=f"{label}1-1-102")
            ids[label] = (device.id, unit.id)
        _user(s, "admin", "admin")
        _user(s, "mgr_a", "manager", [a.id])
        _user(s, "viewer_a", "viewer", [a.id])
        _user(s, "mgr_b", "manager", [b.id])
        s.commit()
        site_a, site_b = a.id, b.id
    seed_person(engine, ids["A"][0], 41, [0, 1, 2, 3, 4], hour=3)  # 19:00 Shanghai
    seed_person(engine, ids["A"][0], 42, [0, 2, 4])
    seed_person(engine, ids["B"][0], 43, [0, 1, 2])
    work(engine)
    with new_session(engine) as s:
        case_b = s.scalar(select(Case.id).where(Case.site_id == site_b))
        assert case_b is not None
    return World(
        site_a=site_a,
        site_b=site_b,
        device_a=ids["A"][0],
        device_b=ids["B"][0],
        unit_a=ids["A"][1],
        unit_b=ids["B"][1],
        case_b=case_b,
    )


def _user(s: Session, username: str, role: str, site_ids: list[int] | None = None) -> None:
    user = create_user(session=s, username=username, role=role, site_ids=site_ids or [])
    user.password_hash = CHEAP_HASH
    s.flush()


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    m = CSRF_RE.search(html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def login(client: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    """Log in through the real form (GET for the token, then POST)."""
    form = client.get("/web/login")
    assert form.status_code == 200
    return client.post(
        "/web/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(form.text)},
    )
