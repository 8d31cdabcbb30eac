"""Web sessions: a signed cookie, its CSRF token, and the login lockout.

The session is a signed, timestamped cookie (itsdangerous, keyed by the
server's secret key): ``{"csrf", "uid", "pw"}``. Every visitor gets one, so
the login form carries a CSRF token too; logging in issues a fresh one
(no session fixation). ``pw`` is a fingerprint of the user's password hash:
changing a password ends that user's other sessions. Being stateless, a
copied cookie stays valid until it expires (``SESSION_MAX_AGE_S``) even after
logout; a server-side session table would close that gap.

Failed logins are audit events (``web.login_failed``), so the lockout counts
them across worker processes and restarts, and an admin sees them in the
audit log. Lockout: ``LOCKOUT_FAILURES`` failures for one username from one
address within ``LOCKOUT_WINDOW`` (since the last success) -> 429.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from server.audit.models import AuditEvent
from server.db import utcnow
from server.settings import Settings

COOKIE = "lintel_session"
SESSION_MAX_AGE_S = 12 * 3600  # one working day; then log in again
LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW = timedelta(minutes=15)
FAILED = "web.login_failed"
SUCCEEDED = "web.login"


@dataclass(frozen=True, slots=True)
class WebSession:
    """What the session cookie holds (``uid`` None: not logged in)."""

    csrf: str
    uid: int | None = None
    pw: str | None = None


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key.get_secret_value(), salt="lintel.web.session")


def password_fingerprint(password_hash: str | None) -> str:
    """A short digest of the stored hash, bound into the cookie."""
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


def new_session(uid: int | None = None, password_hash: str | None = None) -> WebSession:
    """A fresh session with a new CSRF token."""
    return WebSession(
        csrf=secrets.token_urlsafe(32),
        uid=uid,
        pw=None if uid is None else password_fingerprint(password_hash),
    )


def read_session(request: Request, settings: Settings) -> WebSession | None:
    """The request's session, or None when absent, forged or expired."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data: Any = _serializer(settings).loads(raw, max_age=SESSION_MAX_AGE_S)
    except BadSignature:  # SignatureExpired is a subclass
        return None
    if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
        return None
    uid = data.get("uid")
    pw = data.get("pw")
    return WebSession(
        csrf=data["csrf"],
        uid=uid if isinstance(uid, int) else None,
        pw=pw if isinstance(pw, str) else None,
    )


def write_session(response: Response, session: WebSession, settings: Settings) -> None:
    """Set the session cookie: HttpOnly, SameSite=Lax, Secure outside dev/test."""
    value = _serializer(settings).dumps(
        {"csrf": session.csrf, "uid": session.uid, "pw": session.pw}
    )
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.env not in ("dev", "test"),
    )


def clear_session(response: Response, settings: Settings) -> None:
    """Remove the session cookie (logout)."""
    response.delete_cookie(
        COOKIE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.env not in ("dev", "test"),
    )


def csrf_ok(session: WebSession | None, token: object) -> bool:
    """Whether a submitted form token equals the session's (constant-time)."""
    if session is None or not isinstance(token, str) or not token:
        return False
    return hmac.compare_digest(session.csrf.encode(), token.encode())


def client_ip(request: Request) -> str:
    """The peer address (a proxy in front must be configured to pass the real one)."""
    return request.client.host if request.client else "unknown"


def _key(username: str, ip: str) -> tuple[str, str]:
    return username[:100], f"ip:{ip}"[:100]


def lockout_wait_s(*, session: Session, username: str, ip: str, now: datetime | None = None) -> int:
    """Seconds until this username may try again from this address (0: not locked)."""
    now = now or utcnow()
    object_id, actor = _key(username, ip)
    since = now - LOCKOUT_WINDOW
    last_ok = session.scalar(
        select(func.max(AuditEvent.at)).where(
            AuditEvent.action == SUCCEEDED,
            AuditEvent.object_type == "login",
            AuditEvent.object_id == object_id,
            AuditEvent.actor == actor,
        )
    )
    if last_ok is not None and last_ok > since:
        since = last_ok
    times = list(
        session.scalars(
            select(AuditEvent.at)
            .where(
                AuditEvent.action == FAILED,
                AuditEvent.object_type == "login",
                AuditEvent.object_id == object_id,
                AuditEvent.actor == actor,
                AuditEvent.at > since,
            )
            .order_by(AuditEvent.at.desc())
            .limit(LOCKOUT_FAILURES)
        )
    )
    if len(times) < LOCKOUT_FAILURES:
        return 0
    # Locked until the oldest of the last N failures leaves the window.
    until = times[-1] + LOCKOUT_WINDOW
    return max(1, int((until - now).total_seconds()) + 1)


def login_audit_key(username: str, ip: str) -> tuple[str, str]:
    """(object_id, actor) under which login attempts are recorded."""
    return _key(username, ip)
