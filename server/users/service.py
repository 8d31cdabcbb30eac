"""Users, their site scopes, API tokens and web sessions."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from server.audit.service import record
from server.db import utcnow
from server.errors import Conflict, InvalidInput, NotFound
from server.security import API_TOKEN_PREFIX, hash_password, hash_token, new_token
from server.users.models import ApiToken, User, UserSession, UserSite

ROLES = ("admin", "manager", "viewer")
# last_seen_at is written at most this often, so a busy session costs one
# read per request and a write a minute, not a write per request.
TOUCH_EVERY = timedelta(minutes=1)


def check_password(password: str, *, min_length: int) -> None:
    """:class:`InvalidInput` unless ``password`` has at least ``min_length`` characters."""
    if not password:
        raise InvalidInput("password is empty")
    if len(password) < min_length:
        raise InvalidInput(
            f"password is {len(password)} characters; at least {min_length} are required "
            "(LINTEL_PASSWORD_MIN_LENGTH)"
        )


def create_user(
    *,
    session: Session,
    username: str,
    role: str,
    password: str | None = None,
    site_ids: Sequence[int] = (),
    min_password_length: int = 1,
) -> User:
    """Create a user (argon2 password hash); managers and viewers need at least one site.

    ``min_password_length``: the caller's policy (``Settings.min_password_length``).
    """
    username = username.strip()
    if not username:
        raise InvalidInput("username is empty")
    if password is not None:
        check_password(password, min_length=min_password_length)
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {ROLES}, not {role!r}")
    if role != "admin" and not site_ids:
        raise InvalidInput(f"a {role} must be scoped to at least one site (--site)")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(
        username=username,
        role=role,
        password_hash=hash_password(password) if password else None,
    )
    session.add(user)
    session.flush()
    for site_id in sorted(set(site_ids)):
        session.add(UserSite(user_id=user.id, site_id=site_id))
    session.flush()
    return user


def create_api_token(*, session: Session, user_id: int, name: str = "") -> tuple[ApiToken, str]:
    """A new bearer token for scripts acting as the user (returned once, stored hashed)."""
    token = new_token(API_TOKEN_PREFIX)
    row = ApiToken(user_id=user_id, token_hash=hash_token(token), name=name)
    session.add(row)
    session.flush()
    return row, token


def user_for_token(*, session: Session, token: str) -> User | None:
    """The enabled user owning an API token, or None; records the token's last use."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    row.last_used_at = utcnow()
    session.flush()
    return user


def site_ids_of(*, session: Session, user: User) -> set[int] | None:
    """Sites the user may see; None means all (admin)."""
    if user.role == "admin":
        return None
    return set(session.scalars(select(UserSite.site_id).where(UserSite.user_id == user.id)))


def get_user_by_name(*, session: Session, username: str) -> User:
    """The user of this name; :class:`NotFound` when there is none."""
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None:
        raise NotFound(f"user {username!r} does not exist")
    return user


def set_password(
    *, session: Session, user: User, password: str, actor: str, min_length: int = 1
) -> int:
    """Give the user a new password (argon2), end all their web sessions, audit it.

    Their API tokens stay (a script's token is not the password); revoke them
    with :func:`revoke_api_tokens`. Returns how many web sessions ended.
    """
    check_password(password, min_length=min_length)
    user.password_hash = hash_password(password)
    ended = revoke_web_sessions(session=session, user_id=user.id)
    record(
        session=session,
        actor=actor,
        action="user.set_password",
        object_type="user",
        object_id=user.id,
        detail={"sessions": ended},
    )
    return ended


def set_disabled(*, session: Session, user: User, disabled: bool, actor: str) -> dict[str, int]:
    """Disable (or re-enable) a user, audited; disabling ends all their web sessions and
    deletes their API tokens, so re-enabling revives no credential that was out there."""
    user.disabled = disabled
    ended = {"sessions": 0, "api_tokens": 0}
    if disabled:
        ended = {
            "sessions": revoke_web_sessions(session=session, user_id=user.id),
            "api_tokens": delete_api_tokens(session=session, user_id=user.id),
        }
    session.flush()
    record(
        session=session,
        actor=actor,
        action="user.disable" if disabled else "user.enable",
        object_type="user",
        object_id=user.id,
        detail=ended if disabled else None,
    )
    return ended


def delete_api_tokens(*, session: Session, user_id: int) -> int:
    """Delete every API token of a user (not audited: see :func:`revoke_api_tokens`)."""
    result = session.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)


def revoke_api_tokens(*, session: Session, user: User, actor: str) -> int:
    """End every API token of the user at once, audited; returns how many there were."""
    count = delete_api_tokens(session=session, user_id=user.id)
    record(
        session=session,
        actor=actor,
        action="user.revoke_tokens",
        object_type="user",
        object_id=user.id,
        detail={"api_tokens": count},
    )
    return count


def log_out_everywhere(*, session: Session, user: User, actor: str) -> dict[str, int]:
    """End every web session and API token of the user (the leaver's first step), audited."""
    ended = {
        "sessions": revoke_web_sessions(session=session, user_id=user.id),
        "api_tokens": delete_api_tokens(session=session, user_id=user.id),
    }
    record(
        session=session,
        actor=actor,
        action="user.logout_all",
        object_type="user",
        object_id=user.id,
        detail=ended,
    )
    return ended


def password_fingerprint(password_hash: str | None) -> str:
    """A short digest of the stored password hash, kept with each web session."""
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


def open_web_session(
    *,
    session: Session,
    user: User,
    lifetime: timedelta,
    user_agent: str = "",
    client: str = "",
    now: datetime | None = None,
) -> str:
    """Record a new web session for the user; returns its id (for the cookie, never stored).

    Also deletes the user's sessions that have expired, so the table holds
    at most one lifetime's worth of logins per user.
    """
    now = now or utcnow()
    session.execute(
        delete(UserSession).where(UserSession.user_id == user.id, UserSession.expires_at <= now)
    )
    sid = secrets.token_urlsafe(32)
    session.add(
        UserSession(
            id_hash=hash_token(sid),
            user_id=user.id,
            pw=password_fingerprint(user.password_hash),
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetime,
            user_agent=user_agent[:200],
            client=client[:100],
        )
    )
    session.flush()
    return sid


def user_for_web_session(
    *, session: Session, sid: str, now: datetime | None = None
) -> tuple[User, bool] | None:
    """The enabled user of a live web session and whether ``last_seen_at`` was moved; else None.

    Live: the row exists, is neither revoked nor expired, and the user's
    password is the one they logged in with. One primary-key lookup (joined
    with the user); ``last_seen_at`` moves at most once per :data:`TOUCH_EVERY`.
    """
    now = now or utcnow()
    found = session.execute(
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.id_hash == hash_token(sid))
    ).first()
    if found is None:
        return None
    row, user = found[0], found[1]
    if (
        row.revoked_at is not None
        or row.expires_at <= now
        or user.disabled
        or row.pw != password_fingerprint(user.password_hash)
    ):
        return None
    touched = now - row.last_seen_at >= TOUCH_EVERY
    if touched:
        row.last_seen_at = now
        session.flush()
    return user, touched


def revoke_web_session(*, session: Session, sid: str, now: datetime | None = None) -> bool:
    """End one web session (logout); False when it was unknown or already ended."""
    result = session.execute(
        update(UserSession)
        .where(UserSession.id_hash == hash_token(sid), UserSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def revoke_web_sessions(*, session: Session, user_id: int, now: datetime | None = None) -> int:
    """End every live web session of a user; returns how many were live."""
    now = now or utcnow()
    result = session.execute(
        update(UserSession)
        .where(
            UserSession.user_id == user_id,
            UserSession.revoked_at.is_(None),
            UserSession.expires_at > now,
        )
        .values(revoked_at=now)
    )
    session.flush()
    return int(result.rowcount)  # type: ignore[attr-defined]


ENDED_SESSION_KEEP = timedelta(days=1)
"""A revoked session row stays this long (an admin sees recent logouts), then goes."""


def delete_ended_web_sessions(*, session: Session, now: datetime | None = None) -> int:
    """Delete every expired session row, and revoked ones after ``ENDED_SESSION_KEEP``
    (the worker's hourly purge); returns how many."""
    now = now or utcnow()
    result = session.execute(
        delete(UserSession).where(
            (UserSession.expires_at <= now)
            | (
                UserSession.revoked_at.is_not(None)
                & (UserSession.revoked_at <= now - ENDED_SESSION_KEEP)
            )
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def web_sessions_of(
    *, session: Session, user_id: int, now: datetime | None = None
) -> list[UserSession]:
    """A user's web sessions that have not expired (revoked ones included), newest first."""
    return list(
        session.scalars(
            select(UserSession)
            .where(UserSession.user_id == user_id, UserSession.expires_at > (now or utcnow()))
            .order_by(UserSession.created_at.desc())
        )
    )
