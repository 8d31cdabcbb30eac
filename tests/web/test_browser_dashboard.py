"""Issue 17 H in a real browser: on a 390x844 phone in Chinese, the dashboard's "needs
attention" block lists an offline box, a dark camera with a long name, a box that never
reported (its command as code) and a failing channel, and fits without sideways scroll.
The screenshot goes to ``artifacts/screenshots/dashboard-attention-phone-zh.png``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from server.db import make_session_factory
from server.notify.service import add_channel
from tests.web import health_world as hw
from tests.web.browser import NEEDS_BROWSER, SHOTS
from tests.web.world import PASSWORD, World

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = NEEDS_BROWSER

PHONE = {"width": 390, "height": 844}
FITS = "() => document.documentElement.scrollWidth <= window.innerWidth"
LONG_CAMERA = "north-gate-underground-car-park-entrance-camera-02"


def test_the_attention_block_fits_a_phone_in_chinese(
    browser: Browser, base_url: str, world: World, engine: Engine
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    hw.dark(engine, world.device_a)
    hw.offline(engine, hw.second_device(engine, world.site_a, "back-door"))
    lobby = hw.second_device(engine, world.site_a, "lobby-east-wing", camera=LONG_CAMERA)
    hw.dark(engine, lobby, camera=LONG_CAMERA)
    hw.second_device(engine, world.site_a, "garage")  # never reported
    with make_session_factory(engine)() as s:
        channel = add_channel(
            session=s,
            site_id=world.site_a,
            name="managers-a",
            kind="wecom",
            url="https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=robot-key-a",
        )
        channel.failing = True
        s.commit()
    context = browser.new_context(base_url=base_url, viewport=PHONE, locale="zh-CN")
    page = context.new_page()
    page.goto("/web/login")
    page.get_by_label("用户名").fill("mgr_a")
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/web/queue"))
    page.goto("/web/dashboard")
    block = page.locator("#attention")
    assert block.get_by_role("heading", name="需要处理").is_visible()
    items = block.locator("li.problem")
    assert items.count() == 5
    assert items.nth(0).inner_text().startswith("back-door: 离线：已 3 小时 10 分钟没有心跳。")
    assert block.get_by_text(f"摄像头“{LONG_CAMERA}”已 2 小时 5 分钟没有画面。").is_visible()
    assert block.locator("code", has_text="lintel-edge enrol").is_visible()
    assert block.get_by_text("通知渠道发送失败（0 条待发）。").is_visible()
    box = block.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert page.evaluate(FITS)
    page.screenshot(path=str(SHOTS / "dashboard-attention-phone-zh.png"), full_page=True)
    # Each line leads to its device page.
    block.get_by_role("link", name="lobby-east-wing").click()
    page.wait_for_url(re.compile(rf"/web/devices/{lobby}$"))
    assert page.get_by_text(f"摄像头“{LONG_CAMERA}”已 2 小时 5 分钟没有画面。").is_visible()
    context.close()
