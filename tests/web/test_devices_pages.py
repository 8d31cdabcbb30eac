"""Devices and cameras in the web (issue 17 D) without a browser: who may do what,
the token and code shown once, camera settings through the same audited service,
snapshots audited, health in words."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from sqlalchemy import Engine, select

from server.audit.models import AuditEvent
from server.db import make_session_factory, utcnow
from server.devices.models import Camera, Device, DeviceEnrolment
from server.devices.service import record_heartbeat
from server.devices.settings import set_site_snapshots
from server.devices.snapshots import store_snapshot
from server.security import hash_token
from server.sites.models import Site
from tests.server.helpers import jpeg_bytes
from tests.web.world import World, csrf_of, login


def _camera(engine: Engine, device_id: int) -> int:
    with make_session_factory(engine)() as s:
        cam = s.scalar(select(Camera.id).where(Camera.device_id == device_id))
        assert cam is not None
        return cam


def _actions(engine: Engine) -> list[str]:
    with make_session_factory(engine)() as s:
        return list(s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_admin_adds_a_device_and_sees_token_code_and_snippet_once(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    login(client, "admin")
    page = client.get("/web/devices")
    assert page.status_code == 200 and 'id="add-device"' in page.text
    r = client.post(
        "/web/devices",
        data={"csrf_token": csrf_of(page.text), "site_id": str(world.site_a), "name": "gate-c"},
    )
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    token = re.search(r"LINTEL_DEVICE_TOKEN=(\S+)<", r.text)
    code = re.search(r'id="enrol-code">([A-Z0-9]{4}-[A-Z0-9]{4})<', r.text)
    assert token and code
    assert "name: gate-c" in r.text and "url: http://lintel.test" in r.text
    assert f"lintel-edge enrol --config /etc/lintel/edge.yaml --code {code.group(1)}" in r.text
    with make_session_factory(engine)() as s:
        device = s.scalars(select(Device).where(Device.name == "gate-c")).one()
        assert device.token_hash == hash_token(token.group(1))
        stored = s.scalars(select(DeviceEnrolment.code_hash)).one()
        assert stored == hash_token(code.group(1).replace("-", ""))
    # The device page never shows them again.
    again = client.get(f"/web/devices/{device.id}")
    assert again.status_code == 200
    assert token.group(1) not in again.text and code.group(1) not in again.text
    assert "Has never reported in" in again.text
    assert _actions(engine)[-2:] == ["device.add", "device.enrol_code"]


def test_managers_set_cameras_of_their_sites_only_and_admins_hold_the_keys(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    login(client, "mgr_a")
    cam_a, cam_b = _camera(engine, world.device_a), _camera(engine, world.device_b)
    page = client.get(f"/web/devices/{world.device_a}")
    assert page.status_code == 200 and 'class="stack camera-form"' in page.text
    assert "New enrolment code" not in page.text  # admins only
    csrf = csrf_of(page.text)
    form = {
        "csrf_token": csrf,
        "entrance": "A1 north door",
        "analyse_fps": "2.5",
        "roi": "0.1,0.2,0.9,0.8",
        "enabled": "1",
    }
    r = client.post(f"/web/cameras/{cam_a}", data=form)
    assert r.status_code == 303 and r.headers["location"].endswith("done=saved")
    with make_session_factory(engine)() as s:
        cam = s.get(Camera, cam_a)
        device = s.get(Device, world.device_a)
        assert cam is not None and device is not None
        assert (cam.analyse_fps, cam.roi, cam.enabled) == (2.5, [0.1, 0.2, 0.9, 0.8], True)
        assert device.config_version == 2
    shown = client.get(f"/web/devices/{world.device_a}")
    assert 'value="0.1,0.2,0.9,0.8"' in shown.text and 'value="A1 north door"' in shown.text
    # Bad input: a clear refusal, nothing changed.
    bad = client.post(f"/web/cameras/{cam_a}", data={**form, "roi": "0.5,0.5,0.51,0.9"})
    assert bad.status_code == 422 and "at least 5%" in bad.text
    # Another site's camera and device do not exist for this manager.
    assert client.post(f"/web/cameras/{cam_b}", data=form).status_code == 404
    assert client.get(f"/web/devices/{world.device_b}").status_code == 404
    # Keys are for admins.
    for action in ("code", "rotate", "disable"):
        r = client.post(f"/web/devices/{world.device_a}/{action}", data={"csrf_token": csrf})
        assert r.status_code == 403, action
    assert (
        client.post(
            "/web/devices", data={"csrf_token": csrf, "site_id": str(world.site_a), "name": "x"}
        ).status_code
        == 403
    )
    assert _actions(engine).count("camera.settings") == 1


def test_viewers_look_but_do_not_change(client: httpx.Client, world: World) -> None:
    login(client, "viewer_a")
    page = client.get(f"/web/devices/{world.device_a}")
    assert page.status_code == 200 and "camera-form" not in page.text
    cam = client.get("/web/devices")
    r = client.post(f"/web/devices/{world.device_a}/code", data={"csrf_token": csrf_of(cam.text)})
    assert r.status_code == 403


def test_rotate_disable_and_enable_from_the_web(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    login(client, "admin")
    csrf = csrf_of(client.get(f"/web/devices/{world.device_a}").text)
    r = client.post(f"/web/devices/{world.device_a}/rotate", data={"csrf_token": csrf})
    token = re.search(r"LINTEL_DEVICE_TOKEN=(\S+)<", r.text)
    assert r.status_code == 200 and token and "enrol-code" not in r.text
    with make_session_factory(engine)() as s:
        device = s.get(Device, world.device_a)
        assert device is not None and device.token_hash == hash_token(token.group(1))
    r = client.post(f"/web/devices/{world.device_a}/disable", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert "Disabled: its key is refused." in client.get(f"/web/devices/{world.device_a}").text
    client.post(f"/web/devices/{world.device_a}/enable", data={"csrf_token": csrf})
    assert _actions(engine)[-3:] == ["device.rotate_token", "device.disable", "device.enable"]


def test_snapshot_view_is_audited_and_needs_scope(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    cam = _camera(engine, world.device_a)
    jpeg = jpeg_bytes(5, size=80)
    with make_session_factory(engine)() as s:
        site = s.get(Site, world.site_a)
        device = s.get(Device, world.device_a)
        assert site is not None and device is not None
        set_site_snapshots(session=s, site=site, enabled=True, retention_hours=24, actor="t")
        store_snapshot(session=s, device=device, camera_id=cam, jpeg=jpeg, taken_at=utcnow())
        s.commit()
    login(client, "mgr_b")
    assert client.get(f"/web/cameras/{cam}/snapshot").status_code == 404
    client.post("/web/logout", data={"csrf_token": csrf_of(client.get("/web/devices").text)})
    login(client, "mgr_a")
    page = client.get(f"/web/devices/{world.device_a}")
    assert f"/web/cameras/{cam}/snapshot" in page.text
    r = client.get(f"/web/cameras/{cam}/snapshot")
    assert r.status_code == 200 and r.content == jpeg
    assert r.headers["cache-control"] == "private, no-store"
    assert _actions(engine)[-1] == "snapshot.view"


def test_health_is_flagged_in_words(client: httpx.Client, world: World, engine: Engine) -> None:
    with make_session_factory(engine)() as s:
        device = s.get(Device, world.device_a)
        assert device is not None
        stats = {
            "version": "1.2",
            "cameras": {
                "gate": {
                    "state": "running",
                    "fps": 25.0,
                    "frames": 100,
                    "last_track_at": "2026-12-01T11:30:00+00:00",
                }
            },
            "outbox_depth": 3400,
            "config_version": 1,
            "config_pinned": {"gate": ["roi"]},
            "gallery_version": 1,
        }
        record_heartbeat(session=s, device=device, software_version="1.2", stats=stats)
        device.config_version = 4
        # The camera went dark two hours ago: the next heartbeats say it is reconnecting.
        dark = {
            "gate": {
                "state": "reconnecting",
                "fps": 0.0,
                "frames": 100,
                "last_track_at": "2026-12-01T11:30:00+00:00",
            }
        }
        device.stats = {
            **(device.stats or {}),
            "cameras": dark,
            "frames_at": {"gate": (utcnow() - timedelta(hours=2, minutes=5)).isoformat()},
        }
        s.commit()
    login(client, "admin")
    text = client.get(f"/web/devices/{world.device_a}").text
    assert "Camera &#39;gate&#39; has sent no frames for 2 h 5 min." in text
    assert "Outbox backlog 3,400" in text
    assert "Runs config v1, server has v4." in text
    assert "2026-12-01 19:30" in text  # the last sighting, in the site's time
    # The box's edge.yaml pins the region: the form says so beside it, and only there.
    assert text.count("pinned on the box</span>") == 1
    assert re.search(r"Region of interest[^<]*<span class=\"badge pinned\">pinned on the box", text)
    listing = client.get("/web/devices").text
    assert "Outbox backlog 3,400" in listing
    client.get("/web/lang?to=zh-CN&next=/web/devices")
    zh = client.get(f"/web/devices/{world.device_a}").text
    assert "摄像头“gate”已 2 小时 5 分钟没有画面。" in zh and "运行设置 v1，服务器为 v4。" in zh
