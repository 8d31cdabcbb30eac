"""Issue 17 part I in a real browser: the register import, desktop in English and a 390x844
phone in Chinese. A GBK register with a bad row: the dry run names the row and the reason,
nothing is written; then a good register with a photos zip (real faces, enrolled by the
real engine) is applied: the occupants are in the database and the gallery version went up.
Screenshots go to ``artifacts/screenshots/``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, func, select

from server.occupants.models import FaceTemplate, Occupant
from server.sites.models import Site
from tests.server.clusters.support import new_session
from tests.server.imports.data import BAD_ROW, GOOD_ROWS, photos_zip, register_csv
from tests.web.browser import NEEDS_BROWSER, SHOTS
from tests.web.imports_world import build_import_world
from tests.web.world import PASSWORD

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = NEEDS_BROWSER

PHONE = {"width": 390, "height": 844}
FITS = "() => document.documentElement.scrollWidth <= window.innerWidth"
WAIT_MS = 300_000  # the dry run enrols with the real engine on a busy 2-core box


def _login(page: Page, *, zh: bool) -> None:
    page.goto("/web/login")
    page.get_by_label("用户名" if zh else "Username").fill("mgr")
    page.get_by_label("密码" if zh else "Password").fill(PASSWORD)
    page.get_by_role("button", name="登录" if zh else "Log in").click()
    page.wait_for_url("**/web/queue**")


def _dry_run(page: Page, register: Path, photos: Path | None, *, zh: bool) -> None:
    page.get_by_role("link", name="导入" if zh else "Import", exact=True).click()
    page.wait_for_url("**/web/imports")
    assert page.evaluate(FITS), "the upload form is wider than the screen"
    page.get_by_label("登记表文件" if zh else "Register file").set_input_files(str(register))
    if photos is not None:
        page.get_by_label(
            "照片（.zip，可选）" if zh else "Photos (.zip, optional)"
        ).set_input_files(str(photos))
    page.get_by_role(
        "button", name="上传并检查（试运行）" if zh else "Upload and check (dry run)"
    ).click()
    page.wait_for_url("**/web/imports/*")
    # The page's script polls the job and reloads once the dry run is ready.
    page.wait_for_selector("#dry-run-report", timeout=WAIT_MS)


@pytest.mark.parametrize("phone", [False, True], ids=["desktop-en", "phone-zh"])
def test_web_import_dry_run_shows_the_bad_row_then_a_good_file_applies(
    browser: Browser, base_url: str, engine: Engine, tmp_path: Path, phone: bool
) -> None:
    world = build_import_world(engine)
    bad = tmp_path / "登记表-有错.csv"
    bad.write_bytes(register_csv([*GOOD_ROWS, BAD_ROW], "gbk"))
    good = tmp_path / "登记表.csv"
    good.write_bytes(register_csv(GOOD_ROWS, "gbk"))
    photos = tmp_path / "照片.zip"
    photos.write_bytes(photos_zip())
    context = (
        browser.new_context(base_url=base_url, viewport=PHONE, locale="zh-CN")
        if phone
        else browser.new_context(base_url=base_url, locale="en-US")
    )
    page = context.new_page()
    tag = "phone-zh" if phone else "desktop-en"
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        _login(page, zh=phone)
        _dry_run(page, bad, photos, zh=phone)
        row = page.locator('tr.issue[data-row="4"]')
        assert row.count() == 1
        text = row.inner_text()
        assert "4" in text and "bad_role" in text and "王五" in text and "房东的朋友" in text
        assert ("身份无法识别" if phone else "Role not known") in text
        assert page.locator("#n-create").inner_text() == "2"
        assert page.locator("#n-failed").inner_text() == "1"
        assert page.locator("#apply").count() == 0 and page.locator("#cannot-apply").is_visible()
        assert page.evaluate(FITS), "the report is wider than the screen"
        page.screenshot(path=str(SHOTS / f"import-dry-run-bad-row-{tag}.png"), full_page=True)
        with new_session(engine) as s:
            assert s.scalar(select(func.count()).select_from(Occupant)) == 0
            before = s.scalar(select(Site.gallery_version).where(Site.id == world.site))

        _dry_run(page, good, photos, zh=phone)
        assert page.locator("#n-create").inner_text() == "2"
        assert page.locator("tr.issue").count() == 0
        page.locator("#apply").click()
        page.wait_for_selector("#gallery-version", timeout=WAIT_MS)
        assert page.locator("#import-status").get_attribute("data-status") == "applied"
        assert page.evaluate(FITS)
        page.screenshot(path=str(SHOTS / f"import-applied-{tag}.png"), full_page=True)
        with new_session(engine) as s:
            names = s.scalars(select(Occupant.name).where(Occupant.site_id == world.site))
            assert sorted(names) == ["张三", "李四"]
            assert s.scalar(select(func.count()).select_from(FaceTemplate)) == 2
            after = s.scalar(select(Site.gallery_version).where(Site.id == world.site))
        assert before is not None and after == before + 1
        assert f"{after}" in page.locator("#gallery-version").inner_text()
    finally:
        context.close()


def test_without_script_the_job_page_refreshes_itself_to_the_report(
    browser: Browser, base_url: str, engine: Engine, tmp_path: Path
) -> None:
    build_import_world(engine)
    bad = tmp_path / "register.csv"
    bad.write_bytes(register_csv([BAD_ROW], "gbk"))
    context = browser.new_context(base_url=base_url, locale="en-US", java_script_enabled=False)
    page = context.new_page()
    try:
        _login(page, zh=False)
        _dry_run(page, bad, None, zh=False)
        assert "bad_role" in page.locator('tr.issue[data-row="2"]').inner_text()
    finally:
        context.close()
