"""The devices page's notification section: channels, state, last error; scoped; no secrets."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine

from server.notify.service import add_channel
from tests.server.clusters.support import new_session
from tests.web.world import World, login

SECRET = "page-secret-" + "s" * 20


def _channels(engine: Engine, world: World) -> None:
    with new_session(engine) as s:
        a = add_channel(
            session=s,
            site_id=world.site_a,
            name="managers-a",
            kind="wecom",
            url="https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=robot-key-a",
        )
        a.failing, a.last_error = True, "ConnectError: [Errno 111] Connection refused"
        add_channel(
            session=s,
            site_id=world.site_b,
            name="hook-b",
            kind="webhook",
            url="https://hooks.example/b",
            secret=SECRET,
        )
        s.commit()


def test_a_failing_channel_and_its_error_are_shown_to_its_sites_manager(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    _channels(engine, world)
    login(client, "mgr_a")
    page = client.get("/web/devices").text
    section = page.split('id="notify"')[1]
    assert "managers-a" in section and "failing" in section and "Connection refused" in section
    assert "robot-key-a" not in page  # the robot's key is a secret too
    assert "hook-b" not in section  # another site's channel


def test_admin_sees_every_channel_viewer_none(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    _channels(engine, world)
    login(client, "admin")
    page = client.get("/web/devices").text
    assert "managers-a" in page and "hook-b" in page and SECRET not in page
    client.post("/web/logout")
    client.cookies.clear()
    login(client, "viewer_a")
    assert 'id="notify"' not in client.get("/web/devices").text
