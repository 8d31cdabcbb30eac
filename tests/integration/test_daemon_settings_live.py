"""Issue 17 D, live: a manager changes a camera's analysed fps and region of interest in
the web (a logged-in session, CSRF and all); the running ``lintel-edge run`` applies them
within one heartbeat, without a restart or reopening the stream, reports the new
settings version, and every sighting still reaches the server exactly once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from lintel_demo.videogen import GeneratedVideo
from server.db import make_engine, make_session_factory
from server.devices.models import Camera
from server.users.service import create_user
from tests.integration.harness import DaemonProcess, LiveStream, ServerProcess, wait_for

pytestmark = pytest.mark.models

PASSWORD = "a long enough test password"
HEARTBEAT_S = 2


def _add_manager(server: ServerProcess) -> None:
    engine = make_engine(f"sqlite:///{server.db_path}")
    try:
        with make_session_factory(engine)() as s:
            create_user(session=s, username="boss", role="admin", password=PASSWORD)
            s.commit()
    finally:
        engine.dispose()


def _camera_id(server: ServerProcess, name: str) -> int | None:
    engine = make_engine(f"sqlite:///{server.db_path}")
    try:
        with make_session_factory(engine)() as s:
            return s.scalar(select(Camera.id).where(Camera.name == name))
    finally:
        engine.dispose()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def test_web_settings_reach_the_running_daemon_without_a_restart_or_a_lost_sighting(
    tmp_path: Path,
    ffmpeg: str,
    entrance_video: GeneratedVideo,
    server: ServerProcess,
    processes: list[Any],
) -> None:
    _add_manager(server)
    stream = LiveStream(entrance_video.path, tmp_path / "ffmpeg.log")
    processes.append(stream)
    stream.start()
    daemon = DaemonProcess(
        tmp_path / "edge",
        server=server,
        cameras=[{"name": "door", "source": stream.url, "stall_timeout_s": 5}],
        server_overrides={"heartbeat_s": HEARTBEAT_S, "gallery_sync_s": 300},
    )
    processes.append(daemon)
    daemon.start()

    # Running, settings version 1 (the server's first), sightings delivered.
    daemon.wait(
        lambda s: (
            s["cameras"]["door"]["state"] == "running"
            and s["outbox"]["delivered"] >= 1
            and (s.get("config") or {}).get("version") == 1
        ),
        timeout=60,
        what="a delivered sighting and settings version 1",
    )
    first = daemon.status()
    pid, opens = first["pid"], first["cameras"]["door"]["opens"]
    assert first["config"]["cameras"]["door"]["analyse_fps"] == 5.0
    assert first["config"]["cameras"]["door"]["sample_every"] == 5  # 25 fps source
    camera_id = wait_for(
        lambda: _camera_id(server, "door"), timeout=10, what="the camera on the server"
    )

    # The manager changes them in the web.
    with httpx.Client(base_url=server.url, timeout=10) as web:
        login = web.get("/web/login")
        r = web.post(
            "/web/login",
            data={"username": "boss", "password": PASSWORD, "csrf_token": _csrf(login.text)},
        )
        assert r.status_code == 303, r.text
        page = web.get("/web/devices/1")
        assert page.status_code == 200 and "box v1 · server v1" in page.text
        r = web.post(
            f"/web/cameras/{camera_id}",
            data={
                "csrf_token": _csrf(page.text),
                "entrance": "Main door",
                "analyse_fps": "2",
                "roi": "0.02,0.05,0.98,0.95",
                "enabled": "1",
            },
        )
        assert r.status_code == 303 and r.headers["location"].endswith("done=saved")
        queued_at_change = daemon.status()["outbox"]["queued"]

        # Within one heartbeat (plus the fetch), without a restart.
        applied = daemon.wait(
            lambda s: (
                s["config"]["version"] == 2
                and s["config"]["cameras"]["door"]["sample_every"] == 12
                and s
            ),
            timeout=HEARTBEAT_S * 2 + 3,
            what="the daemon to apply settings version 2",
        )
        assert applied["pid"] == pid, "the daemon restarted"
        assert applied["cameras"]["door"]["opens"] == opens, "the stream was reopened"
        assert applied["config"]["cameras"]["door"] == {
            "enabled": True,
            "analyse_fps": 2.0,
            "roi": [0.02, 0.05, 0.98, 0.95],
            "sample_every": 12,
        }
        # The server hears which version the box runs; the page says both agree.
        wait_for(
            lambda: server.heartbeat().get("config_version") == 2,
            timeout=HEARTBEAT_S * 3,
            what="a heartbeat with config version 2",
            log=daemon.log_path,
        )
        assert "box v2 · server v2" in web.get("/web/devices/1").text

    # Walk-ins go on being seen and delivered with the new settings.
    daemon.wait(
        lambda s: s["outbox"]["queued"] > queued_at_change + 1 and s["outbox"]["depth"] == 0,
        timeout=40,
        what="new sightings after the change, delivered",
    )
    code, _took = daemon.terminate()
    assert code == 0, daemon.log_tail()
    final = daemon.status()
    ob = final["outbox"]
    assert ob["depth"] == 0 and ob["dropped"] == 0 and ob["dead"] == 0, ob
    total, distinct = server.counts()
    assert total == distinct, "a sighting was stored twice"
    assert total == ob["queued"] == ob["delivered"] == final["cameras"]["door"]["tracks"]
