"""Every request dependency, for every kind of caller, in one place.

A request is one database session (:func:`get_session`; the route commits) and
one caller: a camera box by its device token (:data:`DeviceDep`), a user of the
JSON API by their API token (:data:`CallerDep`, :data:`ManagerDep`,
:data:`AdminDep`), or a user of the web UI by their session cookie
(:data:`UserDep`, with :data:`FormDep` checking a POSTed form's CSRF token).
:mod:`server.security` keeps the primitives (hashing, tokens) these build on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from server.devices.models import Device
from server.errors import AuthRequired, Forbidden, InvalidInput, NotFound
from server.security import hash_token
from server.settings import Settings
from server.users.models import User
from server.users.service import site_ids_of, user_for_token
from server.web.errors import CsrfRejected, LoginRequired
from server.web.session import csrf_ok, read_session, session_user


# -- the database session -------------------------------------------------------------------
def get_session(request: Request) -> Iterator[Session]:
    """A session for one request. The route commits; anything not committed is rolled back."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def app_settings(request: Request) -> Settings:
    """The running app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def bearer_token(request: Request) -> str:
    """The bearer token of the request; :class:`AuthRequired` when absent or malformed."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthRequired("missing bearer token")
    return token.strip()


# -- camera boxes ---------------------------------------------------------------------------
def current_device(request: Request, session: SessionDep) -> Device:
    """The device owning the request's bearer token; 401 for unknown or disabled tokens."""
    token = bearer_token(request)
    device = session.scalar(select(Device).where(Device.token_hash == hash_token(token)))
    if device is None or device.disabled:
        raise AuthRequired("unknown or disabled device token")
    return device


DeviceDep = Annotated[Device, Depends(current_device)]


# -- users of the JSON API ------------------------------------------------------------------
class Caller(BaseModel):
    """The authenticated user and the sites they may see (None: all)."""

    model_config = ConfigDict(frozen=True)

    user_id: int
    role: str
    site_ids: frozenset[int] | None

    @property
    def actor(self) -> str:
        return f"user:{self.user_id}"

    @property
    def scope(self) -> set[int] | None:
        return None if self.site_ids is None else set(self.site_ids)

    def check_site(self, site_id: int) -> None:
        """Another tenant's site does not exist for the caller (404, not 403)."""
        if self.site_ids is not None and site_id not in self.site_ids:
            raise NotFound(f"site {site_id} does not exist")


def current_caller(request: Request, session: SessionDep) -> Caller:
    """Any enabled user with a valid API token."""
    user: User | None = user_for_token(session=session, token=bearer_token(request))
    if user is None:
        raise AuthRequired("unknown or disabled API token")
    ids = site_ids_of(session=session, user=user)
    session.commit()  # keep the token's last-use time
    return Caller(user_id=user.id, role=user.role, site_ids=None if ids is None else frozenset(ids))


CallerDep = Annotated[Caller, Depends(current_caller)]


def current_manager(caller: CallerDep) -> Caller:
    """A manager or an admin (viewers may not act on cases)."""
    if caller.role not in ("manager", "admin"):
        raise Forbidden("managers only")
    return caller


ManagerDep = Annotated[Caller, Depends(current_manager)]


def current_admin(caller: CallerDep) -> Caller:
    """An admin user (the audit log and subject requests span sites)."""
    if caller.role != "admin":
        raise Forbidden("admins only")
    return caller


AdminDep = Annotated[Caller, Depends(current_admin)]


# -- users of the web UI --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WebUser:
    """The logged-in user, their site scope (None: all) and the session's CSRF token."""

    user_id: int
    username: str
    role: str
    site_ids: frozenset[int] | None
    csrf: str

    @property
    def actor(self) -> str:
        return f"user:{self.user_id}"

    @property
    def scope(self) -> set[int] | None:
        return None if self.site_ids is None else set(self.site_ids)

    @property
    def can_act(self) -> bool:
        return self.role in ("admin", "manager")

    def sees(self, site_id: int) -> bool:
        return self.site_ids is None or site_id in self.site_ids


def current_user(request: Request, session: SessionDep) -> WebUser:
    """The session's user; :class:`LoginRequired` when logged out, revoked, expired or disabled."""
    web = read_session(request, app_settings(request))
    if web is None or web.sid is None:
        raise LoginRequired("not logged in")
    user = session_user(session=session, web=web)
    if user is None:
        raise LoginRequired("session no longer valid")
    ids = site_ids_of(session=session, user=user)
    return WebUser(
        user_id=user.id,
        username=user.username,
        role=user.role,
        site_ids=None if ids is None else frozenset(ids),
        csrf=web.csrf,
    )


UserDep = Annotated[WebUser, Depends(current_user)]


async def verified_form(request: Request) -> dict[str, str]:
    """The POSTed form, once its CSRF token matched the session's; else 403.

    Routes declare it before the session and the user, so the form is read and
    checked before the request takes a database connection (an unread body must
    never hold one; :class:`server.limits.BodyDeadline` bounds the read).
    """
    form = await request.form()
    web = read_session(request, app_settings(request))
    if not csrf_ok(web, form.get("csrf_token")):
        raise CsrfRejected("missing or wrong CSRF token")
    return {k: v for k, v in form.items() if k != "csrf_token" and isinstance(v, str)}


FormDep = Annotated[dict[str, str], Depends(verified_form)]


@dataclass(frozen=True, slots=True)
class UploadedForm:
    """A POSTed multipart form whose CSRF token matched: its text fields and its files."""

    fields: dict[str, str]
    files: dict[str, tuple[str, bytes]]
    """Field name -> (the file name the browser sent, the bytes); empty file inputs left out."""


class _InMemoryParser(MultiPartParser):
    # Starlette spools any file over 1 MB to a temporary file on disk; an upload here
    # may be a zip of photos (biometric data) that must never touch the disk. The body
    # is already whole in memory (BodyDeadline) and capped (BodySizeLimit), so keeping
    # the parts in memory too costs at most that cap once more.
    spool_max_size = 1 << 62


async def verified_upload(request: Request) -> UploadedForm:
    """The POSTed ``multipart/form-data`` form, once its CSRF token matched; else 403.

    Like :func:`verified_form`, read before the request takes a database connection.
    """
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        # A plain form carries no files: its CSRF token is checked all the same, and the
        # route says what is missing once it has checked who is asking.
        return UploadedForm(fields=await verified_form(request), files={})
    parser = _InMemoryParser(request.headers, request.stream(), max_files=8, max_fields=32)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidInput(f"unreadable upload: {exc.message}") from None
    try:
        web = read_session(request, app_settings(request))
        if not csrf_ok(web, form.get("csrf_token")):
            raise CsrfRejected("missing or wrong CSRF token")
        fields: dict[str, str] = {}
        files: dict[str, tuple[str, bytes]] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                if data or value.filename:
                    files[key] = (value.filename or "", data)
            elif key != "csrf_token":
                fields[key] = value
        return UploadedForm(fields=fields, files=files)
    finally:
        await form.close()


UploadDep = Annotated[UploadedForm, Depends(verified_upload)]
