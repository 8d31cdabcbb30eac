"""Issue 14 (queue, navigation, admin) in a real browser: desktop in English, a 390x844
phone in Chinese (tests/web/browser.py). Screenshots go to ``artifacts/screenshots/``."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from server.web.session import LOCKOUT_FAILURES
from tests.server.clusters.support import DAY0, ingest, item, look, person, work
from tests.web.browser import NEEDS_BROWSER, SHOTS
from tests.web.world import PASSWORD, World, face_jpeg

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = NEEDS_BROWSER

PHONE = {"width": 390, "height": 844}
FITS = "() => document.documentElement.scrollWidth <= window.innerWidth"
LEAKS = ("system:worker", "evidence", "{'", "crop.view", "case.view", "sighting ", "user:", "UTC")


def _login(page: Page, username: str, password: str = PASSWORD, *, zh: bool = False) -> None:
    page.goto("/web/login")
    page.get_by_label("用户名" if zh else "Username").fill(username)
    page.get_by_label("密码" if zh else "Password").fill(password)
    page.get_by_role("button", name="登录" if zh else "Log in").click()


def _context(browser: Browser, base_url: str, *, phone: bool) -> BrowserContext:
    if phone:
        return browser.new_context(base_url=base_url, viewport=PHONE, locale="zh-CN")
    return browser.new_context(base_url=base_url, locale="en-US")


def _expect_ok(page: Page, action: object) -> None:
    """Run a UI action that navigates; the new page must answer 200."""
    with page.expect_navigation() as nav:
        assert callable(action)
        action()
    response = nav.value
    assert response is not None and response.status == 200, (page.url, response)


def _seed_unplaced_camera(engine: Engine, world: World) -> None:
    """A person seen only by gate-A's second camera, which has no entrance."""
    base = person(77)
    items = []
    for d in (0, 1, 2, 3):
        it = item(look(base, 77000 + d), DAY0 + timedelta(days=d), camera="lobby")
        it["crop_jpeg_b64"] = base64.b64encode(face_jpeg(77)).decode()
        items.append(it)
    ingest(engine, world.device_a, items)
    work(engine)


def _click_through_filters(page: Page, world: World) -> None:
    assert page.locator("tr.case-row").count() == 3
    form = page.locator("form.filters")
    # Site stays "All" (site=) while every other filter changes: each answers 200.
    building = form.locator("select[name=building]")
    value = building.locator("option").nth(1).get_attribute("value")
    assert value
    _expect_ok(page, lambda: building.select_option(value))
    assert "site=&" in page.url and page.locator("tr.case-row").count() == 2
    _expect_ok(page, lambda: form.locator("select[name=status]").select_option("open"))
    _expect_ok(page, lambda: form.locator("input[name=mine]").check())
    assert page.locator("tr.case-row").count() == 0
    # The empty queue offers the closed cases.
    _expect_ok(page, lambda: page.locator("#closed-link").click())
    assert "status=closed" in page.url  # (the link leaves "assigned to me" out)
    _expect_ok(page, lambda: form.locator("button[type=submit]").click())
    _expect_ok(page, lambda: form.locator("select[name=site]").select_option(str(world.site_b)))
    # The other site's building was still chosen: the site wins, nothing breaks.
    _expect_ok(page, lambda: form.locator("select[name=status]").select_option("active"))
    assert page.locator("tr.case-row").count() == 1
    _expect_ok(page, lambda: form.locator("select[name=site]").select_option(""))
    _expect_ok(page, lambda: form.locator("input[name=mine]").check())
    assert page.locator("tr.case-row").count() == 0
    _expect_ok(page, lambda: form.locator("input[name=mine]").uncheck())
    assert page.locator("tr.case-row").count() == 3


def test_queue_filters_click_through_on_desktop_and_phone(
    browser: Browser, base_url: str, world: World
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for phone in (False, True):
        context = _context(browser, base_url, phone=phone)
        page = context.new_page()
        _login(page, "admin", zh=phone)
        page.wait_for_url(re.compile(r"/web/queue$"))
        _click_through_filters(page, world)
        assert page.evaluate(FITS)
        name = "queue-filters-phone-zh.png" if phone else "queue-filters.png"
        page.screenshot(path=str(SHOTS / name), full_page=True)
        context.close()


def test_history_audit_and_devices_speak_words_in_site_time(
    browser: Browser, base_url: str, world: World, engine: Engine
) -> None:
    _seed_unplaced_camera(engine, world)
    for phone in (False, True):
        context = _context(browser, base_url, phone=phone)
        page = context.new_page()
        _login(page, "mgr_a", zh=phone)
        page.wait_for_url(re.compile(r"/web/queue$"))
        # #8: the lobby camera's case has no entrance, and the queue says so.
        assert page.locator(".no-entrance").count() == 1
        assert page.locator(".no-entrance").inner_text() == (
            "未设置入口" if phone else "entrance not set"
        )
        assert page.locator(".tz-note").is_visible()
        page.locator("tr.case-row a").first.click()
        page.wait_for_url(re.compile(r"/web/cases/\d+$"))
        history = page.locator("ol.history").inner_text()
        for leak in LEAKS:
            assert leak not in history, leak
        assert ("Lintel（自动）" if phone else "Lintel (automatic)") in history
        page.goto("/web/audit")
        table = page.locator("table.audit").inner_text()
        for leak in LEAKS:
            assert leak not in table, leak
        assert ("查看任务" if phone else "Viewed a case") in table
        assert "Asia/Shanghai" in page.locator(".tz-note").inner_text()
        assert page.evaluate(FITS)
        page.screenshot(
            path=str(SHOTS / ("audit-phone-zh.png" if phone else "audit.png")), full_page=True
        )
        page.goto("/web/devices")
        flag = page.locator(f'tr[data-device="{world.device_a}"] .no-entrance')
        assert flag.is_visible() and "lobby" in flag.inner_text()
        assert "UTC" not in page.locator("main").inner_text()
        assert "Asia/Shanghai" in page.locator(".tz-note").inner_text()
        assert page.evaluate(FITS)
        context.close()


def test_login_warns_locks_in_chinese_and_an_admin_unlocks(
    browser: Browser, base_url: str, world: World
) -> None:
    phone = _context(browser, base_url, phone=True)
    page = phone.new_page()
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    root = page.goto("/")
    assert root is not None and root.status == 200 and "/web/login" in page.url
    for n in range(1, LOCKOUT_FAILURES):
        _login(page, "mgr_a", "wrong", zh=True)
        page.wait_for_load_state()
        warning = page.locator("#tries-left")
        if n < 3:
            assert warning.count() == 0
        else:
            assert warning.inner_text() == f"再错 {LOCKOUT_FAILURES - n} 次将锁定 15 分钟。"
    assert missing == []  # no /favicon.ico or other missing file asked for
    _login(page, "mgr_a", "wrong", zh=True)
    page.wait_for_load_state()
    assert "429" not in page.title() and "账号暂时锁定" in page.title()
    main = page.locator("main")
    assert re.search(r"请于 \d\d:\d\d（Asia/Shanghai）后再试", main.inner_text())
    assert "系统管理员" in main.inner_text()
    links = main.locator("a")
    assert links.count() == 1 and links.first.get_attribute("href") == "/web/login"
    assert page.evaluate(FITS)
    page.screenshot(path=str(SHOTS / "locked-phone-zh.png"), full_page=True)

    desk = _context(browser, base_url, phone=False)
    admin = desk.new_page()
    _login(admin, "admin")
    admin.wait_for_url(re.compile(r"/web/queue$"))
    admin.get_by_role("link", name="Users").click()
    admin.wait_for_url(re.compile(r"/web/users$"))
    row = admin.locator('tr[data-user="mgr_a"]')
    assert "locked" in row.locator(".state").inner_text()
    row.get_by_role("button", name="Unlock").click()
    admin.wait_for_url(re.compile(r"/web/users\?"))
    assert admin.get_by_role("status").inner_text() == "User mgr_a unlocked."
    admin.screenshot(path=str(SHOTS / "users.png"), full_page=True)
    desk.close()

    links.first.click()
    _login(page, "mgr_a", zh=True)
    page.wait_for_url(re.compile(r"/web/queue$"))
    nope = page.goto("/web/no-such-page")
    assert nope is not None and nope.status == 404
    assert page.locator("h1").inner_text() == "页面不存在"
    phone.close()
