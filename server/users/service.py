"""Users, their site scopes and API tokens."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import utcnow
from server.errors import Conflict, InvalidInput
from server.security import API_TOKEN_PREFIX, hash_password, hash_token, new_token
from server.users.models import ApiToken, User, UserSite

ROLES = ("admin", "manager", "viewer")


def create_user(
    *,
    session: Session,
    username: str,
    role: str,
    password: str | None = None,
    site_ids: Sequence[int] = (),
) -> User:
    """Create a user (argon2 password hash); managers and viewers need at least one site."""
    username = username.strip()
    if not username:
        raise InvalidInput("username is empty")
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
