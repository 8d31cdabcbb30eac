"""A manager confirms a likely occupant in a real browser (set up as test_browser.py).

Its browser runs in a thread of its own: test_browser.py's session-wide browser
keeps Playwright's event loop on the main thread, where a second sync
Playwright cannot start. Writes ``artifacts/screenshots/likely.png``
(gitignored) for review.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from server.clusters.models import UnknownCluster
from tests.server.clusters.support import new_session
from tests.web.test_browser import (  # noqa: F401  (base_url: a fixture; pytestmark: the skip)
    CHROMIUM,
    LAUNCH_ARGS,
    SHOTS,
    base_url,
    pytestmark,
    sync_api,
)
from tests.web.test_likely import _resident_missed
from tests.web.world import PASSWORD, World

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def _in_own_thread(flow: Callable[[], None], timeout_s: float = 120) -> None:
    """Run ``flow`` on a new thread and re-raise what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            flow()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), "the browser flow did not finish"
    if errors:
        raise errors[0]


def test_manager_confirms_a_likely_occupant(
    base_url: str,  # noqa: F811  (the imported fixture)
    world: World,
    engine: Engine,
) -> None:
    cluster_id = _resident_missed(
        engine,
        site_id=world.site_a,
        device_id=world.device_a,
        unit_id=world.unit_a,
        seed=31,
        name="王芳",
    )
    SHOTS.mkdir(parents=True, exist_ok=True)

    def flow() -> None:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            try:
                confirm(browser)
            finally:
                browser.close()

    def confirm(browser: Browser) -> None:
        context = browser.new_context(base_url=base_url, locale="en-US")
        page = context.new_page()
        page.goto("/web/login")
        page.get_by_label("Username").fill("mgr_a")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r"/web/queue$"))
        assert page.locator("#likely-count").inner_text() == "1"
        page.get_by_role("link", name=re.compile("^Likely residents")).click()
        page.wait_for_url(re.compile(r"/web/likely$"))
        section = page.locator(f'section[data-cluster="{cluster_id}"]')
        assert "Probably 王芳" in section.get_by_role("heading").inner_text()
        # The crops are real images fetched through the authenticated, audited endpoint.
        page.wait_for_function(
            "() => { const i = [...document.querySelectorAll('ul.crops img')];"
            " return i.length > 0 && i.every(x => x.complete && x.naturalWidth > 0); }"
        )
        page.screenshot(path=str(SHOTS / "likely.png"), full_page=True)

        section.get_by_role("button", name="Confirm: this is 王芳").click()
        page.wait_for_url(re.compile(rf"/web/likely\?confirmed={cluster_id}$"))
        assert (
            page.get_by_role("status")
            .inner_text()
            .startswith(f"Face group #{cluster_id} confirmed as 王芳")
        )
        assert page.locator("section[data-cluster]").count() == 0
        assert page.locator("#likely-count").inner_text() == "0"
        context.close()

    _in_own_thread(flow)
    with new_session(engine) as s:
        cluster = s.get(UnknownCluster, cluster_id)
        assert cluster is not None and cluster.suppression == "occupant"
