"""Login, session cookie, lockout, CSRF, logout and security headers of the web UI."""

from __future__ import annotations

import secrets

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import Engine, func, select

from server.app import create_app
from server.audit.models import AuditEvent
from server.cases.models import Case
from server.privacy.crypto import new_key_text
from server.settings import Settings
from server.users.models import User
from server.web.session import LOCKOUT_FAILURES, lockout_wait_s
from tests.server.asgi import SyncASGITransport
from tests.server.clusters.support import new_session
from tests.web.world import CHEAP_HASHER, PASSWORD, World, csrf_of, login


def _audit_count(engine: Engine, action: str) -> int:
    with new_session(engine) as s:
        return int(
            s.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
            )
            or 0
        )


def test_pages_need_a_login_and_come_back_after_it(client: httpx.Client, world: World) -> None:
    r = client.get("/web/queue?status=open")
    assert r.status_code == 303
    assert r.headers["location"] == "/web/login?next=/web/queue%3Fstatus%3Dopen"
    assert client.get("/web/crops/1").status_code == 303  # no face without a session
    form = client.get(r.headers["location"])
    r = client.post(
        "/web/login",
        data={
            "username": "mgr_a",
            "password": PASSWORD,
            "csrf_token": csrf_of(form.text),
            "next": "/web/queue?status=open",
        },
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/web/queue?status=open"
    assert client.get("/web/queue").status_code == 200


def test_session_cookie_flags_and_security_headers(client: httpx.Client, world: World) -> None:
    page = client.get("/web/login")
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # env=test: plain http on localhost
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
    r = login(client, "mgr_a")
    assert "httponly" in r.headers["set-cookie"].lower()
    # The JSON API is not a web page: no CSP added there.
    assert "content-security-policy" not in client.get("/healthz").headers


def test_cookie_is_secure_outside_dev_and_test(settings: Settings, engine: Engine) -> None:
    prod = settings.model_copy(
        update={
            "env": "prod",
            "secret_key": settings.secret_key,
            "migrate_on_start": False,
            # prod refuses to start without a crop key (server/privacy/crypto.py)
            "crop_key": SecretStr(new_key_text()),
        }
    )
    app: FastAPI = create_app(prod, engine=engine)
    transport = SyncASGITransport(app)
    try:
        with httpx.Client(transport=transport, base_url="https://lintel.test") as c:
            assert "secure" in c.get("/web/login").headers["set-cookie"].lower()
    finally:
        transport.close()


def test_wrong_password_is_refused_audited_and_locks_out(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    for _ in range(LOCKOUT_FAILURES - 1):
        r = login(client, "mgr_a", "wrong")
        assert r.status_code == 401
        assert "Wrong username or password" in r.text
    r = login(client, "mgr_a", "wrong")
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    # Locked: even the right password is refused now, and nothing was issued.
    r = login(client, "mgr_a")
    assert r.status_code == 429
    assert client.get("/web/queue").status_code == 303
    assert _audit_count(engine, "web.login_failed") == LOCKOUT_FAILURES
    with new_session(engine) as s:
        assert lockout_wait_s(session=s, username="mgr_a", ip="testclient-other") == 0
        assert lockout_wait_s(session=s, username="viewer_a", ip="127.0.0.1") == 0
    # Another user from the same address is not locked.
    assert login(client, "viewer_a").status_code == 303


def test_unknown_user_and_disabled_user_get_the_same_answer(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    with new_session(engine) as s:
        user = s.scalar(select(User).where(User.username == "mgr_b"))
        assert user is not None
        user.disabled = True
        s.commit()
    nobody = login(client, "nobody")
    disabled = login(client, "mgr_b")
    assert nobody.status_code == disabled.status_code == 401


def test_post_without_or_with_a_wrong_csrf_token_is_refused(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    form = client.get("/web/login")
    r = client.post("/web/login", data={"username": "mgr_a", "password": PASSWORD})
    assert r.status_code == 403
    r = client.post(
        "/web/login", data={"username": "mgr_a", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert r.status_code == 403
    assert login(client, "mgr_a").status_code == 303
    # The token from before the login no longer works: it was rotated.
    stale = csrf_of(form.text)
    with new_session(engine) as s:
        case_id = s.scalar(select(Case.id).where(Case.site_id == world.site_a))
    for data in ({"outcome": "visitor"}, {"outcome": "visitor", "csrf_token": stale}):
        r = client.post(f"/web/cases/{case_id}/close", data=data)
        assert r.status_code == 403
    with new_session(engine) as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "open"


def test_logout_ends_the_session_and_a_password_change_ends_others(
    client: httpx.Client, app: FastAPI, world: World, engine: Engine
) -> None:
    login(client, "mgr_a")
    page = client.get("/web/queue")
    assert page.status_code == 200
    r = client.post("/web/logout", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303
    assert client.get("/web/queue").status_code == 303
    assert _audit_count(engine, "web.logout") == 1

    login(client, "mgr_a")
    assert client.get("/web/queue").status_code == 200
    with new_session(engine) as s:
        user = s.scalar(select(User).where(User.username == "mgr_a"))
        assert user is not None
        user.password_hash = CHEAP_HASHER.hash(secrets.token_urlsafe(12))
        s.commit()
    assert client.get("/web/queue").status_code == 303


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/web/", "/api/v1/cases", "/web\\@evil"]
)
def test_login_never_redirects_off_the_web_ui(
    client: httpx.Client, world: World, target: str
) -> None:
    form = client.get("/web/login")
    r = client.post(
        "/web/login",
        data={
            "username": "mgr_a",
            "password": PASSWORD,
            "csrf_token": csrf_of(form.text),
            "next": target,
        },
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/web/queue"
