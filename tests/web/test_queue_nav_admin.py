"""Issue 14, the queue/navigation/admin half, on SQLite and PostgreSQL.

#2 every queue filter combination answers 200 (site "All" sends ``site=``);
#6 history, audit and errors in words, in both languages; #7 one time zone
(the site's) on every page; #8 cameras without an entrance are flagged; #9 the
login warning, the lock page, ``/``, ``/favicon.ico``, the HTML 404 and the
admin's users pages (the same service functions as the CLI).
"""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select

from server.audit.models import AuditEvent
from server.cases.models import Case
from server.devices.models import Device
from server.devices.service import record_heartbeat
from server.sites.models import Building
from server.users.models import User
from server.web.i18n import LANG_COOKIE, LANGS, catalog
from server.web.session import FAILED, LOCKOUT_FAILURES, SUCCEEDED, UNLOCKED
from tests.server.asgi import SyncASGITransport
from tests.server.clusters.support import DAY0, ingest, item, look, new_session, person, work
from tests.web.backends import pg_factory, web_engine_on_both_backends  # noqa: F401
from tests.web.world import World, csrf_of, face_jpeg, login


def _rows(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-case="(\d+)"', html)]


def _buildings(engine: Engine) -> dict[str, int]:
    with new_session(engine) as s:
        return {b.name: b.id for b in s.scalars(select(Building))}


# -- #2 filters -----------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["", "active", "open", "assigned", "closed"])
@pytest.mark.parametrize("site", ["", "A", "B"])
def test_every_queue_filter_combination_answers_200(
    client: httpx.Client, world: World, engine: Engine, site: str, status: str
) -> None:
    """What the form sends: "All" is an empty value; a building of another site may still be
    chosen when the site changes; "assigned to me" is present or absent."""
    b = _buildings(engine)
    site_id = {"": "", "A": str(world.site_a), "B": str(world.site_b)}[site]
    login(client, "admin")
    for building in ("", str(b["A1"]), str(b["B1"])):
        for mine in (None, "true"):
            params = {"site": site_id, "building": building, "status": status}
            if mine:
                params["mine"] = mine
            r = client.get("/web/queue", params=params)
            assert r.status_code == 200, (params, r.status_code)
            if site == "A":  # only site A's cases, whatever else was chosen
                with new_session(engine) as s:
                    ids = set(s.scalars(select(Case.id).where(Case.site_id == world.site_a)))
                assert set(_rows(r.text)) <= ids


def test_site_all_keeps_the_other_filters(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    b = _buildings(engine)
    login(client, "admin")
    every = _rows(client.get("/web/queue", params={"site": ""}).text)
    assert len(every) == 3  # two cases at site A, one at site B
    a1 = client.get("/web/queue", params={"site": "", "building": b["A1"], "status": "active"})
    assert a1.status_code == 200 and len(_rows(a1.text)) == 2
    assert f'value="{b["A1"]}" selected' in a1.text
    # A site change with another site's building still chosen: the site wins.
    moved = client.get("/web/queue", params={"site": world.site_b, "building": b["A1"]})
    assert _rows(moved.text) == [world.case_b]


def test_the_empty_queue_links_to_closed_cases(client: httpx.Client, world: World) -> None:
    login(client, "mgr_a")
    page = client.get("/web/queue", params={"site": "", "mine": "true"})
    assert page.status_code == 200 and _rows(page.text) == []
    link = re.search(r'<a href="([^"]+)" id="closed-link">See closed cases</a>', page.text)
    assert link is not None
    assert client.get(link.group(1).replace("&amp;", "&")).status_code == 200
    closed = client.get("/web/queue", params={"status": "closed"}).text
    assert 'id="closed-link"' not in closed  # no link to itself


# -- #6 words, not data ---------------------------------------------------------------------
LEAKS = ("system:worker", "evidence", "{'", "crop.view", "case.view", "sighting ", "user:")


def _text(html: str) -> str:
    """What a reader sees: the markup without tags and attributes."""
    return re.sub(r"<[^>]*>", " ", html)


def _close_top_case(client: httpx.Client) -> int:
    page = client.get("/web/queue")
    case_id = _rows(page.text)[0]
    r = client.post(
        f"/web/cases/{case_id}/close",
        data={"outcome": "visitor", "notes": "sister", "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 303
    return case_id


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("en", ("Viewed a face photo", "Viewed a case", "Case: closed", "Lintel (automatic)")),
        ("zh-CN", ("查看人脸照片", "查看任务", "任务：结案", "Lintel（自动）")),
    ],
)
def test_history_and_audit_are_in_words(
    client: httpx.Client, world: World, lang: str, words: tuple[str, ...]
) -> None:
    client.cookies.set(LANG_COOKIE, lang)
    login(client, "mgr_a")
    case_id = _close_top_case(client)
    case = client.get(f"/web/cases/{case_id}").text
    crop = re.search(r'src="(/web/crops/\d+\?case=\d+)"', case)
    assert crop is not None and client.get(crop.group(1)).status_code == 200
    history = _text(case.split('class="history"')[1].split("</ol>")[0])
    for leak in LEAKS:
        assert leak not in history, leak
    assert words[3] in history
    audit = client.get("/web/audit").text
    table = _text(audit.split('<table class="audit">')[1])
    for leak in LEAKS:
        assert leak not in table, leak
    for word in words[:3]:
        assert word in table, word
    assert "mgr_a" in table and f"#{case_id}" in table


def test_a_conflict_in_chinese_is_said_in_chinese(client: httpx.Client, world: World) -> None:
    client.cookies.set(LANG_COOKIE, "zh-CN")
    login(client, "mgr_a")
    page = client.get("/web/queue")
    case_id = _close_top_case(client)
    again = client.post(
        f"/web/cases/{case_id}/close",
        data={"outcome": "visitor", "csrf_token": csrf_of(page.text)},
    )
    assert again.status_code == 409
    assert f"任务 #{case_id} 已结案（访客）" in again.text
    assert "is closed" not in again.text and "<title>409" not in again.text


# -- #7 one time zone -----------------------------------------------------------------------
def test_devices_and_audit_show_site_time_and_say_so(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    with new_session(engine) as s:
        device = s.get(Device, world.device_a)
        assert device is not None
        record_heartbeat(session=s, device=device, software_version="0.1.0", stats={})
        beat = device.last_heartbeat_at
        s.commit()
    assert beat is not None
    login(client, "admin")
    devices = client.get("/web/devices").text
    row = devices.split(f'data-device="{world.device_a}"')[1].split("</tr>")[0]
    local = beat + timedelta(hours=8)  # Asia/Shanghai has no daylight saving
    assert local.strftime("%Y-%m-%d %H:%M") in row
    assert "UTC" not in devices and "Times are site time (Asia/Shanghai)." in devices
    audit = client.get("/web/audit").text
    assert "UTC" not in audit and "Times are site time" in audit
    with new_session(engine) as s:
        last = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        assert last is not None
    shown = (last.at + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M")
    assert shown in audit.split('class="audit-row"')[1]
    assert "Times are site time (Asia/Shanghai)." in client.get("/web/queue").text


# -- #8 cameras without an entrance ---------------------------------------------------------
def test_a_camera_without_an_entrance_is_flagged(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    # A second camera of gate-A, never placed at an entrance, sees a new person.
    base = person(77)
    items = []
    for d in (0, 1, 2, 3):
        it = item(look(base, 77000 + d), DAY0 + timedelta(days=d), camera="lobby")
        it["crop_jpeg_b64"] = base64.b64encode(face_jpeg(77)).decode()
        items.append(it)
    ingest(engine, world.device_a, items)
    work(engine)
    login(client, "mgr_a")
    devices = client.get("/web/devices").text
    row = devices.split(f'data-device="{world.device_a}"')[1].split("</tr>")[0]
    assert "No entrance set for camera lobby" in row
    queue = client.get("/web/queue").text
    assert queue.count("entrance not set") == 1
    assert "1 camera(s) have no entrance set" in queue
    assert 'aria-describedby="building-hint"' in queue


# -- #9 login and navigation ----------------------------------------------------------------
def test_the_third_wrong_password_warns_and_the_lock_page_says_when_and_whom(
    client: httpx.Client, world: World
) -> None:
    for n in range(1, LOCKOUT_FAILURES):
        r = login(client, "mgr_a", "wrong")
        assert r.status_code == 401
        left = LOCKOUT_FAILURES - n
        warned = f"{left} tries left before a 15 minute lock." in r.text
        assert warned == (n >= 3), n
    client.cookies.set(LANG_COOKIE, "zh-CN")
    locked = login(client, "mgr_a", "wrong")
    assert locked.status_code == 429
    title = re.search(r"<title>(.*?)</title>", locked.text)
    assert title is not None and "429" not in title.group(1) and "账号暂时锁定" in title.group(1)
    assert re.search(r"请于 \d\d:\d\d（Asia/Shanghai）后再试", locked.text)
    assert "系统管理员" in locked.text
    hrefs = re.findall(r'<a [^>]*href="([^"]+)"', locked.text.split("<main")[1])
    assert hrefs == ["/web/login"]  # no link to a page that needs a login


def test_root_favicon_and_unknown_pages(client: httpx.Client, world: World) -> None:
    r = client.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/web/queue"
    assert client.get("/web/queue").headers["location"].startswith("/web/login")
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in icon.content
    for path in ("/web/nope", "/web/cases/1/nope", "/web"):
        page = client.get(path, headers={"accept-language": "zh-CN"})
        if path == "/web":
            assert page.status_code == 303
            continue
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "页面不存在" in page.text
    api = client.get("/api/v1/nope")
    assert api.status_code == 404 and api.headers["content-type"] == "application/json"


# -- #9 the admin's users pages -------------------------------------------------------------
def _second_client(app: FastAPI) -> httpx.Client:
    """Another browser: its own cookies, the same app."""
    return httpx.Client(transport=SyncASGITransport(app), base_url="http://lintel.test")


def _user(engine: Engine, name: str) -> User:
    with new_session(engine) as s:
        found = s.scalar(select(User).where(User.username == name))
        assert found is not None
        s.expunge(found)
        return found


def _post(client: httpx.Client, path: str, **data: str) -> httpx.Response:
    token = csrf_of(client.get("/web/users").text)
    return client.post(path, data={**data, "csrf_token": token})


def _actions(engine: Engine) -> list[str]:
    with new_session(engine) as s:
        return list(
            s.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.action.like("user.%") | (AuditEvent.action == "web.login_unlock"))
                .order_by(AuditEvent.id)
            )
        )


def test_users_pages_are_for_admins_only(client: httpx.Client, world: World) -> None:
    login(client, "mgr_a")
    assert client.get("/web/users").status_code == 403
    assert 'href="/web/users"' not in client.get("/web/queue").text
    page = client.get("/web/queue")
    target = 1
    r = client.post(f"/web/users/{target}/disable", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 403


def test_admin_adds_disables_enables_resets_and_ends_sessions(
    client: httpx.Client, world: World, engine: Engine, app: FastAPI
) -> None:
    login(client, "admin")
    assert 'href="/web/users"' in client.get("/web/queue").text
    r = _post(
        client,
        "/web/users",
        username="li_lei",
        role="manager",
        password="first password",
        **{f"site_{world.site_a}": "1"},
    )
    assert r.status_code == 303 and "done=added" in r.headers["location"]
    # Without a CSRF token nothing happens.
    assert client.post("/web/users", data={"username": "x", "role": "admin"}).status_code == 403

    other = _second_client(app)
    assert login(other, "li_lei", "first password").status_code == 303
    assert other.get("/web/queue").status_code == 200
    li = _user(engine, "li_lei")

    page = client.get("/web/users").text
    row = page.split('data-user="li_lei"')[1].split("</tr>")[0]
    assert "Sunny Court" in row and "active" in row

    assert _post(client, f"/web/users/{li.id}/logout-all").status_code == 303
    assert other.get("/web/queue").status_code == 303  # logged out
    assert login(other, "li_lei", "first password").status_code == 303

    assert _post(client, f"/web/users/{li.id}/password", password="second one").status_code == 303
    assert other.get("/web/queue").status_code == 303  # the password change ended it
    assert login(other, "li_lei", "first password").status_code == 401
    assert login(other, "li_lei", "second one").status_code == 303

    assert _post(client, f"/web/users/{li.id}/disable").status_code == 303
    assert other.get("/web/queue").status_code == 303
    assert login(other, "li_lei", "second one").status_code == 401
    assert "disabled" in client.get("/web/users").text.split('data-user="li_lei"')[1]
    assert _post(client, f"/web/users/{li.id}/enable").status_code == 303
    assert login(other, "li_lei", "second one").status_code == 303

    admin = _user(engine, "admin")
    refused = _post(client, f"/web/users/{admin.id}/disable")
    assert refused.status_code == 422 and not _user(engine, "admin").disabled
    assert _actions(engine) == [
        "user.add",
        "user.logout_all",
        "user.set_password",
        "user.disable",
        "user.enable",
    ]
    other.close()


def test_admin_unlocks_a_locked_user(
    client: httpx.Client, world: World, engine: Engine, app: FastAPI
) -> None:
    victim = _second_client(app)
    for _ in range(LOCKOUT_FAILURES):
        login(victim, "mgr_a", "wrong")
    assert login(victim, "mgr_a").status_code == 429
    login(client, "admin")
    row = client.get("/web/users").text.split('data-user="mgr_a"')[1].split("</tr>")[0]
    assert "locked (failed logins)" in row and "/unlock" in row
    mgr = _user(engine, "mgr_a")
    r = _post(client, f"/web/users/{mgr.id}/unlock")
    assert r.status_code == 303 and "done=unlocked" in r.headers["location"]
    assert (
        "locked"
        not in client.get("/web/users").text.split('data-user="mgr_a"')[1].split("</tr>")[0]
    )
    assert login(victim, "mgr_a").status_code == 303
    assert "web.login_unlock" in _actions(engine)
    victim.close()


def test_every_audit_action_the_code_records_has_words_in_both_languages() -> None:
    """A new audit action without words would show as ``crop.view`` again."""
    root = Path(__file__).resolve().parents[2]
    found = {"user.enable", FAILED, SUCCEEDED, UNLOCKED}
    for folder in ("server", "registry"):
        for path in (root / folder).rglob("*.py"):
            found |= set(re.findall(r'action="([a-z_]+\.[a-z_.]+)"', path.read_text("utf-8")))
    assert "crop.view" in found and "user.set_password" in found
    for lang in LANGS:
        messages = catalog(lang)
        missing = sorted(
            a
            for a in found
            if f"audit.action.{a}" not in messages
            and not (a.startswith("case.") and f"event.{a[5:]}" in messages)
        )
        assert missing == [], (lang, missing)
