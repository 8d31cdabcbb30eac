"""The dashboard's "needs attention" (issue 17 H): each device or camera with a problem,
in words, worst first, linked to its device page, scoped to what the user may see; one
line when all is fine; names escaped, command names as <code>."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine

from server.db import make_session_factory
from server.devices.models import Device
from server.notify.service import add_channel
from tests.web import health_world as hw
from tests.web.backends import pg_factory, web_engine_on_both_backends  # noqa: F401
from tests.web.world import World, login


def _attention(client: httpx.Client, url: str = "/web/dashboard") -> str:
    r = client.get(url)
    assert r.status_code == 200, r.text
    return r.text.split('id="attention"')[1].split("</section>")[0]


def test_an_offline_box_and_a_dark_camera_in_words_worst_first_in_both_languages(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    hw.dark(engine, world.device_a)
    back = hw.second_device(engine, world.site_a, "back-door")
    hw.offline(engine, back)
    hw.offline(engine, world.device_b)  # site B's box: not mgr_a's to see
    login(client, "mgr_a")
    block = _attention(client)
    offline = (
        f'<a href="/web/devices/{back}">back-door</a>: '
        '<span class="warn">Offline: no heartbeat for 3 h 10 min.'
    )
    dark = (
        f'<a href="/web/devices/{world.device_a}">gate-A</a>: '
        '<span class="warn">Camera &#39;gate&#39; has sent no frames for 2 h 5 min.'
    )
    assert offline in block and dark in block
    assert block.index(offline) < block.index(dark)  # offline is worse: the whole box is dark
    assert "gate-B" not in block and "fine" not in block
    client.get("/web/lang?to=zh-CN&next=/web/dashboard")
    zh = _attention(client)
    assert "需要处理" in zh
    assert 'back-door</a>: <span class="warn">离线：已 3 小时 10 分钟没有心跳。' in zh
    assert 'gate-A</a>: <span class="warn">摄像头“gate”已 2 小时 5 分钟没有画面。' in zh
    # Site B's dashboard does not exist for site A's manager; B's manager sees B's box.
    assert client.get(f"/web/dashboard?site={world.site_b}").status_code == 404
    client.post("/web/logout")
    client.cookies.clear()
    login(client, "mgr_b")
    block_b = _attention(client)
    assert f'href="/web/devices/{world.device_b}">gate-B</a>' in block_b
    assert "back-door" not in block_b and "gate-A" not in block_b


def test_all_fine_says_so_with_the_count(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    hw.healthy(engine, world.device_a)
    login(client, "viewer_a")
    assert "The site&#39;s one device is fine." in _attention(client)
    second = hw.second_device(engine, world.site_a, "back-door")
    hw.healthy(engine, second)
    retired = hw.second_device(engine, world.site_a, "retired")
    with make_session_factory(engine)() as s:  # turned off on purpose: not a problem
        device = s.get(Device, retired)
        assert device is not None
        device.disabled = True
        s.commit()
    block = _attention(client)
    assert '<p class="notice ok all-fine">All 2 devices are fine.</p>' in block
    assert "problem" not in block
    client.get("/web/lang?to=zh-CN&next=/web/dashboard")
    assert "全部 2 台设备运行正常。" in _attention(client)
    # One camera goes dark: the fine line gives way to the problem.
    hw.dark(engine, second)
    block = _attention(client)
    assert "all-fine" not in block and "back-door</a>" in block


def test_names_stay_escaped_and_command_names_become_code(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    hw.healthy(engine, world.device_a)
    evil = "<script>alert(1)</script>`x`"
    fresh = hw.second_device(engine, world.site_a, "<script>alert(2)</script>`y`")
    hw.dark(engine, hw.second_device(engine, world.site_a, "lobby", camera=evil), camera=evil)
    login(client, "admin")
    page = client.get(f"/web/dashboard?site={world.site_a}").text
    block = page.split('id="attention"')[1].split("</section>")[0]
    assert "<script>" not in page
    assert f'href="/web/devices/{fresh}">&lt;script&gt;alert(2)&lt;/script&gt;`y`</a>' in block
    # The camera's name sits inside a message: escaped first, then only `...` becomes code.
    assert "Camera &#39;&lt;script&gt;alert(1)&lt;/script&gt;<code>x</code>&#39; has sent" in block
    # The box that never reported: its message names the command, shown as code.
    assert "Has never reported in: install it and run <code>lintel-edge enrol</code>" in block
    assert "`lintel-edge enrol`" not in page
    # The same words on the devices list and the device page.
    listing = client.get(f"/web/devices?site={world.site_a}").text
    assert "<script>" not in listing and "<code>lintel-edge enrol</code>" in listing
    device = client.get(f"/web/devices/{fresh}").text
    assert "<script>" not in device and "<code>lintel-edge enrol</code>" in device


def test_a_failing_notification_channel_is_flagged_for_managers(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    hw.healthy(engine, world.device_a)
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
    login(client, "mgr_a")
    block = _attention(client)
    assert (
        f'<a href="/web/devices?site={world.site_a}#notify">managers-a</a>: '
        '<span class="warn">Notification channel fails to deliver (0 waiting).'
    ) in block
    assert "all-fine" not in block
    client.post("/web/logout")
    client.cookies.clear()
    login(client, "viewer_a")  # viewers do not see channels anywhere
    assert "managers-a" not in _attention(client)
