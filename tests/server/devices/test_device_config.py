"""Issue 17 D on both databases: camera settings reach the box by version and ETag,
one-time enrolment codes, snapshots (opt-in, sealed, purged, audited)."""

from __future__ import annotations

import base64
from datetime import timedelta

import cv2
import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from edge.wire import API_PREFIX, DeviceSettings, HeartbeatAck
from server.audit.models import AuditEvent
from server.db import make_session_factory, utcnow
from server.devices import enrolment
from server.devices.models import Camera, CameraSnapshot, Device, DeviceEnrolment
from server.devices.settings import get_camera, set_site_snapshots, update_camera
from server.devices.snapshots import jpeg_size, store_snapshot, view_snapshot
from server.errors import Conflict, InvalidInput, NotFound
from server.privacy.purge import purge
from server.sites.models import Site
from server.sites.service import get_or_create_entrance
from tests.server.conftest import DeviceCreds
from tests.server.helpers import jpeg_bytes

CONFIG = f"{API_PREFIX}/device/config"
HEARTBEAT = f"{API_PREFIX}/device/heartbeat"
SNAPSHOT = f"{API_PREFIX}/device/snapshot"
ENROL = f"{API_PREFIX}/device/enrol"


def _beat(client: httpx.Client, device: DeviceCreds, **extra: object) -> httpx.Response:
    body = {"version": "1.0", "cameras": {"gate-1": {"fps": 25.0}}, **extra}
    return client.post(HEARTBEAT, json=body, headers=device.headers)


def _camera(engine: Engine, device: DeviceCreds, name: str = "gate-1") -> int:
    with make_session_factory(engine)() as s:
        cam_id = s.scalar(
            select(Camera.id).where(Camera.device_id == device.device_id, Camera.name == name)
        )
        assert cam_id is not None
        return cam_id


def test_settings_reach_the_box_by_version_and_etag(
    client: httpx.Client, device: DeviceCreds, engine: Engine
) -> None:
    # An old box (no config_version in its heartbeat) hears nothing new: its strict
    # model would refuse an unknown field.
    r = _beat(client, device)
    assert r.status_code == 200 and "config_version" not in r.json()
    r = _beat(client, device, config_version=0)
    ack = HeartbeatAck.model_validate_json(r.content)
    assert ack.config_version == 1
    first = client.get(CONFIG, headers=device.headers)
    assert first.status_code == 200
    settings = DeviceSettings.model_validate_json(first.content)
    assert first.headers["etag"] == settings.etag
    assert [c.name for c in settings.cameras] == ["gate-1"]
    assert settings.cameras[0].analyse_fps is None and settings.snapshots is False
    assert (
        client.get(CONFIG, headers={**device.headers, "If-None-Match": settings.etag}).status_code
        == 304
    )

    cam_id = _camera(engine, device)
    with make_session_factory(engine)() as s:
        entrance = get_or_create_entrance(session=s, site_id=device.site_id, name="North gate")
        cam = get_camera(session=s, camera_id=cam_id, site_ids={device.site_id})
        assert update_camera(
            session=s,
            camera=cam,
            actor="user:1",
            entrance_id=entrance.id,
            analyse_fps=2.5,
            roi=(0.1, 0.2, 0.9, 0.8),
            enabled=True,
        )
        # The same values again change nothing and bump nothing.
        assert not update_camera(
            session=s,
            camera=cam,
            actor="user:1",
            entrance_id=entrance.id,
            analyse_fps=2.5,
            roi=(0.1, 0.2, 0.9, 0.8),
            enabled=True,
        )
        s.commit()
        audits = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "camera.settings")))
        assert len(audits) == 1 and audits[0].detail["config_version"] == 2

    ack = HeartbeatAck.model_validate_json(_beat(client, device, config_version=1).content)
    assert ack.config_version == 2
    r = client.get(CONFIG, headers={**device.headers, "If-None-Match": settings.etag})
    assert r.status_code == 200
    newer = DeviceSettings.model_validate_json(r.content)
    assert newer.version == 2
    cam = newer.cameras[0]
    assert (cam.analyse_fps, cam.roi, cam.entrance) == (2.5, (0.1, 0.2, 0.9, 0.8), "North gate")


@pytest.mark.parametrize(
    ("fps", "roi", "why"),
    [
        (0.0, None, "between 0.2 and 30"),
        (60.0, None, "between 0.2 and 30"),
        (None, (0.5, 0.5, 0.52, 0.9), "at least 5%"),
        (None, (-0.1, 0.0, 0.5, 0.5), "between 0 and 1"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(
    client: httpx.Client,
    device: DeviceCreds,
    engine: Engine,
    fps: float | None,
    roi: tuple[float, float, float, float] | None,
    why: str,
) -> None:
    _beat(client, device)
    cam_id = _camera(engine, device)
    with make_session_factory(engine)() as s:
        cam = get_camera(session=s, camera_id=cam_id, site_ids=None)
        with pytest.raises(InvalidInput, match=why):
            update_camera(
                session=s,
                camera=cam,
                actor="user:1",
                entrance_id=None,
                analyse_fps=fps,
                roi=roi,
                enabled=True,
            )
        s.rollback()
        device_row = s.get(Device, device.device_id)
        assert device_row is not None and device_row.config_version == 1


def test_another_sites_camera_does_not_exist(
    client: httpx.Client, device: DeviceCreds, engine: Engine
) -> None:
    _beat(client, device)
    cam_id = _camera(engine, device)
    with make_session_factory(engine)() as s, pytest.raises(NotFound):
        get_camera(session=s, camera_id=cam_id, site_ids={device.site_id + 1000})


def test_enrolment_code_is_single_use_hashed_and_audited(
    client: httpx.Client, device: DeviceCreds, engine: Engine
) -> None:
    with make_session_factory(engine)() as s:
        row = s.get(Device, device.device_id)
        assert row is not None
        code = enrolment.create_enrolment_code(session=s, device=row, actor="user:1")
        s.commit()
        stored = s.scalars(select(DeviceEnrolment.code_hash)).one()
    assert len(code) == 9 and code[4] == "-"
    assert code.replace("-", "") not in stored  # only the hash is kept

    r = client.post(ENROL, json={"code": code.lower().replace("-", " ")})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    token = r.json()["token"]
    assert r.json()["device_id"] == device.device_id
    # The new token works, the old one stops, and the code is used up.
    assert client.get(CONFIG, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get(CONFIG, headers=device.headers).status_code == 401
    again = client.post(ENROL, json={"code": code})
    assert again.status_code == 422 and "used or expired" in again.json()["detail"]
    with make_session_factory(engine)() as s:
        actions = list(s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions[-4:] == [
        "device.enrol_code",
        "device.rotate_token",
        "device.enrol",
        "device.enrol_failed",
    ]


def test_expired_code_and_guessing_are_refused(
    client: httpx.Client, device: DeviceCreds, engine: Engine
) -> None:
    with make_session_factory(engine)() as s:
        row = s.get(Device, device.device_id)
        assert row is not None
        code = enrolment.create_enrolment_code(session=s, device=row, actor="user:1")
        for e in s.scalars(select(DeviceEnrolment)):
            e.expires_at = utcnow() - timedelta(seconds=1)
        s.commit()
    assert client.post(ENROL, json={"code": code}).status_code == 422
    for _ in range(enrolment.MAX_FAILURES - 1):
        assert client.post(ENROL, json={"code": "AAAA-AAAA"}).status_code == 422
    # The limit is reached: even a live code waits now, and says for how long.
    with make_session_factory(engine)() as s:
        row = s.get(Device, device.device_id)
        assert row is not None
        fresh = enrolment.create_enrolment_code(session=s, device=row, actor="user:1")
        s.commit()
    r = client.post(ENROL, json={"code": fresh})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert client.get(CONFIG, headers=device.headers).status_code == 200  # token unchanged


def test_snapshots_need_the_site_opt_in_are_sealed_audited_and_purged(
    client: httpx.Client, device: DeviceCreds, engine: Engine, session: Session
) -> None:
    _beat(client, device)
    jpeg = jpeg_bytes(3, size=96)
    body = {
        "camera": "gate-1",
        "taken_at": utcnow().isoformat(),
        "jpeg_b64": base64.b64encode(jpeg).decode(),
    }
    r = client.post(SNAPSHOT, json=body, headers=device.headers)
    assert r.status_code == 409  # the site has not opted in
    site = session.get(Site, device.site_id)
    assert site is not None
    set_site_snapshots(session=session, site=site, enabled=True, retention_hours=2, actor="user:1")
    session.commit()
    settings = DeviceSettings.model_validate_json(
        client.get(CONFIG, headers=device.headers).content
    )
    assert settings.snapshots is True and settings.version == 2
    assert client.post(SNAPSHOT, json=body, headers=device.headers).status_code == 204
    bad = {**body, "jpeg_b64": base64.b64encode(b"GIF89a").decode()}
    assert client.post(SNAPSHOT, json=bad, headers=device.headers).status_code == 422
    # A full-resolution frame is refused: snapshots are for the angle, not for faces.
    big = cv2.imencode(".jpg", np.zeros((720, 1280, 3), np.uint8))[1].tobytes()
    wide = {**body, "jpeg_b64": base64.b64encode(big).decode()}
    r = client.post(SNAPSHOT, json=wide, headers=device.headers)
    assert r.status_code == 422 and "at most 640 px wide" in r.json()["detail"]

    session.expire_all()
    cam_id = _camera(engine, device)
    stored = session.get(CameraSnapshot, cam_id)
    assert stored is not None and jpeg not in bytes(stored.jpeg)  # sealed at rest
    cam = get_camera(session=session, camera_id=cam_id, site_ids=None)
    assert view_snapshot(session=session, camera=cam, actor="user:1") == jpeg
    session.commit()
    views = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "snapshot.view")))
    assert len(views) == 1 and views[0].detail == {"camera": "gate-1"}

    # Within retention the purge keeps it; past it the purge deletes it.
    assert purge(session=session, now=utcnow() + timedelta(hours=1))[0].snapshots == 0
    result = purge(session=session, now=utcnow() + timedelta(hours=3))
    session.commit()
    assert result[0].snapshots == 1
    session.expunge_all()
    assert session.scalars(select(CameraSnapshot)).all() == []
    with pytest.raises(NotFound):
        view_snapshot(session=session, camera=cam, actor="user:1")


def test_opting_out_deletes_snapshots(
    client: httpx.Client, device: DeviceCreds, engine: Engine, session: Session
) -> None:
    _beat(client, device)
    site = session.get(Site, device.site_id)
    assert site is not None
    set_site_snapshots(session=session, site=site, enabled=True, retention_hours=24, actor="u")
    session.commit()
    body = {
        "camera": "gate-1",
        "taken_at": utcnow().isoformat(),
        "jpeg_b64": base64.b64encode(jpeg_bytes(1)).decode(),
    }
    assert client.post(SNAPSHOT, json=body, headers=device.headers).status_code == 204
    set_site_snapshots(session=session, site=site, enabled=False, retention_hours=24, actor="u")
    session.commit()
    assert session.scalars(select(CameraSnapshot)).all() == []
    with pytest.raises(InvalidInput):
        set_site_snapshots(session=session, site=site, enabled=True, retention_hours=0, actor="u")
    row = session.get(Device, device.device_id)
    assert row is not None
    with pytest.raises(Conflict):
        store_snapshot(
            session=session,
            device=row,
            camera_id=_camera(engine, device),
            jpeg=jpeg_bytes(1),
            taken_at=utcnow(),
        )


@pytest.mark.parametrize(("w", "h"), [(320, 180), (640, 360), (97, 55)])
def test_jpeg_size_reads_the_frame_header(w: int, h: int) -> None:
    for params in ([], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]):
        data = cv2.imencode(".jpg", np.full((h, w, 3), 90, np.uint8), params)[1].tobytes()
        assert jpeg_size(data) == (w, h)
    assert jpeg_size(b"\xff\xd8\xff\xe0\x00\x10JFIF") is None
