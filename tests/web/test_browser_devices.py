"""Issue 17 D in a real browser: desktop in English adds a device, reads its snippet and
one-time code, and a real ``lintel-edge enrol`` + ``lintel-edge run`` join with that code;
a 390x844 phone in Chinese draws a camera's region on its snapshot and saves fps and
region. Screenshots go to ``artifacts/screenshots/``."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from sqlalchemy import Engine, select, update

from edge.face.models import resolve_pack
from lintel_demo.videogen import make_video
from server.audit.models import AuditEvent
from server.db import make_session_factory, utcnow
from server.devices.models import Camera, Device
from server.devices.settings import set_site_snapshots
from server.devices.snapshots import store_snapshot
from server.sites.models import Site
from tests.integration.conftest import walkins
from tests.web.browser import NEEDS_BROWSER, SHOTS
from tests.web.world import PASSWORD, World, face_jpeg

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = NEEDS_BROWSER

PHONE = {"width": 390, "height": 844}
FITS = "() => document.documentElement.scrollWidth <= window.innerWidth"


def _context(browser: Browser, base_url: str, *, phone: bool) -> BrowserContext:
    if phone:
        return browser.new_context(base_url=base_url, viewport=PHONE, locale="zh-CN")
    return browser.new_context(base_url=base_url, locale="en-US")


def _login(page: Page, username: str, *, zh: bool = False) -> None:
    page.goto("/web/login")
    page.get_by_label("用户名" if zh else "Username").fill(username)
    page.get_by_label("密码" if zh else "Password").fill(PASSWORD)
    page.get_by_role("button", name="登录" if zh else "Log in").click()
    page.wait_for_url(re.compile(r"/web/queue"))


def _wait(what: str, predicate: object, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert callable(predicate)
        if predicate():
            return
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


@pytest.mark.models
def test_admin_adds_a_device_and_a_real_edge_enrols_with_the_code(
    browser: Browser, base_url: str, world: World, engine: Engine, tmp_path: Path
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with make_session_factory(engine)() as s:  # the site runs the bundled recogniser
        s.execute(
            update(Site)
            .where(Site.id == world.site_a)
            .values(model_id=resolve_pack("buffalo_s").model_id)
        )
        s.commit()
    context = _context(browser, base_url, phone=False)
    page = context.new_page()
    _login(page, "admin")
    page.get_by_role("link", name="Devices").click()
    form = page.locator("#add-device")
    form.get_by_label("Site").select_option(str(world.site_a))
    form.get_by_label("Device").fill("gate-c")
    form.get_by_role("button", name="Add the device").click()
    page.wait_for_url(re.compile(r"/web/devices$"))
    assert page.get_by_text("Shown once: copy it now.").is_visible()
    code = page.locator("#enrol-code").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    snippet = yaml.safe_load(page.locator("#edge-yaml").inner_text())
    assert snippet["device"]["name"] == "gate-c" and snippet["server"]["url"] == base_url
    assert "token" not in page.locator("#edge-yaml").inner_text().lower()
    assert f"--code {code}" in page.locator("#edge-commands").inner_text()
    assert page.locator("#device-token").inner_text().startswith("LINTEL_DEVICE_TOKEN=")
    assert page.evaluate(FITS)
    page.screenshot(path=str(SHOTS / "device-added.png"), full_page=True)

    # The box: the snippet as given, with its own folders and a camera (a video here).
    video = make_video(tmp_path / "door.mp4", walkins(), fps=25.0, tail_s=0.6)
    snippet["device"]["data_dir"] = str(tmp_path / "edge")
    snippet["server"].update(heartbeat_s=1, upload_interval_s=0.2)
    snippet["cameras"][0].update(source=str(video.path), loop=True)
    snippet["model"] = {"threads": 1}
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump(snippet))
    env = {k: v for k, v in os.environ.items() if k != "LINTEL_DEVICE_TOKEN"}
    enrol = subprocess.run(
        [sys.executable, "-m", "edge.cli", "enrol", "--config", str(config), "--code", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert enrol.returncode == 0, enrol.stderr
    token_file = tmp_path / "edge" / "device.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() not in config.read_text()
    # A code works once.
    again = subprocess.run(
        [sys.executable, "-m", "edge.cli", "enrol", "--config", str(config), "--code", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "used or expired" in again.stderr

    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def reported() -> bool:
            with make_session_factory(engine)() as s:
                d = s.scalars(select(Device).where(Device.name == "gate-c")).one()
                cams = (d.stats or {}).get("cameras", {})
                return bool(cams.get("door", {}).get("fps", 0) > 0)

        _wait("the enrolled box's heartbeat with a running camera", reported, 90, log)
        page.get_by_role("link", name="To the device page").click()
        page.wait_for_url(re.compile(r"/web/devices/\d+$"))
        page.reload()
        assert page.locator(".badge.on", has_text="Online").first.is_visible()
        assert page.locator("section.camera[data-camera=door]").is_visible()
        assert "box v1 · server v1" in page.locator("dd.config-version").inner_text()
        assert page.evaluate(FITS)
        page.screenshot(path=str(SHOTS / "device-enrolled.png"), full_page=True)
        page.get_by_role("link", name="← Devices").click()
        row = page.locator("tr.device", has_text="gate-c")
        assert row.locator(".badge.on").is_visible()
        assert "Has never reported in" not in row.inner_text()
        page.screenshot(path=str(SHOTS / "devices-list.png"), full_page=True)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
    assert daemon.returncode == 0, log.read_text()[-3000:]
    with make_session_factory(engine)() as s:
        actions = list(s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert {"device.add", "device.enrol_code", "device.enrol", "device.enrol_failed"} <= set(
        actions
    )
    context.close()


def test_phone_draws_a_region_on_the_snapshot_and_saves_it_in_chinese(
    browser: Browser, base_url: str, world: World, engine: Engine
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with make_session_factory(engine)() as s:
        site = s.get(Site, world.site_a)
        device = s.get(Device, world.device_a)
        assert site is not None and device is not None
        cam = s.scalars(select(Camera).where(Camera.device_id == device.id)).one()
        set_site_snapshots(session=s, site=site, enabled=True, retention_hours=24, actor="t")
        # A 320x180 frame with a face in it: what a box sends.
        frame = face_jpeg(7, size=180)
        store_snapshot(session=s, device=device, camera_id=cam.id, jpeg=frame, taken_at=utcnow())
        s.commit()
        cam_id = cam.id
    context = _context(browser, base_url, phone=True)
    page = context.new_page()
    _login(page, "mgr_a", zh=True)
    page.goto("/web/devices")
    assert page.evaluate(FITS)
    page.screenshot(path=str(SHOTS / "devices-phone-zh.png"), full_page=True)
    page.get_by_role("link", name="gate-A").click()
    page.wait_for_url(re.compile(rf"/web/devices/{world.device_a}$"))
    snapshot = page.locator("img.snapshot")
    snapshot.wait_for()
    page.wait_for_function("() => document.querySelector('img.snapshot').naturalWidth > 0")
    assert page.evaluate(FITS)

    canvas = page.locator("canvas.roi")
    # mouse coordinates are the viewport's: the canvas must be on screen (the nav wraps
    # to several lines on a phone and pushes it down)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None and box["width"] > 200
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.1)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.9, steps=5)
    page.mouse.up()
    value = page.get_by_label(re.compile("关注区域")).input_value()
    x1, y1, x2, y2 = (float(v) for v in value.split(","))
    assert abs(x1 - 0.2) < 0.03 and abs(y1 - 0.1) < 0.03
    assert abs(x2 - 0.8) < 0.03 and abs(y2 - 0.9) < 0.03
    page.get_by_label("每秒分析帧数").fill("3")
    with page.expect_navigation():
        page.get_by_role("button", name="保存").first.click()
    assert "done=saved" in page.url, page.locator("main").inner_text()
    assert page.get_by_text("已保存。设备在下次心跳时生效，无需重启。").is_visible()
    shown = page.get_by_label(re.compile("关注区域")).input_value()
    assert [float(v) for v in shown.split(",")] == [x1, y1, x2, y2]
    assert page.evaluate(FITS)
    page.screenshot(path=str(SHOTS / "device-roi-phone-zh.png"), full_page=True)
    with make_session_factory(engine)() as s:
        saved = s.get(Camera, cam_id)
        assert saved is not None and saved.analyse_fps == 3.0 and saved.roi is not None
        assert [round(v, 3) for v in saved.roi] == [x1, y1, x2, y2]
        views = s.scalars(select(AuditEvent).where(AuditEvent.action == "snapshot.view")).all()
        assert views and all(v.actor.startswith("user:") for v in views)
    context.close()
