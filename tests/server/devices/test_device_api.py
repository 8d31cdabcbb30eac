"""Device API: authentication, site binding, gallery ETags, heartbeat."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from edge.wire import API_PREFIX, Gallery, HeartbeatAck, decode_embedding
from server.audit.models import AuditEvent
from server.db import make_session_factory
from server.devices.models import Camera, Device
from server.occupants.service import add_template, upsert_occupant
from tests.server.conftest import DeviceCreds
from tests.server.helpers import unit_vector

GALLERY = f"{API_PREFIX}/device/gallery"
HEARTBEAT = f"{API_PREFIX}/device/heartbeat"


def _enrol(engine: Engine, site_id: int, name: str, seed: int, model_id: str = "buffalo_s") -> int:
    with make_session_factory(engine)() as s:
        occ = upsert_occupant(session=s, site_id=site_id, name=name, external_id=name)
        add_template(session=s, occupant_id=occ.id, embedding=unit_vector(seed), model_id=model_id)
        s.commit()
        return occ.id


def test_missing_or_unknown_token_is_401(client: httpx.Client, device: DeviceCreds) -> None:
    assert client.get(GALLERY).status_code == 401
    r = client.get(GALLERY, headers={"Authorization": "Bearer ltd_not-a-real-token"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["code"] == "unauthenticated"
    r = client.get(GALLERY, headers={"Authorization": f"Basic {device.token}"})
    assert r.status_code == 401


def test_disabled_device_is_refused(
    client: httpx.Client, device: DeviceCreds, session: Session
) -> None:
    assert client.get(GALLERY, headers=device.headers).status_code == 200
    row = session.get(Device, device.device_id)
    assert row is not None
    row.disabled = True
    session.commit()
    assert client.get(GALLERY, headers=device.headers).status_code == 401


def test_gallery_etag_round_trip(client: httpx.Client, device: DeviceCreds, engine: Engine) -> None:
    occ = _enrol(engine, device.site_id, "wang", seed=1)
    r = client.get(GALLERY, headers=device.headers)
    assert r.status_code == 200
    gallery = Gallery.model_validate_json(r.content)
    assert r.headers["etag"] == gallery.etag
    assert [t.occupant_id for t in gallery.templates] == [occ]
    assert gallery.templates[0].model_id == "buffalo_s"
    np.testing.assert_allclose(decode_embedding(gallery.templates[0].embedding_b64), unit_vector(1))

    # Unchanged: 304 with no body.
    r = client.get(GALLERY, headers={**device.headers, "If-None-Match": gallery.etag})
    assert r.status_code == 304
    assert r.content == b""

    # A new template bumps the version: the old ETag no longer matches.
    _enrol(engine, device.site_id, "li", seed=2)
    r = client.get(GALLERY, headers={**device.headers, "If-None-Match": gallery.etag})
    assert r.status_code == 200
    newer = Gallery.model_validate_json(r.content)
    assert newer.version > gallery.version
    assert len(newer.templates) == 2


def test_gallery_holds_only_own_site_and_site_model(
    client: httpx.Client, make_device: Callable[..., DeviceCreds], engine: Engine
) -> None:
    a = make_device(site="A", name="gate")
    b = make_device(site="B", name="gate")
    occ_a = _enrol(engine, a.site_id, "a1", seed=1)
    _enrol(engine, b.site_id, "b1", seed=2)
    _enrol(engine, a.site_id, "a2", seed=3, model_id="other_model")
    gallery = Gallery.model_validate_json(client.get(GALLERY, headers=a.headers).content)
    assert gallery.site_id == a.site_id
    assert [t.occupant_id for t in gallery.templates] == [occ_a]


def test_moved_out_occupant_leaves_the_gallery(
    client: httpx.Client, device: DeviceCreds, engine: Engine
) -> None:
    _enrol(engine, device.site_id, "zhao", seed=4)
    first = Gallery.model_validate_json(client.get(GALLERY, headers=device.headers).content)
    assert len(first.templates) == 1
    with make_session_factory(engine)() as s:
        upsert_occupant(
            session=s, site_id=device.site_id, name="zhao", external_id="zhao", status="moved_out"
        )
        s.commit()
    r = client.get(GALLERY, headers={**device.headers, "If-None-Match": first.etag})
    assert r.status_code == 200
    assert Gallery.model_validate_json(r.content).templates == []


def test_gallery_download_is_audited(
    client: httpx.Client, device: DeviceCreds, session: Session
) -> None:
    client.get(GALLERY, headers=device.headers)
    events = session.scalars(select(AuditEvent).where(AuditEvent.action == "gallery.download"))
    assert [e.actor for e in events] == [f"device:{device.device_id}"]


def test_heartbeat_stores_stats_and_registers_cameras(
    client: httpx.Client, device: DeviceCreds, session: Session
) -> None:
    body = {
        "version": "0.1.0",
        "model_id": "buffalo_s",
        "uptime_s": 12.5,
        "cameras": {"door-a": {"state": "running", "fps": 9.5, "frames": 100}},
        "outbox_depth": 3,
    }
    r = client.post(HEARTBEAT, json=body, headers=device.headers)
    assert r.status_code == 200, r.text
    ack = HeartbeatAck.model_validate_json(r.content)
    assert ack.gallery_version >= 1
    row = session.get(Device, device.device_id)
    assert row is not None and row.last_heartbeat_at is not None
    assert row.stats is not None and row.stats["outbox_depth"] == 3
    names = session.scalars(select(Camera.name).where(Camera.device_id == device.device_id))
    assert list(names) == ["door-a"]


def test_heartbeat_rejects_unknown_fields(client: httpx.Client, device: DeviceCreds) -> None:
    r = client.post(HEARTBEAT, json={"version": "1", "bogus": 1}, headers=device.headers)
    assert r.status_code == 422
