"""The manager flow in a real browser (Playwright driving Debian's chromium).

One browser per test session; the app runs in uvicorn on a loopback port in a
thread. Screenshots of the queue and a case page (desktop and phone) are
written to ``artifacts/screenshots/`` (gitignored) for review.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tests.web.browser import NEEDS_BROWSER, SHOTS
from tests.web.world import PASSWORD, World

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = NEEDS_BROWSER


def _open_count(page: Page) -> int:
    return int(page.locator("#count-open").inner_text())


def test_manager_enrols_the_top_case_and_sees_it_leave_the_queue(
    browser: Browser, base_url: str, world: World
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(base_url=base_url, locale="en-US")
    page = context.new_page()
    page.goto("/web/queue")
    assert "/web/login" in page.url  # logged out: sent to the login page
    page.get_by_label("Username").fill("mgr_a")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/web/queue$"))
    rows = page.locator("tr.case-row")
    assert rows.count() == 2
    before = _open_count(page)
    # The queue's crops are real images fetched through the authenticated endpoint.
    page.wait_for_function(
        "() => [...document.querySelectorAll('td.face img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(SHOTS / "queue.png"), full_page=True)

    top = rows.first.get_attribute("data-case")
    rows.first.get_by_role("link").click()
    page.wait_for_url(re.compile(rf"/web/cases/{top}$"))
    assert page.locator("#days-seen").inner_text() == "5"
    # Every visible form control has a label (screen readers, voice control).
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
        ".filter(el => el.labels.length === 0 && !el.getAttribute('aria-label'))"
        ".map(el => el.name)"
    )
    assert unlabelled == []
    page.screenshot(path=str(SHOTS / "case.png"), full_page=True)

    # Unit picker: search, then choose from the matches.
    page.get_by_label("Find unit").fill("101")
    page.get_by_role("button", name="Search").first.click()
    page.wait_for_url(re.compile(r"unit_q=101"))
    assert page.locator("#unit_id option:not([value=''])").count() == 1
    page.get_by_label("Unit", exact=True).select_option(str(world.unit_a))
    page.get_by_label("Name").fill("王芳")
    page.get_by_role("button", name="Enrol and close").click()
    page.locator("button.armed").click()  # a final action asks once more (issue 14 #3)
    page.wait_for_url(re.compile(rf"/web/queue\?done={top}$"))
    assert page.get_by_role("status").inner_text() == f"Case #{top} closed: Enrolled."
    assert _open_count(page) == before - 1
    assert page.locator(f'tr[data-case="{top}"]').count() == 0

    page.get_by_role("link", name="Dashboard").click()
    assert page.locator("#dash-open").inner_text() == str(before - 1)
    page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)

    page.get_by_role("link", name="Audit log").click()
    closed = page.locator('tr.audit-row[data-action="case.closed"]')
    assert closed.count() == 1
    assert "mgr_a" in closed.inner_text() and f"Case #{top}" in closed.inner_text()

    # Phone-sized screen: the queue still shows every case, as stacked cards.
    phone = browser.new_context(
        base_url=base_url,
        viewport={"width": 390, "height": 844},
        locale="zh-CN",
        storage_state=context.storage_state(),  # the same logged-in session
    )
    mobile = phone.new_page()
    mobile.goto("/web/queue")
    assert mobile.locator("tr.case-row").count() == before - 1
    mobile.screenshot(path=str(SHOTS / "queue-phone-zh.png"), full_page=True)
    fits = "() => document.documentElement.scrollWidth <= window.innerWidth"
    assert mobile.evaluate(fits)  # no sideways scrolling of the page
    mobile.locator("tr.case-row a").first.click()
    mobile.wait_for_url(re.compile(r"/web/cases/\d+$"))
    assert mobile.get_by_role("button", name="登记并结案").is_visible()
    mobile.screenshot(path=str(SHOTS / "case-phone-zh.png"), full_page=True)
    assert mobile.evaluate(fits)  # the wide strip scrolls inside its own box
    phone.close()
    context.close()


def test_scope_and_csrf_hold_in_the_browser(browser: Browser, base_url: str, world: World) -> None:
    context = browser.new_context(base_url=base_url, locale="en-US")
    page = context.new_page()
    page.goto("/web/login")
    # Keyboard only: the username field has the focus; type, Tab, type, Enter.
    assert page.evaluate("document.activeElement.id") == "username"
    page.keyboard.type("mgr_a")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/web/queue$"))
    # On a page, the first Tab reaches the skip link, and it is labelled.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"

    response = page.goto(f"/web/cases/{world.case_b}")
    assert response is not None and response.status == 404
    assert "Other Court" not in page.content()

    # A POST carrying the session cookie but no CSRF token (what a forged
    # cross-site form would send) is refused.
    own = page.goto("/web/queue")
    assert own is not None
    top = page.locator("tr.case-row").first.get_attribute("data-case")
    refused = context.request.post(f"/web/cases/{top}/close", form={"outcome": "visitor"})
    assert refused.status == 403
    page.goto("/web/queue")
    assert page.locator(f'tr[data-case="{top}"]').count() == 1
    context.close()
