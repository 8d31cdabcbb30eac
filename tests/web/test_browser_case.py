"""The case loop a manager can trust, in a real browser (issue 14, the case page's half).

Desktop (en) and a 390x844 phone (zh-CN): enrolling under a registered name leaves
the register alone, final actions ask to confirm, a reopened enrol takes its faces
back, the registered person's faces stand beside the door crops (screenshots
``case-desk-check*.png`` in ``artifacts/screenshots/``), the strip shows the evening
on a phone, actions update the page in place, and the case says where and why.
"""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select, update

from server.cases.models import Case, CaseEvent
from server.occupants.chips import put_chip
from server.occupants.models import FaceTemplate, Occupant
from server.occupants.service import add_template, upsert_occupant
from server.sightings.models import Sighting
from server.sites.models import Site
from tests.server.clusters.support import MODEL, new_session, person
from tests.web.browser import NEEDS_BROWSER, SHOTS
from tests.web.test_suggest import _case_of_new_person, _occupant_with_template
from tests.web.world import PASSWORD, World, face_jpeg

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = NEEDS_BROWSER

PHONE = {"width": 390, "height": 844}
FACES_LOADED = (
    "() => { const i = [...document.querySelectorAll('#registry-faces img, #door-crops img')];"
    " return i.length > 1 && i.every(x => x.complete && x.naturalWidth > 0); }"
)
CONTROLS = (
    ".actions button, .actions select, .actions input:not([type=hidden]):not([type=radio]),"
    " .actions label.check, .actions summary, #reopen button"
)


def _login(browser: Browser, base_url: str, *, phone: bool = False, user: str = "mgr_a") -> Page:
    context: BrowserContext = browser.new_context(
        base_url=base_url,
        locale="zh-CN" if phone else "en-US",
        viewport=PHONE if phone else {"width": 1280, "height": 900},
    )
    page = context.new_page()
    page.goto("/web/login")
    page.locator("#username").fill(user)
    page.locator("#password").fill(PASSWORD)
    page.locator("#password").press("Enter")
    page.wait_for_url(re.compile(r"/web/queue$"))
    return page


def _top_case(engine: Engine, world: World) -> int:
    """Site A's case seen on 5 days (person 41, 19:00 site time)."""
    with new_session(engine) as s:
        cases = list(s.scalars(select(Case).where(Case.site_id == world.site_a)))
        return max(cases, key=lambda c: c.priority).id


def _register_wang_fang(engine: Engine, world: World) -> int:
    """The register's owner of unit A1-1-101, moved in 2019, one registry face (with chip)."""
    with new_session(engine) as s:
        wang = upsert_occupant(
            session=s,
            site_id=world.site_a,
            name="王芳",
            unit_id=world.unit_a,
            role="owner",
            move_in=date(2019, 5, 1),
        )
        template = add_template(
            session=s, occupant_id=wang.id, embedding=person(900), model_id=MODEL, source="registry"
        )
        put_chip(session=s, template=template, jpeg=face_jpeg(900, size=112))
        s.commit()
        return wang.id


def _templates(engine: Engine, occupant_id: int) -> int:
    with new_session(engine) as s:
        n = s.scalar(select(func.count()).where(FaceTemplate.occupant_id == occupant_id))
        return int(n or 0)


def _confirm_click(page: Page, name: str | re.Pattern[str]) -> None:
    """Tap a final action, see it ask, tap again."""
    button = page.get_by_role("button", name=name)
    label = button.inner_text()
    button.click()
    armed = page.locator("button.armed")
    assert armed.count() == 1 and armed.inner_text() != label  # it asks; nothing sent yet
    armed.click()


def test_wang_fang_enrol_leaves_the_registered_wang_fang_unchanged(
    browser: Browser, base_url: str, world: World, engine: Engine
) -> None:
    wang_id = _register_wang_fang(engine, world)
    case_id = _top_case(engine, world)
    page = _login(browser, base_url)
    page.goto(f"/web/cases/{case_id}")
    # No unit is preselected: "Enrol and close" with only a name goes nowhere.
    assert page.locator("#unit_id").input_value() == ""
    page.get_by_label("Name").fill("王芳")
    page.get_by_role("button", name="Enrol and close").click()
    assert page.locator("#unit_id").evaluate("el => el.validity.valueMissing")
    assert page.locator("button.armed").count() == 0
    # And the server refuses it too (a browser without the required check), in words.
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value") or ""
    refused = page.context.request.post(
        f"/web/cases/{case_id}/enrol", form={"unit_id": "", "name": "王芳", "csrf_token": csrf}
    )
    assert refused.status == 422
    assert "Choose the unit" in refused.text()
    with new_session(engine) as s:
        assert s.get(Case, case_id).status == "open"  # type: ignore[union-attr]

    # The 王芳 case: same unit, same name, enrolled from the case.
    page.locator("#unit_id").select_option(str(world.unit_a))
    assert "always registers a new person" in page.locator("#enrol-new").inner_text()
    _confirm_click(page, "Enrol and close")
    page.wait_for_url(re.compile(rf"/web/queue\?done={case_id}$"))
    with new_session(engine) as s:
        wang = s.get(Occupant, wang_id)
        assert wang is not None
        assert (wang.name, wang.role, wang.move_in, wang.unit_id) == (
            "王芳",
            "owner",
            date(2019, 5, 1),
            world.unit_a,
        )
        case = s.get(Case, case_id)
        assert case is not None and case.occupant_id not in (None, wang_id)
        same_name = s.scalar(
            select(func.count()).select_from(Occupant).where(Occupant.name == "王芳")
        )
        assert same_name == 2
    assert _templates(engine, wang_id) == 1  # the stranger is not recognised as her


def test_picking_an_existing_occupant_shows_her_face_and_what_changes_then_asks(
    browser: Browser, base_url: str, world: World, engine: Engine
) -> None:
    wang_id = _register_wang_fang(engine, world)
    case_id = _top_case(engine, world)
    page = _login(browser, base_url)
    page.goto(f"/web/cases/{case_id}")
    page.locator("summary", has_text="Is an existing occupant").click()
    page.locator("#occupant_id").select_option(str(wang_id))
    page.get_by_role("button", name="Compare faces").click()
    page.wait_for_url(re.compile(rf"pick={wang_id}"))
    registry = page.locator("#registry-faces")
    assert "王芳" in registry.inner_text()
    page.wait_for_function(FACES_LOADED)
    # Side by side: her registry face sits level with the door crops.
    door = page.locator("#door-crops img").first.bounding_box()
    chip = registry.locator("img").first.bounding_box()
    assert door and chip and chip["y"] < door["y"] + door["height"] / 2
    assert chip["x"] > door["x"] + door["width"]
    assert chip["width"] >= 100
    preview = page.locator("#merge-preview")
    assert "nothing else about 王芳 changes" in preview.inner_text()
    row = page.locator("#preview-templates").inner_text()
    assert re.search(r"\t1\t6 \(\+5\)", row)  # her one face, and the case's five
    assert _templates(engine, wang_id) == 1  # looking changed nothing
    _confirm_click(page, "Add to 王芳 and close")
    page.wait_for_url(re.compile(r"/web/queue\?done="))
    assert _templates(engine, wang_id) == 6
    with new_session(engine) as s:
        wang = s.get(Occupant, wang_id)
        assert wang is not None and (wang.role, wang.move_in) == ("owner", date(2019, 5, 1))
        # Every view of her face was audited.
        from server.audit.models import AuditEvent

        assert s.scalar(select(func.count()).where(AuditEvent.action == "chip.view")) >= 1


def test_every_final_action_asks_and_a_reopened_enrol_takes_its_faces_back(
    browser: Browser, base_url: str, world: World, engine: Engine
) -> None:
    case_id = _top_case(engine, world)
    page = _login(browser, base_url, phone=True)
    page.goto(f"/web/cases/{case_id}")
    # One tap on a close button only asks; the case stays open until the second tap.
    visitor = page.locator("button[value=visitor]")
    assert visitor.inner_text() == "访客"
    visitor.click()
    assert visitor.inner_text() == "确认结案为访客？"
    page.wait_for_timeout(300)
    with new_session(engine) as s:
        assert s.get(Case, case_id).status == "open"  # type: ignore[union-attr]
    # Not confirmed in time: the button goes back to what it was.
    page.wait_for_function("() => !document.querySelector('button.armed')", timeout=10_000)
    assert visitor.inner_text() == "访客"

    page.locator("#unit_id").select_option(str(world.unit_a))
    page.get_by_label("姓名").fill("李雷")
    with new_session(engine) as s:
        version = s.scalar(select(Site.gallery_version).where(Site.id == world.site_a))
    _confirm_click(page, "登记并结案")
    page.wait_for_url(re.compile(r"/web/queue\?done="))
    with new_session(engine) as s:
        case = s.get(Case, case_id)
        assert case is not None and case.outcome == "enrolled"
        lei = case.occupant_id
        assert lei is not None
    assert _templates(engine, lei) == 5

    page.locator("#undo-link").click()  # the queue's notice leads back to the case
    page.wait_for_url(re.compile(rf"/web/cases/{case_id}#reopen$"))
    _confirm_click(page, "重新打开")
    page.wait_for_url(re.compile(rf"/web/cases/{case_id}$"))
    assert page.get_by_role("button", name="登记并结案").is_visible()
    with new_session(engine) as s:
        case = s.get(Case, case_id)
        assert case is not None and (case.status, case.outcome) == ("open", None)
        assert s.get(Occupant, lei) is None  # the enrol made them; nothing else refers
        after = s.scalar(select(Site.gallery_version).where(Site.id == world.site_a))
        assert after is not None and version is not None and after > version + 5
        kinds = list(s.scalars(select(CaseEvent.kind).where(CaseEvent.case_id == case_id)))
        assert kinds[-2:] == ["closed", "reopened"]
    assert _templates(engine, lei) == 0


def test_desk_check_faces_side_by_side_on_desktop_and_phone(
    browser: Browser, base_url: str, world: World, engine: Engine
) -> None:
    occupant_id = _occupant_with_template(engine, world, "王芳", 0.38)
    with new_session(engine) as s:
        template = s.scalar(select(FaceTemplate).where(FaceTemplate.occupant_id == occupant_id))
        assert template is not None
        put_chip(session=s, template=template, jpeg=face_jpeg(7, size=112))
        s.commit()
    case_id = _case_of_new_person(engine, world)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for phone, shot in ((False, "case-desk-check.png"), (True, "case-desk-check-phone-zh.png")):
        page = _login(browser, base_url, phone=phone)
        page.goto(f"/web/cases/{case_id}")
        page.wait_for_function(FACES_LOADED)
        door = page.locator("#door-crops img").first.bounding_box()
        chip = page.locator("#registry-faces img").first.bounding_box()
        assert door and chip
        # Beside, not below: level with the first door crop, to its right.
        assert chip["y"] < door["y"] + door["height"] / 2 and chip["x"] > door["x"] + door["width"]
        assert min(door["width"], chip["width"]) >= 100  # large enough to compare
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(SHOTS / shot), full_page=True)
        # Click to enlarge: the face, its time and its entrance.
        page.locator("#door-crops a.zoom").first.click()
        dialog = page.locator("dialog#zoom")
        assert dialog.is_visible()
        page.wait_for_function(
            "() => { const i = document.querySelector('dialog#zoom img');"
            " return i.complete && i.naturalWidth > 0; }"
        )
        box = dialog.locator("img").bounding_box()
        assert (box and box["width"] > door["width"] * 2) or (box and box["width"] >= 340)
        assert "A1 east door" in dialog.locator("figcaption").inner_text()
        page.keyboard.press("Escape")
        page.context.close()


def test_phone_strip_evening_actions_near_the_top_touch_targets_and_in_place_updates(
    browser: Browser, base_url: str, world: World, engine: Engine
) -> None:
    case_id = _top_case(engine, world)
    page = _login(browser, base_url, phone=True)
    page.goto(f"/web/cases/{case_id}")
    # The strip opens on the evening (this person comes at 19:00) and says it scrolls.
    cue = page.locator(".strip-cue")
    assert cue.is_visible()
    evening = page.locator(".strip thead th").nth(20 + 1).bounding_box()  # hour 20
    assert evening and evening["x"] + evening["width"] <= PHONE["width"]
    seen = page.locator(".strip td.lv1, .strip td.lv2, .strip td.lv3").first.bounding_box()
    assert seen and seen["x"] >= 0 and seen["x"] + seen["width"] <= PHONE["width"]
    # The close buttons are on the first screen.
    visitor = page.get_by_role("button", name="访客", exact=True).bounding_box()
    assert visitor and visitor["y"] + visitor["height"] <= PHONE["height"]
    # Touch targets: every control of the actions at least 44 px tall.
    small = page.evaluate(
        f"() => [...document.querySelectorAll('{CONTROLS}')]"
        ".filter(el => el.offsetParent && el.getBoundingClientRect().height < 44)"
        ".map(el => el.outerHTML.slice(0, 80))"
    )
    assert small == []
    # In place: log a call; the page updates without a reload, keeping a typed name.
    page.evaluate("() => { window.__same_page = true; }")
    page.get_by_label("姓名").fill("韩梅梅")
    page.locator("summary", has_text="记录电话或上门").click()
    page.locator("#result").fill("没人接")
    page.get_by_role("button", name="保存").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.history li')]"
        ".some(li => li.textContent.includes('没人接'))"
    )
    assert page.evaluate("() => window.__same_page === true")
    assert page.get_by_label("姓名").input_value() == "韩梅梅"
    with new_session(engine) as s:
        kinds = list(s.scalars(select(CaseEvent.kind).where(CaseEvent.case_id == case_id)))
        assert kinds[-1] == "call"


def test_the_case_says_entrance_not_set_and_explains_its_priority(
    browser: Browser, base_url: str, world: World, engine: Engine
) -> None:
    case_id = _top_case(engine, world)
    with new_session(engine) as s:
        case = s.get(Case, case_id)
        assert case is not None
        # Two of the sightings came through a camera with no entrance set.
        from server.clusters.models import UnknownCluster

        cluster = s.get(UnknownCluster, case.cluster_id)
        assert cluster is not None
        ids = list(
            s.scalars(
                select(Sighting.id).where(Sighting.cluster_id == cluster.id).order_by(Sighting.id)
            )
        )[:2]
        s.execute(update(Sighting).where(Sighting.id.in_(ids)).values(entrance_id=None))
        s.commit()
    page = _login(browser, base_url)
    page.goto(f"/web/cases/{case_id}")
    assert "entrance not set — 2 times" in page.locator("#entrance-not-set").inner_text()
    why = page.locator("#priority-why").inner_text()
    assert re.search(r"5 days seen in the window \(\d+\.\d\d\)", why)
    assert "night entries" in why and "last seen" in why
    assert page.locator("#priority").get_attribute("title") == why
