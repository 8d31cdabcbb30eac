"""A manager confirms a likely occupant in a real browser (the session's browser,
tests/web/browser.py). Writes ``artifacts/screenshots/likely.png`` (gitignored)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select

from server.cases.models import Case
from server.clusters.models import UnknownCluster
from server.occupants.chips import put_chip
from server.occupants.models import FaceTemplate
from tests.server.clusters.support import new_session
from tests.web.browser import NEEDS_BROWSER, SHOTS
from tests.web.test_likely import _resident_missed
from tests.web.test_suggest import _case_of_new_person, _occupant_with_template
from tests.web.world import PASSWORD, World, face_jpeg

if TYPE_CHECKING:
    from playwright.sync_api import Browser


pytestmark = NEEDS_BROWSER


def test_manager_confirms_a_likely_occupant(
    browser: Browser,
    base_url: str,
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
    with new_session(engine) as s:
        # Her registry photo's face chip, as the registry import keeps it (issue 14 #4).
        cluster = s.get(UnknownCluster, cluster_id)
        assert cluster is not None
        template = s.scalar(
            select(FaceTemplate).where(FaceTemplate.occupant_id == cluster.occupant_id)
        )
        assert template is not None
        put_chip(session=s, template=template, jpeg=face_jpeg(31))
        s.commit()
    SHOTS.mkdir(parents=True, exist_ok=True)

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
    assert "Probably 王芳" in section.locator("h2").inner_text()
    # The crops are real images fetched through the authenticated, audited endpoint.
    page.wait_for_function(
        "() => { const i = [...document.querySelectorAll('ul.crops img')];"
        " return i.length > 0 && i.every(x => x.complete && x.naturalWidth > 0); }"
    )
    # Her registry face beside the door crops, level with them.
    page.wait_for_function(
        "() => { const i = [...document.querySelectorAll('.registry-faces img')];"
        " return i.length > 0 && i.every(x => x.complete && x.naturalWidth > 0); }"
    )
    door = section.locator(".door-crops img").first.bounding_box()
    chip = section.locator(".registry-faces img").first.bounding_box()
    assert door and chip and chip["y"] < door["y"] + door["height"] / 2
    page.screenshot(path=str(SHOTS / "likely.png"), full_page=True)

    section.get_by_role("button", name="Confirm: this is 王芳").click()
    section.locator("button.armed").click()  # a final action asks once more (issue 14 #3)
    page.wait_for_url(re.compile(rf"/web/likely\?confirmed={cluster_id}$"))
    assert (
        page.get_by_role("status")
        .inner_text()
        .startswith(f"Face group #{cluster_id} confirmed as 王芳")
    )
    assert page.locator("section[data-cluster]").count() == 0
    assert page.locator("#likely-count").inner_text() == "0"
    context.close()

    with new_session(engine) as s:
        cluster = s.get(UnknownCluster, cluster_id)
        assert cluster is not None and cluster.suppression == "occupant"


def test_manager_settles_a_case_that_names_a_registered_occupant(
    browser: Browser,
    base_url: str,
    world: World,
    engine: Engine,
) -> None:
    """A registered resident the worker could not attribute became a case; the case page
    names them and "It is X" closes it in one click (screenshot case-suggest.png)."""
    occupant_id = _occupant_with_template(engine, world, "韩梅梅", 0.38)
    case_id = _case_of_new_person(engine, world)
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(base_url=base_url, locale="en-US")
    page = context.new_page()
    page.goto("/web/login")
    page.get_by_label("Username").fill("mgr_a")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/web/queue$"))
    page.goto(f"/web/cases/{case_id}")
    box = page.locator("#suggested-occupant")
    assert "May be registered occupant 韩梅梅" in box.get_by_role("heading").inner_text()
    assert page.locator("#desk-check").inner_text() == "Desk check"
    page.screenshot(path=str(SHOTS / "case-suggest.png"), full_page=True)
    box.get_by_role("button", name="It is 韩梅梅: add these faces and close").click()
    page.wait_for_timeout(500)
    # Not sent until the manager ticks that they compared the faces.
    assert page.url.endswith(f"/web/cases/{case_id}")
    assert page.evaluate("document.getElementById('suggest-checked').validity.valueMissing")
    box.get_by_label(re.compile("I have compared the faces")).check()
    box.get_by_role("button", name="It is 韩梅梅: add these faces and close").click()
    box.locator("button.armed").click()  # a final action asks once more (issue 14 #3)
    page.wait_for_url(re.compile(rf"/web/queue\?done={case_id}$"))
    assert f'data-case="{case_id}"' not in page.content()
    context.close()
    with new_session(engine) as s:
        case = s.get(Case, case_id)
        assert case is not None
        assert (case.outcome, case.occupant_id) == ("merged_into_occupant", occupant_id)
