"""Server-side web sessions: logout, revocation and expiry end a session at once.

Unlike the other web tests (SQLite by default), these run on SQLite and on
PostgreSQL: the session table is read on every request, so its queries must
behave the same on both.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, select
from starlette.requests import Request
from starlette.responses import Response

from server.cli import main
from server.security import hash_token
from server.settings import Settings
from server.users.models import User, UserSession
from server.users.service import set_disabled, set_password
from server.web.session import (
    COOKIE,
    SESSION_MAX_AGE_S,
    WebSession,
    new_session,
    read_session,
    write_session,
)
from tests.server.asgi import SyncASGITransport
from tests.server.clusters.support import new_session as db_session
from tests.server.conftest import TEST_SECRET
from tests.web.backends import pg_factory, web_engine_on_both_backends  # noqa: F401
from tests.web.world import PASSWORD, World, csrf_of, login


@pytest.fixture
def browser(app: FastAPI) -> Iterator[Callable[..., httpx.Client]]:
    """Makes more browsers on the same app, each with its own cookie jar."""
    transport = SyncASGITransport(app)
    made: list[httpx.Client] = []

    def make(cookie: str | None = None) -> httpx.Client:
        c = httpx.Client(transport=transport, base_url="http://lintel.test")
        if cookie is not None:
            c.cookies.set(COOKIE, cookie)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
    transport.close()


def _cookie(client: httpx.Client) -> str:
    value = client.cookies.get(COOKIE)
    assert value, "no session cookie"
    return value


def _decode(value: str, settings: Settings) -> WebSession:
    """What a cookie value holds, read the way the server reads it."""
    scope = {"type": "http", "headers": [(b"cookie", f"{COOKIE}={value}".encode())]}
    web = read_session(Request(scope), settings)
    assert web is not None
    return web


def _signed(web: WebSession, settings: Settings) -> str:
    """A correctly signed cookie value for ``web`` (what someone with the key could make)."""
    response = Response()
    write_session(response, web, settings)
    header = response.headers["set-cookie"]
    return header.split(";", 1)[0].split("=", 1)[1]


def _rows(engine: Engine, username: str) -> list[UserSession]:
    with db_session(engine) as s:
        user_id = s.scalar(select(User.id).where(User.username == username))
        rows = list(s.scalars(select(UserSession).where(UserSession.user_id == user_id)))
        s.expunge_all()
        return rows


def _user(engine: Engine, username: str) -> int:
    with db_session(engine) as s:
        user_id = s.scalar(select(User.id).where(User.username == username))
        assert user_id is not None
        return user_id


def test_login_records_exactly_one_row_holding_only_the_ids_hash(
    client: httpx.Client, world: World, engine: Engine, settings: Settings
) -> None:
    client.get("/web/login")
    anonymous = _decode(_cookie(client), settings)
    assert anonymous.sid is None
    with db_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(UserSession)) == 0  # no row before login
    assert login(client, "mgr_a").status_code == 303
    web = _decode(_cookie(client), settings)
    assert web.sid is not None and web.csrf != anonymous.csrf
    with db_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(UserSession)) == 1
    (row,) = _rows(engine, "mgr_a")
    assert row.id_hash == hash_token(web.sid)
    assert web.sid not in (row.id_hash, row.client, row.user_agent)
    assert row.revoked_at is None
    assert row.expires_at - row.created_at == timedelta(seconds=SESSION_MAX_AGE_S)
    assert row.user_agent.startswith("python-httpx")
    assert client.get("/web/queue").status_code == 200


def test_a_copied_cookie_is_refused_after_logout(
    client: httpx.Client, browser: Callable[..., httpx.Client], world: World, engine: Engine
) -> None:
    login(client, "mgr_a")
    other_client = browser(_cookie(client))
    assert other_client.get("/web/queue").status_code == 200  # the copy works while logged in
    page = client.get("/web/queue")
    assert client.post("/web/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    r = other_client.get("/web/queue")
    assert r.status_code == 303 and r.headers["location"].startswith("/web/login")
    (row,) = _rows(engine, "mgr_a")
    assert row.revoked_at is not None


def test_a_password_change_or_disabling_ends_every_session(
    client: httpx.Client, browser: Callable[..., httpx.Client], world: World, engine: Engine
) -> None:
    other_client = browser()
    login(client, "mgr_a")
    login(other_client, "mgr_a")
    login(browser(), "viewer_a")
    assert client.get("/web/queue").status_code == 200
    assert other_client.get("/web/queue").status_code == 200
    with db_session(engine) as s:
        user = s.get(User, _user(engine, "mgr_a"))
        assert user is not None
        set_password(session=s, user=user, password=PASSWORD, actor="test")  # even the same one
        s.commit()
    assert client.get("/web/queue").status_code == 303
    assert other_client.get("/web/queue").status_code == 303
    rows = _rows(engine, "mgr_a")
    assert len(rows) == 2 and all(r.revoked_at is not None for r in rows)
    # Other users keep theirs.
    assert [r.revoked_at for r in _rows(engine, "viewer_a")] == [None]

    login(client, "mgr_a")
    assert client.get("/web/queue").status_code == 200
    with db_session(engine) as s:
        user = s.get(User, _user(engine, "mgr_a"))
        assert user is not None
        set_disabled(session=s, user=user, disabled=True, actor="test")
        set_disabled(session=s, user=user, disabled=False, actor="test")  # revives nothing
        s.commit()
    assert client.get("/web/queue").status_code == 303


def test_an_expired_row_is_refused(
    client: httpx.Client, world: World, engine: Engine, settings: Settings
) -> None:
    login(client, "mgr_a")
    assert client.get("/web/queue").status_code == 200
    sid = _decode(_cookie(client), settings).sid
    assert sid is not None
    with db_session(engine) as s:
        row = s.get(UserSession, hash_token(sid))
        assert row is not None
        row.expires_at = row.created_at - timedelta(seconds=1)
        s.commit()
    # The cookie itself is still well within its signed max-age: the row decides.
    assert client.get("/web/queue").status_code == 303
    # The next login deletes the user's expired rows.
    login(client, "mgr_a")
    assert [r.id_hash for r in _rows(engine, "mgr_a")] != [hash_token(sid)]
    assert len(_rows(engine, "mgr_a")) == 1


def test_a_forged_or_unknown_session_id_is_refused(
    client: httpx.Client, browser: Callable[..., httpx.Client], world: World, settings: Settings
) -> None:
    login(client, "mgr_a")
    real = _decode(_cookie(client), settings)
    assert real.sid is not None
    stored = hash_token(real.sid)
    attempts = [
        _signed(new_session(secrets.token_urlsafe(32)), settings),  # signed, unknown id
        _signed(new_session(stored), settings),  # the database's hash replayed as an id
        _cookie(client)[:-2] + "xx",  # a bad signature
    ]
    for value in attempts:
        assert browser(value).get("/web/queue").status_code == 303
    assert client.get("/web/queue").status_code == 200  # the real one still works


def test_last_seen_is_written_at_most_once_a_minute(
    client: httpx.Client, world: World, engine: Engine, settings: Settings
) -> None:
    login(client, "mgr_a")
    sid = _decode(_cookie(client), settings).sid
    assert sid is not None
    (before,) = _rows(engine, "mgr_a")
    assert client.get("/web/queue").status_code == 200
    (after,) = _rows(engine, "mgr_a")
    assert after.last_seen_at == before.last_seen_at  # within the minute: no write
    with db_session(engine) as s:
        row = s.get(UserSession, hash_token(sid))
        assert row is not None
        row.last_seen_at = row.last_seen_at - timedelta(minutes=2)
        s.commit()
        old = row.last_seen_at
    assert client.get("/web/queue").status_code == 200
    (touched,) = _rows(engine, "mgr_a")
    assert touched.last_seen_at > old


def test_cli_lists_and_ends_a_users_sessions(
    client: httpx.Client,
    world: World,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("LINTEL_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("LINTEL_ENV", "test")
    monkeypatch.setenv("LINTEL_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("LINTEL_DATA_DIR", str(tmp_path))
    login(client, "mgr_a")
    assert main(["user", "sessions", "mgr_a", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in listed] == ["live"]
    assert listed[0]["user_agent"].startswith("python-httpx")
    assert main(["user", "logout-all", "mgr_a"]) == 0
    assert "ended 1 web session(s)" in capsys.readouterr().out
    assert client.get("/web/queue").status_code == 303
    assert main(["user", "sessions", "mgr_a", "--json"]) == 0
    assert [r["state"] for r in json.loads(capsys.readouterr().out)] == ["revoked"]
    assert main(["user", "logout-all", "nobody"]) == 1
