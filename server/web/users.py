"""Admin pages for users: add, disable/enable, unlock, reset a password, end sessions.

Each action calls the same service function as ``lintel-server user ...``
(:mod:`server.users.service`), which audits it; the route commits once. Only
admins see these pages (403 for everyone else); every POST carries the
session's CSRF token (:func:`server.web.routes.verified_form`).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from pydantic import Field
from sqlalchemy import func, select
from starlette.responses import RedirectResponse, Response

from server.audit.service import record
from server.db import utcnow
from server.deps import FormDep, SessionDep, UserDep, WebUser, app_settings
from server.errors import Forbidden, InvalidInput, NotFound
from server.sites.models import Site
from server.users.models import User, UserSession, UserSite
from server.users.service import (
    create_user,
    log_out_everywhere,
    set_disabled,
    set_password,
)
from server.web import queries
from server.web.routes import (
    PREFIX,
    WebRoute,
    _Form,
    _parse,
    page,
)
from server.web.session import locked_usernames, unlock_login

router = APIRouter(prefix=PREFIX, route_class=WebRoute, include_in_schema=False)

DONE = ("added", "disabled", "enabled", "unlocked", "password", "logged_out")


def _admin(user: WebUser) -> WebUser:
    if user.role != "admin":
        raise Forbidden("only admins manage users")
    return user


class AddUserForm(_Form):
    username: Annotated[str, Field(min_length=1, max_length=100)]
    role: Literal["admin", "manager", "viewer"]
    password: Annotated[str, Field(min_length=1, max_length=200)]


class PasswordForm(_Form):
    password: Annotated[str, Field(min_length=1, max_length=200)]


def _target(session: SessionDep, user_id: int) -> User:
    target = session.get(User, user_id)
    if target is None:
        raise NotFound(f"user {user_id} does not exist")
    return target


def _back(done: str, target: User) -> Response:
    return RedirectResponse(
        f"{PREFIX}/users?{urlencode({'done': done, 'who': target.username})}", status_code=303
    )


@router.get("/users")
def users_page(
    request: Request,
    session: SessionDep,
    user: UserDep,
    done: Annotated[str | None, Query(max_length=20)] = None,
    who: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """Every user: role, sites, disabled, locked, live web sessions; and their actions."""
    _admin(user)
    now = utcnow()
    users = list(session.scalars(select(User).order_by(User.username)))
    site_names = {s.id: s.name for s in session.scalars(select(Site))}
    scopes: dict[int, list[str]] = {}
    for user_id, site_id in session.execute(select(UserSite.user_id, UserSite.site_id)):
        scopes.setdefault(user_id, []).append(site_names.get(site_id, f"#{site_id}"))
    live = dict(
        session.execute(
            select(UserSession.user_id, func.count())
            .where(UserSession.expires_at > now, UserSession.revoked_at.is_(None))
            .group_by(UserSession.user_id)
        ).all()
    )
    return page(
        request,
        "users.html",
        user=user,
        users=users,
        scopes={k: sorted(v) for k, v in scopes.items()},
        live=live,
        locked=locked_usernames(session=session, now=now),
        sites=queries.visible_sites(session=session, scope=None),
        done=done if done in DONE else None,
        who=who,
    )


@router.post("/users")
def add_user(request: Request, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """A new user with a password and (managers, viewers) their sites."""
    _admin(user)
    site_ids = [int(k[5:]) for k in form if k.startswith("site_") and k[5:].isdigit()]
    body = _parse(AddUserForm, {k: v for k, v in form.items() if not k.startswith("site_")})
    known = set(session.scalars(select(Site.id)))
    if not set(site_ids) <= known:
        raise InvalidInput("a chosen site does not exist")
    created = create_user(
        session=session,
        username=body.username,
        role=body.role,
        password=body.password,
        site_ids=site_ids,
        min_password_length=app_settings(request).min_password_length,
    )
    # The same record as `lintel-server user add`.
    record(
        session=session,
        actor=user.actor,
        action="user.add",
        object_type="user",
        object_id=created.id,
        detail={"username": created.username, "role": created.role, "sites": sorted(site_ids)},
    )
    session.commit()
    return _back("added", created)


@router.post("/users/{user_id}/disable")
def disable_user(user_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Refuse the user's logins; ends their web sessions and deletes their API tokens."""
    _admin(user)
    _parse(_Form, form)
    target = _target(session, user_id)
    if target.id == user.user_id:
        raise InvalidInput("you cannot disable yourself (ask another admin)")
    set_disabled(session=session, user=target, disabled=True, actor=user.actor)
    session.commit()
    return _back("disabled", target)


@router.post("/users/{user_id}/enable")
def enable_user(user_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Let a disabled user log in again."""
    _admin(user)
    _parse(_Form, form)
    target = _target(session, user_id)
    set_disabled(session=session, user=target, disabled=False, actor=user.actor)
    session.commit()
    return _back("enabled", target)


@router.post("/users/{user_id}/unlock")
def unlock_user(user_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Lift the lock that failed logins put on the username."""
    _admin(user)
    _parse(_Form, form)
    target = _target(session, user_id)
    unlock_login(session=session, username=target.username, actor=user.actor)
    session.commit()
    return _back("unlocked", target)


@router.post("/users/{user_id}/password")
def reset_password(
    request: Request, user_id: int, form: FormDep, session: SessionDep, user: UserDep
) -> Response:
    """A new password (told to the user out of band); ends their web sessions."""
    _admin(user)
    body = _parse(PasswordForm, form)
    target = _target(session, user_id)
    set_password(
        session=session,
        user=target,
        password=body.password,
        actor=user.actor,
        min_length=app_settings(request).min_password_length,
    )
    session.commit()
    return _back("password", target)


@router.post("/users/{user_id}/logout-all")
def end_sessions(user_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """End every web session and API token of the user (a lost phone, a leaver)."""
    _admin(user)
    _parse(_Form, form)
    target = _target(session, user_id)
    log_out_everywhere(session=session, user=target, actor=user.actor)
    session.commit()
    return _back("logged_out", target)
