"""Issue 17 R in a real browser: desktop in English and a 390x844 phone in Chinese.

A manager finds an occupant by the last digits of her phone, adds a photo from
a file (the real bundled face engine enrols it: a template appears, its face
chip shows through the audited chip route), then moves her out; the site's
gallery, read as a camera box reads it (device token), bumps its version and
no longer holds her templates. Screenshots: ``artifacts/screenshots/register-*.png``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import Engine, select

from edge.wire import API_PREFIX
from server.occupants.models import FaceTemplate
from tests.server.clusters.support import new_session
from tests.web import faces
from tests.web.browser import NEEDS_BROWSER, SHOTS
from tests.web.test_register import Register, reg  # noqa: F401 (the fixture)
from tests.web.world import PASSWORD, World

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = NEEDS_BROWSER

PHONE = {"width": 390, "height": 844}
FITS = "() => document.documentElement.scrollWidth <= window.innerWidth"
CHIPS_LOADED = (
    "() => { const i = [...document.querySelectorAll('.registry-faces img')];"
    " return i.length > 0 && i.every(x => x.complete && x.naturalWidth > 0); }"
)
WORDS = {
    "en": {
        "nav": "Register",
        "search": "Search",
        "enrol": "Enrol the photo",
        "enrolled": "Photo enrolled",
        "move_out": "Move out",
        "moved": "Moved out; their faces have left",
        "confirm": "Confirm: move 王芳 out?",
        "too_large": "The photo is larger than this server accepts (8.0 MB)",
    },
    "zh": {
        "nav": "住户登记",
        "search": "搜索",
        "enrol": "登记照片",
        "enrolled": "照片已登记",
        "move_out": "迁出",
        "moved": "已迁出；其人脸已从门口人脸库移除",
        "confirm": "确认将 王芳 迁出？",
        "too_large": "照片超过本服务器接受的大小（8.0 MB）",
    },
}


def _gallery(base_url: str, token: str) -> tuple[int, set[int]]:
    r = httpx.get(
        f"{base_url}{API_PREFIX}/device/gallery", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200
    data = r.json()
    return int(data["version"]), {int(t["occupant_id"]) for t in data["templates"]}


@pytest.mark.parametrize("phone", [False, True], ids=["desktop-en", "phone-zh"])
def test_find_by_phone_tail_add_a_photo_then_move_out(
    browser: Browser,
    base_url: str,
    world: World,
    reg: Register,  # noqa: F811
    engine: Engine,
    phone: bool,
) -> None:
    words = WORDS["zh" if phone else "en"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = "register-phone" if phone else "register-desktop"
    context = browser.new_context(
        base_url=base_url,
        locale="zh-CN" if phone else "en-US",
        viewport=PHONE if phone else {"width": 1280, "height": 900},
    )
    page = context.new_page()
    page.goto("/web/login")
    page.locator("#username").fill("mgr_a")
    page.locator("#password").fill(PASSWORD)
    page.locator("#password").press("Enter")
    page.wait_for_url(re.compile(r"/web/queue$"))

    # Find her by the last four digits of her phone.
    page.get_by_role("link", name=words["nav"], exact=True).click()
    page.wait_for_url(re.compile(r"/web/register$"))
    page.locator("#register-q").fill("5678")
    page.get_by_role("button", name=words["search"]).click()
    page.wait_for_url(re.compile(r"q=5678"))
    rows = page.locator("tr.occupant-row")
    assert rows.count() == 1 and "…5678" in rows.inner_text()
    assert page.evaluate(FITS)
    page.screenshot(path=str(SHOTS / f"{shot}-search.png"), full_page=True)
    rows.get_by_role("link", name="王芳").click()
    page.wait_for_url(re.compile(rf"/web/occupants/{reg.wang}$"))
    assert page.locator("#no-templates").is_visible()
    photo_input = page.locator("#photo-file")
    assert photo_input.get_attribute("accept") == "image/*"
    assert photo_input.get_attribute("capture") == "user"  # the phone's camera

    # A photo over the server's size limit is refused in the page, in words.
    version, people = _gallery(base_url, reg.token_a)
    assert reg.wang not in people
    photo_input.set_input_files(
        files=[{"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": b"\xff" * 9_000_000}]
    )
    page.get_by_role("button", name=words["enrol"]).click()
    assert words["too_large"] in page.locator("#photo .too-large").inner_text()
    assert page.url.endswith(f"/web/occupants/{reg.wang}")

    # Add a photo from a file: a template appears, with its (audited) face chip.
    photo_input.set_input_files(
        files=[{"name": "wang.jpg", "mimeType": "image/jpeg", "buffer": faces.one_face()}]
    )
    page.get_by_role("button", name=words["enrol"]).click()
    page.wait_for_url(re.compile(r"done=photo_added$"))
    assert page.locator("#done").inner_text().startswith(words["enrolled"])
    assert page.locator("tr.template-row").count() == 1
    page.wait_for_function(CHIPS_LOADED)
    assert page.evaluate(FITS)
    page.screenshot(path=str(SHOTS / f"{shot}-photo.png"), full_page=True)
    with_face, people = _gallery(base_url, reg.token_a)
    assert with_face == version + 1 and reg.wang in people

    # Move her out (a destructive action asks once more): she leaves the gallery.
    button = page.locator("#move-out").get_by_role("button", name=words["move_out"])
    button.click()
    armed = page.locator("#move-out button.armed")
    assert armed.inner_text() == words["confirm"]
    armed.click()
    page.wait_for_url(re.compile(r"done=moved_out$"))
    assert page.locator("#done").inner_text().startswith(words["moved"])
    assert page.locator("#occupant-status").is_visible()
    assert page.evaluate(FITS)
    page.screenshot(path=str(SHOTS / f"{shot}-moved-out.png"), full_page=True)
    after, people = _gallery(base_url, reg.token_a)
    assert after > with_face and reg.wang not in people
    context.close()
    with new_session(engine) as s:
        assert (
            s.scalars(select(FaceTemplate).where(FaceTemplate.occupant_id == reg.wang)).all() == []
        )
