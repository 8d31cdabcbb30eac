"""Web sessions: a server-side session record, its signed cookie, CSRF token, and the login lockout.

Logging in records a row in ``web_sessions``
(:class:`~server.users.models.UserSession`) and sets a signed, timestamped
cookie (itsdangerous, keyed by the server's secret key): ``{"csrf", "sid"}``.
``sid`` is a random 256-bit id; the table keeps only its SHA-256, so a copy of
the database cannot be replayed as cookies. Every request looks the row up by
that hash (one primary-key read): a revoked, expired or unknown row, a
disabled user, or a password changed since login means logged out. So logout
revokes the row and a copied cookie stops working at once; changing a
password or disabling a user (:mod:`server.users.service`,
``lintel-server user logout-all``) ends all that user's sessions.
``SESSION_MAX_AGE_S`` is the absolute limit (row and cookie); there is no
idle timeout. ``last_seen_at`` moves at most once a minute.

Every visitor gets a cookie (``sid`` None: not logged in, no row), so the
login form carries a CSRF token too; logging in issues a fresh token and a
fresh id (no session fixation). Ended rows are deleted by the worker's hourly
purge (expired, or revoked a day ago) and a user's expired ones at their next login.

Failed logins are audit events (``web.login_failed``), so the lockout counts
them across worker processes and restarts, and an admin sees them in the
audit log. Three limits, each over ``LOCKOUT_WINDOW``, each -> 429 with
Retry-After: ``LOCKOUT_FAILURES`` failures for one username from one address
(since its last success); ``IP_LOCKOUT_FAILURES`` failures from one address
whatever the usernames (one password sprayed over many users); and
``GLOBAL_LOCKOUT_FAILURES`` failures from everywhere (a spray spread over many
addresses), which spares addresses that logged in successfully within
``KNOWN_ADDRESS_WINDOW``, so an attacker cannot lock the staff out.
From the ``WARN_AFTER``-th failure the login page says how many tries are
left (:func:`tries_left`); an admin's unlock (:func:`unlock_login`, the web
users page) restarts the count for a username from every address.

The address is the TCP peer: ``lintel-server run`` trusts ``X-Forwarded-For``
only from the proxies named by ``--forwarded-allow-ips``.
"""

from __future__ import annotations

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
from server.audit.service import record
from server.db import utcnow
from server.settings import Settings
from server.users.models import User
from server.users.service import open_web_session, revoke_web_session, user_for_web_session

COOKIE = "lintel_session"
SESSION_MAX_AGE_S = 12 * 3600  # one working day; then log in again
LOCKOUT_FAILURES = 5
"""Failed logins for one username from one address that lock that pair (3..20 sensible)."""
LOCKOUT_WINDOW = timedelta(minutes=15)
"""How far back failures count, and so the longest lock."""
IP_LOCKOUT_FAILURES = 20
"""Failed logins from one address, any usernames, that lock the address: 4 users mistyping
5 times each behind one office NAT; a sprayer gets 20 guesses per 15 minutes, not 5 per user."""
GLOBAL_LOCKOUT_FAILURES = 200
"""Failed logins from all addresses together that lock logins from unknown addresses: a
botnet spraying one password gets 200 guesses per 15 minutes; a site's staff rarely fail 20."""
KNOWN_ADDRESS_WINDOW = timedelta(days=30)
"""An address with a successful login this recent is not held by the global limit."""
FAILED = "web.login_failed"
SUCCEEDED = "web.login"
UNLOCKED = "web.login_unlock"
"""An admin lifted a username's lock (object_id: the username): earlier failures stop counting."""
WARN_AFTER = 3
"""Failed logins (one username, one address) after which the login page says how many tries are
left before the lock (1..LOCKOUT_FAILURES-1): at 5 failures to lock, the third warns "2 left"."""


@dataclass(frozen=True, slots=True)
class WebSession:
    """What the session cookie holds (``sid`` None: not logged in)."""

    csrf: str
    sid: str | None = None


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key.get_secret_value(), salt="lintel.web.session")


def new_session(sid: str | None = None) -> WebSession:
    """A fresh cookie session with a new CSRF token (``sid``: a recorded login's id)."""
    return WebSession(csrf=secrets.token_urlsafe(32), sid=sid)


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
    sid = data.get("sid")
    return WebSession(csrf=data["csrf"], sid=sid if isinstance(sid, str) and sid else None)


def write_session(response: Response, session: WebSession, settings: Settings) -> None:
    """Set the session cookie: HttpOnly, SameSite=Lax, Secure outside dev/test."""
    value = _serializer(settings).dumps({"csrf": session.csrf, "sid": session.sid})
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.env not in ("dev", "test"),
    )


def login_user(*, session: Session, request: Request, user: User) -> WebSession:
    """Record a new web session for ``user``; the cookie to set (fresh id and CSRF token)."""
    sid = open_web_session(
        session=session,
        user=user,
        lifetime=timedelta(seconds=SESSION_MAX_AGE_S),
        user_agent=request.headers.get("user-agent", ""),
        client=client_ip(request),
    )
    return new_session(sid)


def session_user(*, session: Session, web: WebSession | None) -> User | None:
    """The enabled user of a live recorded session, or None (logged out, revoked, expired)."""
    if web is None or web.sid is None:
        return None
    found = user_for_web_session(session=session, sid=web.sid)
    if found is None:
        return None
    user, touched = found
    if touched:
        # Only last_seen_at is pending here (the request has not started its
        # own work yet), so committing it now is safe and keeps GETs read-only.
        session.commit()
    return user


def logout_user(*, session: Session, web: WebSession | None) -> None:
    """Revoke the session's row, so every copy of its cookie stops working."""
    if web is not None and web.sid is not None:
        revoke_web_session(session=session, sid=web.sid)


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


def _wait_s(times: list[datetime], limit: int, now: datetime) -> int:
    """Seconds until fewer than ``limit`` of ``times`` (newest first) lie in the window."""
    if len(times) < limit:
        return 0
    # Locked until the oldest of the last N failures leaves the window.
    until = times[-1] + LOCKOUT_WINDOW
    return max(1, int((until - now).total_seconds()) + 1)


def _failures(session: Session, since: datetime, limit: int, *conditions: Any) -> list[datetime]:
    return list(
        session.scalars(
            select(AuditEvent.at)
            .where(
                AuditEvent.action == FAILED,
                AuditEvent.object_type == "login",
                AuditEvent.at > since,
                *conditions,
            )
            .order_by(AuditEvent.at.desc())
            .limit(limit)
        )
    )


def _pair_since(session: Session, object_id: str, actor: str, window_start: datetime) -> datetime:
    """Where this username's failures from this address start counting: the window, its last
    success from there, or an admin's unlock of the username, whichever is latest."""
    since = window_start
    last_ok = session.scalar(
        select(func.max(AuditEvent.at)).where(
            AuditEvent.action == SUCCEEDED,
            AuditEvent.object_type == "login",
            AuditEvent.object_id == object_id,
            AuditEvent.actor == actor,
        )
    )
    last_unlock = session.scalar(
        select(func.max(AuditEvent.at)).where(
            AuditEvent.action == UNLOCKED,
            AuditEvent.object_type == "login",
            AuditEvent.object_id == object_id,
        )
    )
    for at in (last_ok, last_unlock):
        if at is not None and at > since:
            since = at
    return since


def tries_left(*, session: Session, username: str, ip: str, now: datetime | None = None) -> int:
    """Failed logins this username may still make from this address before the lock
    (the per-address limit counted too, whichever is nearer)."""
    now = now or utcnow()
    object_id, actor = _key(username, ip)
    window_start = now - LOCKOUT_WINDOW
    since = _pair_since(session, object_id, actor, window_start)
    pair = _failures(
        session,
        since,
        LOCKOUT_FAILURES,
        AuditEvent.object_id == object_id,
        AuditEvent.actor == actor,
    )
    address = _failures(session, window_start, IP_LOCKOUT_FAILURES, AuditEvent.actor == actor)
    return max(0, min(LOCKOUT_FAILURES - len(pair), IP_LOCKOUT_FAILURES - len(address)))


def locked_usernames(*, session: Session, now: datetime | None = None) -> set[str]:
    """Usernames locked from at least one address now (the admin's users page)."""
    now = now or utcnow()
    rows = session.execute(
        select(AuditEvent.object_id, AuditEvent.actor)
        .where(
            AuditEvent.action == FAILED,
            AuditEvent.object_type == "login",
            AuditEvent.at > now - LOCKOUT_WINDOW,
        )
        .group_by(AuditEvent.object_id, AuditEvent.actor)
        .having(func.count() >= LOCKOUT_FAILURES)
    ).all()
    out = set()
    for object_id, actor in rows:
        if object_id and lockout_wait_s(
            session=session, username=object_id, ip=actor.removeprefix("ip:"), now=now
        ):
            out.add(object_id)
    return out


def unlock_login(*, session: Session, username: str, actor: str) -> None:
    """Lift the username's lock from every address (audited); the per-address and global limits
    stay, as they guard against guessing, not against one user's typos."""
    record(
        session=session,
        actor=actor,
        action=UNLOCKED,
        object_type="login",
        object_id=username[:100],
    )


def lockout_wait_s(*, session: Session, username: str, ip: str, now: datetime | None = None) -> int:
    """Seconds until this username may try again from this address (0: not locked).

    The longest of the three waits: this username from this address, this
    address for any username, and every address (unless this one is known).
    """
    now = now or utcnow()
    object_id, actor = _key(username, ip)
    window_start = now - LOCKOUT_WINDOW
    since = _pair_since(session, object_id, actor, window_start)
    pair = _failures(
        session,
        since,
        LOCKOUT_FAILURES,
        AuditEvent.object_id == object_id,
        AuditEvent.actor == actor,
    )
    # No reset on success for the address: logging in to one's own account must not
    # buy a sprayer 20 more guesses.
    address = _failures(session, window_start, IP_LOCKOUT_FAILURES, AuditEvent.actor == actor)
    wait = max(_wait_s(pair, LOCKOUT_FAILURES, now), _wait_s(address, IP_LOCKOUT_FAILURES, now))
    everyone = _failures(session, window_start, GLOBAL_LOCKOUT_FAILURES)
    global_wait = _wait_s(everyone, GLOBAL_LOCKOUT_FAILURES, now)
    if global_wait > wait:
        known = session.scalar(
            select(AuditEvent.id)
            .where(
                AuditEvent.action == SUCCEEDED,
                AuditEvent.object_type == "login",
                AuditEvent.actor == actor,
                AuditEvent.at > now - KNOWN_ADDRESS_WINDOW,
            )
            .limit(1)
        )
        if known is None:
            wait = global_wait
    return wait


def login_audit_key(username: str, ip: str) -> tuple[str, str]:
    """(object_id, actor) under which login attempts are recorded."""
    return _key(username, ip)
