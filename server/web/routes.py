"""The manager web UI: login, queue, case page with actions, crops, dashboard, devices, audit.

Server-rendered (Jinja2), no build step, no inline scripts. Thin routes: reads
come from :mod:`server.web.queries`, every change goes through
:mod:`server.cases` services (the same functions as the JSON API), and the
route commits once, so an outcome, its effects and its audit land together.

Access: a session cookie (:mod:`server.web.session`); admins see every site,
managers and viewers only theirs; another site's case, crop or dashboard does
not exist for them (404). Viewers may look but not act. Every POST form
carries the session's CSRF token; every crop view and case view is audited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response

from server.audit.service import record
from server.cases import outcomes, service
from server.cases.enums import NOT_CLOSED, CaseStatus
from server.cases.errors import CaseClosed
from server.cases.models import Case
from server.cases.rules import DEFAULT_TIMEZONE, site_zone
from server.db import utcnow
from server.deps import FormDep, SessionDep, UserDep, WebUser, app_settings
from server.devices.health import needs_attention
from server.errors import Forbidden, InvalidInput, LintelError, NotFound
from server.notify.views import channel_rows
from server.occupants import chips
from server.privacy.counts import people_with_templates
from server.security import hash_password, verify_password
from server.sightings.models import Sighting
from server.sites.models import Building, Site
from server.users.models import User
from server.web import humanize, queries
from server.web.errors import LoginLocked, LoginRequired, ReadOnly
from server.web.i18n import LANG_COOKIE, LANGS, request_language, translator
from server.web.session import (
    FAILED,
    LOCKOUT_FAILURES,
    LOCKOUT_WINDOW,
    SUCCEEDED,
    WARN_AFTER,
    WebSession,
    clear_session,
    client_ip,
    lockout_wait_s,
    login_audit_key,
    login_user,
    logout_user,
    new_session,
    read_session,
    tries_left,
    write_session,
)

log = logging.getLogger(__name__)

PREFIX = "/web"
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
# Verified against when the username does not exist, so both paths cost one argon2 check.
_DUMMY_HASH = hash_password("lintel-no-such-user")


# -- errors as pages ------------------------------------------------------------------------
class WebRoute(APIRoute):
    """Renders domain errors as HTML pages (the JSON API keeps its JSON handler)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                if request.method in ("GET", "HEAD"):
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    return RedirectResponse(f"{PREFIX}/login?next={quote(target)}", status_code=303)
                return error_page(request, 401, "error.login_required")
            except LoginLocked as exc:
                return locked_page(request, exc.retry_after_s)
            except CaseClosed as exc:
                # The service's words are English; the page says it in the reader's language.
                return error_page(
                    request,
                    409,
                    "error.case_closed",
                    id=exc.case_id,
                    outcome=translator(request_language(request))(
                        f"outcome.{exc.outcome or 'none'}"
                    ),
                )
            except LintelError as exc:
                key = {
                    401: "error.login_required",
                    403: "error.forbidden",
                    404: "error.not_found",
                    409: "error.conflict",
                }.get(exc.status_code, "error.bad_request")
                # 404/403 say nothing more (another site's objects do not exist);
                # a refused action shows the service's reason.
                detail = exc.detail if exc.status_code in (409, 422) else None
                if detail is not None and request_language(request) != "en":
                    # Shown in English (marked so) under the page's own words.
                    key = key if exc.status_code == 409 else "error.bad_request_detail"
                return error_page(request, exc.status_code, key, detail=detail)
            except RequestValidationError:
                return error_page(request, 422, "error.bad_request")

        return guarded


router = APIRouter(prefix=PREFIX, route_class=WebRoute, include_in_schema=False)


# -- the caller -----------------------------------------------------------------------------
def _actor(user: WebUser) -> WebUser:
    if not user.can_act:
        raise ReadOnly("viewers may not change cases")
    return user


# -- rendering ------------------------------------------------------------------------------
def _localtime(value: datetime | None, tz: tzinfo | None = None) -> str:
    """A time in the site's zone (every page says which zone; never UTC on one page and
    site time on the next). Without a site (a site-less audit event), the default zone."""
    if value is None:
        return "—"
    return value.astimezone(tz or site_zone(None)).strftime("%Y-%m-%d %H:%M")


def zone_names(zones: Mapping[int, tzinfo]) -> str:
    """The zones a page's times are in, for its "times are in ..." line."""
    return ", ".join(sorted({str(z) for z in zones.values()})) or DEFAULT_TIMEZONE


def _brief(value: object, limit: int = 4) -> str:
    """A history/audit detail value on one short line (long lists are cut)."""
    if isinstance(value, list | tuple):
        items = [str(v) for v in value]
        more = f" … (+{len(items) - limit})" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more
    return str(value)


TEMPLATES.env.filters["localtime"] = _localtime
TEMPLATES.env.filters["brief"] = _brief
TEMPLATES.env.filters.update(humanize.FILTERS)
TEMPLATES.env.filters["zone_names"] = zone_names


def _safe_next(target: str | None) -> str:
    """Only our own pages: no open redirect through ``next``."""
    if (
        target
        and target.startswith(f"{PREFIX}/")
        and not any(c in target for c in ("\\", "\n", "\r"))
    ):
        return target
    return f"{PREFIX}/queue"


def page(
    request: Request,
    template: str,
    *,
    user: WebUser | None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    web: WebSession | None = None,
    **context: Any,
) -> Response:
    """Render a page with the translator, the user and the CSRF token in context."""
    lang = request_language(request)
    csrf = user.csrf if user else (web.csrf if web else "")
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "t": translator(lang),
            "lang": lang,
            "langs": LANGS,
            "user": user,
            "csrf": csrf,
            "here": here,
            "here_q": quote(here),
            "prefix": PREFIX,
            **context,
        },
        status_code=status,
        headers=dict(headers or {}),
    )
    # Pages show personal data: never cache them in shared or browser caches.
    response.headers["Cache-Control"] = "no-store"
    if web is not None:
        write_session(response, web, app_settings(request))
    return response


def error_page(
    request: Request,
    status: int,
    message_key: str,
    *,
    headers: Mapping[str, str] | None = None,
    detail: str | None = None,
    hint_key: str | None = None,
    back_href: str | None = None,
    back_key: str | None = None,
    **values: Any,
) -> Response:
    """A small error page in the request's language (``detail``: the service's words)."""
    return page(
        request,
        "error.html",
        user=None,
        status=status,
        headers=headers,
        status_code=status,
        message_key=message_key,
        detail=detail,
        values=values,
        hint_key=hint_key,
        back_href=back_href,
        back_key=back_key,
    )


def locked_page(request: Request, retry_after_s: int) -> Response:
    """The lock page: when to try again (clock time and minutes), whom to ask, and a way
    back to the login page (not to a page that needs a login)."""
    until = utcnow() + timedelta(seconds=retry_after_s)
    return error_page(
        request,
        429,
        "login.locked",
        headers={"Retry-After": str(retry_after_s)},
        hint_key="login.locked_ask",
        back_href=f"{PREFIX}/login",
        back_key="login.back",
        minutes=max(1, (retry_after_s + 59) // 60),
        until=until.astimezone(site_zone(None)).strftime("%H:%M"),
        zone=DEFAULT_TIMEZONE,
    )


# -- login ----------------------------------------------------------------------------------
@router.get("", summary="Web UI root")
def root() -> Response:
    return RedirectResponse(f"{PREFIX}/queue", status_code=303)


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    """The login page; gives an anonymous session (for its CSRF token) if there is none."""
    web = read_session(request, app_settings(request)) or new_session()
    return page(request, "login.html", user=None, web=web, next=_safe_next(next), error=None)


@router.post("/login")
def login(request: Request, form: FormDep, session: SessionDep) -> Response:
    """Check the password (argon2); lock out after repeated failures; rotate the session."""
    username = form.get("username", "").strip()[:100]
    password = form.get("password", "")
    target = _safe_next(form.get("next"))
    ip = client_ip(request)
    object_id, actor = login_audit_key(username, ip)
    wait = lockout_wait_s(session=session, username=username, ip=ip)
    if wait:
        raise LoginLocked("too many failed logins", retry_after_s=wait)
    user = session.scalar(select(User).where(User.username == username)) if username else None
    ok = verify_password(
        user.password_hash if user and user.password_hash else _DUMMY_HASH, password
    )
    if user is None or user.disabled or not user.password_hash or not ok:
        record(
            session=session, actor=actor, action=FAILED, object_type="login", object_id=object_id
        )
        session.commit()
        log.info("web login failed for %r from %s", username, ip)
        wait = lockout_wait_s(session=session, username=username, ip=ip)
        if wait:
            raise LoginLocked("too many failed logins", retry_after_s=wait)
        left = tries_left(session=session, username=username, ip=ip)
        web = read_session(request, app_settings(request)) or new_session()
        return page(
            request,
            "login.html",
            user=None,
            web=web,
            status=401,
            next=target,
            error="login.failed",
            # From the WARN_AFTER-th failure on: how many tries remain before the lock.
            tries_left=left if left <= LOCKOUT_FAILURES - WARN_AFTER else None,
            lock_minutes=int(LOCKOUT_WINDOW.total_seconds() // 60),
        )
    record(
        session=session,
        actor=actor,
        action=SUCCEEDED,
        object_type="login",
        object_id=object_id,
        detail={"user_id": user.id},
    )
    # A new session id and CSRF token with the login: a token planted before login is worthless.
    web = login_user(session=session, request=request, user=user)
    session.commit()
    response = RedirectResponse(target, status_code=303)
    write_session(response, web, app_settings(request))
    return response


@router.post("/logout")
def logout(request: Request, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """End the session (its record is revoked, the cookie removed) and audit it."""
    logout_user(session=session, web=read_session(request, app_settings(request)))
    record(
        session=session,
        actor=user.actor,
        action="web.logout",
        object_type="user",
        object_id=user.user_id,
    )
    session.commit()
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    clear_session(response, app_settings(request))
    return response


@router.get("/lang")
def switch_language(to: str, next: str | None = None) -> Response:
    """Remember the chosen language in a cookie and go back."""
    response = RedirectResponse(_safe_next(next), status_code=303)
    if to in LANGS:
        response.set_cookie(LANG_COOKIE, to, max_age=365 * 86400, path="/", samesite="lax")
    return response


# -- queue ----------------------------------------------------------------------------------
STATUS_FILTERS: dict[str, tuple[str, ...]] = {
    "active": NOT_CLOSED,
    "open": (CaseStatus.OPEN,),
    "assigned": (CaseStatus.ASSIGNED,),
    "closed": (CaseStatus.CLOSED,),
}


def _blank_is_none(value: object) -> object:
    """An empty form field (``site=`` from the "All" option) means "no filter"."""
    return None if isinstance(value, str) and not value.strip() else value


def _blank_is_default(default: object) -> Callable[[object], object]:
    def pick(value: object) -> object:
        return default if isinstance(value, str) and not value.strip() else value

    return pick


# Filter values as a GET form sends them: "All" is an empty value, never a 422.
OptionalId = Annotated[int | None, BeforeValidator(_blank_is_none)]
StatusFilter = Annotated[
    Literal["active", "open", "assigned", "closed"], BeforeValidator(_blank_is_default("active"))
]
Flag = Annotated[bool, BeforeValidator(_blank_is_default(False))]


def _visible_site(session: SessionDep, user: WebUser, site_id: int) -> Site:
    site = session.get(Site, site_id)
    if site is None or not user.sees(site.id):
        raise NotFound(f"site {site_id} does not exist")
    return site


@router.get("/queue")
def queue_page(
    request: Request,
    session: SessionDep,
    user: UserDep,
    site: Annotated[OptionalId, Query()] = None,
    building: Annotated[OptionalId, Query()] = None,
    status: Annotated[StatusFilter, Query()] = "active",
    mine: Annotated[Flag, Query()] = False,
    done: Annotated[OptionalId, Query()] = None,
) -> Response:
    """Cases by priority with filters and counts; every combination of filters is valid."""
    if site is not None:
        _visible_site(session, user, site)
    if building is not None:
        row = session.get(Building, building)
        if row is None or not user.sees(row.site_id):
            raise NotFound(f"building {building} does not exist")
        if site is not None and row.site_id != site:
            # The site was changed while another site's building was still chosen
            # (the form submits both): the new site wins, the building filter goes.
            building = None
    rows, counts = queries.queue(
        session=session,
        scope=user.scope,
        site_id=site,
        building_id=building,
        statuses=STATUS_FILTERS[status],
        assigned_to=user.user_id if mine else None,
    )
    sites = queries.visible_sites(session=session, scope=user.scope)
    zones = queries.site_timezones(session=session, site_ids=[s.id for s in sites])
    closed = None
    if done is not None:
        try:
            closed = service.get_case(session=session, case_id=done, site_ids=user.scope)
        except LintelError:
            closed = None
        if closed is not None and closed.status != CaseStatus.CLOSED:
            closed = None
    return page(
        request,
        "queue.html",
        user=user,
        rows=rows,
        counts=counts,
        sites=sites,
        zones=zones,
        zone_names=zone_names(zones),
        unplaced=queries.cameras_without_entrance(session=session, scope=user.scope, site_id=site),
        buildings=queries.buildings(session=session, scope=user.scope, site_id=site),
        f_site=site,
        f_building=building,
        f_status=status,
        f_mine=mine,
        closed=closed,
        closed_link=f"{PREFIX}/queue?"
        + urlencode(
            {
                k: v
                for k, v in (("site", site), ("building", building), ("status", "closed"))
                if v is not None
            }
        ),
        now=utcnow(),
    )


# -- case -----------------------------------------------------------------------------------
@router.get("/cases/{case_id}")
def case_page(
    request: Request,
    session: SessionDep,
    user: UserDep,
    case_id: int,
    unit_q: Annotated[str, Query(max_length=100)] = "",
    occupant_q: Annotated[str, Query(max_length=100)] = "",
    pick: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    """One case: crops, days x hours strip, entrances, history, notes and the actions.

    ``pick``: an existing occupant the manager picked to add the faces to; the page
    then shows their registry faces beside the crops and what would change, to confirm.
    """
    case = service.view_case(
        session=session, case_id=case_id, actor=user.actor, site_ids=user.scope, via="web"
    )
    view = queries.case_view(session=session, case=case)
    units = queries.search_units(session=session, site_id=case.site_id, q=unit_q)
    occupants = queries.search_occupants(session=session, site_id=case.site_id, q=occupant_q)
    picked = (
        queries.candidate_faces(session=session, site_id=case.site_id, occupant_id=pick)
        if pick is not None and case.status != CaseStatus.CLOSED
        else None
    )
    if pick is not None and picked is None and case.status != CaseStatus.CLOSED:
        raise NotFound(f"occupant {pick} does not exist")
    session.commit()
    return page(
        request,
        "case.html",
        user=user,
        v=view,
        units=units,
        occupants=occupants,
        unit_q=unit_q,
        occupant_q=occupant_q,
        picked=picked,
        adds=len(outcomes.case_embeddings(session=session, case=case)) if picked else 0,
        can_reopen=user.can_act and outcomes.can_reopen(case=case, is_admin=user.role == "admin"),
        reopen_days=outcomes.REOPEN_DAYS,
        hours=range(24),
    )


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


_F = TypeVar("_F", bound=_Form)


class ContactForm(_Form):
    kind: Literal["call", "visit"]
    result: Annotated[str, Field(min_length=1, max_length=200)]
    notes: Annotated[str, Field(max_length=4000)] = ""


class EnrolForm(_Form):
    # Optional here so a missing unit gets its own message (no unit is preselected).
    unit_id: int | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    role: Literal["owner", "tenant", "family"] = "tenant"
    phone: Annotated[str, Field(max_length=40)] | None = None

    @field_validator("phone")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("unit_id", mode="before")
    @classmethod
    def _no_unit(cls, value: object) -> object:
        return None if value == "" else value


class MergeForm(_Form):
    occupant_id: int


class CloseForm(_Form):
    outcome: Literal["visitor", "false_match", "moved_out", "staff", "courier"]
    notes: Annotated[str, Field(max_length=4000)] = ""
    label: Annotated[str, Field(max_length=200)] = ""


def _parse(model: type[_F], form: dict[str, str]) -> _F:
    try:
        return model.model_validate(form)
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        raise InvalidInput(f"invalid form fields: {fields}") from exc


def _to_case(case_id: int) -> Response:
    return RedirectResponse(f"{PREFIX}/cases/{case_id}", status_code=303)


def _to_queue(case_id: int) -> Response:
    return RedirectResponse(f"{PREFIX}/queue?{urlencode({'done': case_id})}", status_code=303)


def _kw(session: SessionDep, user: WebUser, case_id: int) -> dict[str, Any]:
    return {"session": session, "case_id": case_id, "actor": user.actor, "site_ids": user.scope}


@router.post("/cases/{case_id}/assign")
def assign(case_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Take the case (assigned to me)."""
    _actor(user)
    _parse(_Form, form)
    service.assign_case(**_kw(session, user, case_id), user_id=user.user_id)
    session.commit()
    return _to_case(case_id)


@router.post("/cases/{case_id}/contact")
def contact(case_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Log a call or a visit and its result; the case stays open."""
    _actor(user)
    body = _parse(ContactForm, form)
    service.record_contact(
        **_kw(session, user, case_id), kind=body.kind, result=body.result, notes=body.notes
    )
    session.commit()
    return _to_case(case_id)


@router.post("/cases/{case_id}/enrol")
def enrol(
    request: Request, case_id: int, form: FormDep, session: SessionDep, user: UserDep
) -> Response:
    """Enrol the person as a new occupant of a unit (templates from the case's crops);
    closes the case. Refused without a unit: none is preselected."""
    _actor(user)
    body = _parse(EnrolForm, form)
    if body.unit_id is None:
        return error_page(request, 422, "action.unit_required")
    outcomes.enrol_from_case(
        **_kw(session, user, case_id),
        unit_id=body.unit_id,
        name=body.name,
        role=body.role,
        phone=body.phone,
    )
    session.commit()
    return _to_queue(case_id)


@router.post("/cases/{case_id}/merge")
def merge(case_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """The person is an existing occupant: add the case's faces to them; closes the case."""
    _actor(user)
    body = _parse(MergeForm, form)
    outcomes.merge_into_occupant(**_kw(session, user, case_id), occupant_id=body.occupant_id)
    session.commit()
    return _to_queue(case_id)


@router.post("/cases/{case_id}/close")
def close(case_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Visitor, moved out, false match, or staff/courier (whitelisted); closes the case."""
    _actor(user)
    body = _parse(CloseForm, form)
    outcomes.close_with_outcome(
        **_kw(session, user, case_id), outcome=body.outcome, notes=body.notes, label=body.label
    )
    session.commit()
    return _to_queue(case_id)


@router.post("/cases/{case_id}/reopen")
def reopen(case_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Reopen a closed case and undo its outcome (managers for 7 days, admins always)."""
    _actor(user)
    _parse(_Form, form)
    outcomes.reopen_case(**_kw(session, user, case_id), is_admin=user.role == "admin")
    session.commit()
    return _to_case(case_id)


# -- crops ----------------------------------------------------------------------------------
@router.get("/crops/{sighting_id}")
def crop(
    sighting_id: int,
    session: SessionDep,
    user: UserDep,
    case: Annotated[int | None, Query()] = None,
) -> Response:
    """A face crop, for logged-in users of its site only; every view is audited."""
    sighting = session.get(Sighting, sighting_id)
    if sighting is None or not user.sees(sighting.site_id):
        raise NotFound(f"crop {sighting_id} does not exist")
    # The case the crop was shown for (a hint: view_crop names it only if it fits).
    shown_for = session.get(Case, case) if case is not None else None
    jpeg = service.view_crop(
        session=session, sighting=sighting, actor=user.actor, shown_for=shown_for
    )
    if jpeg is None:
        raise NotFound(f"crop {sighting_id} does not exist (expired?)")
    session.commit()
    return Response(
        jpeg,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/chips/{template_id}")
def chip(
    template_id: int,
    session: SessionDep,
    user: UserDep,
    case: Annotated[int | None, Query()] = None,
) -> Response:
    """A registry face chip, for logged-in users of its site only; every view is audited."""
    found = chips.get_chip(session=session, template_id=template_id)
    if (
        found is None
        or not user.sees(found[0].site_id)
        or not chips.chips_enabled(session=session, site_id=found[0].site_id)
    ):
        raise NotFound(f"face {template_id} does not exist")
    template, jpeg = found
    shown_for = session.get(Case, case) if case is not None else None
    record(
        session=session,
        actor=user.actor,
        action="chip.view",
        object_type="face_template",
        object_id=template.id,
        site_id=template.site_id,
        detail={
            "occupant_id": template.occupant_id,
            **(
                {"case_id": shown_for.id}
                if shown_for is not None and shown_for.site_id == template.site_id
                else {}
            ),
        },
    )
    session.commit()
    return Response(
        jpeg,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )


# -- dashboard, devices, audit --------------------------------------------------------------
@router.get("/dashboard")
def dashboard_page(
    request: Request,
    session: SessionDep,
    user: UserDep,
    site: Annotated[OptionalId, Query()] = None,
) -> Response:
    """A site's safety report (the first visible site unless one is chosen)."""
    sites = queries.visible_sites(session=session, scope=user.scope)
    if site is not None:
        chosen: Site | None = _visible_site(session, user, site)
    else:
        chosen = sites[0] if sites else None
    report = queries.dashboard(session=session, site=chosen) if chosen else None
    tz = (
        queries.site_timezones(session=session, site_ids=[chosen.id])[chosen.id] if chosen else None
    )
    peak = max((d.known + d.unknown for d in report.per_day), default=0) if report else 0
    # People with face templates and the filing-threshold warning (engineer P).
    enrolled = people_with_templates(session=session, site_id=chosen.id)[0] if chosen else None
    # What is wrong, in words, worst first (issue 17 H): the devices page's read and rules.
    health = (
        queries.devices_health(session=session, scope=user.scope, site_id=chosen.id)
        if chosen
        else []
    )
    # Channels that fail to deliver: managers are not being told (the devices page's list).
    failing = (
        [
            c
            for c in channel_rows(session=session, scope=user.scope, site_id=chosen.id)
            if c.enabled and c.failing
        ]
        if chosen and user.can_act
        else []
    )
    return page(
        request,
        "dashboard.html",
        user=user,
        sites=sites,
        report=report,
        tz=tz,
        peak=max(peak, 1),
        enrolled=enrolled,
        attention=needs_attention(health),
        in_use=sum(1 for h in health if not h.disabled),
        failing=failing,
    )


@router.get("/devices")
def devices_page(
    request: Request,
    session: SessionDep,
    user: UserDep,
    site: Annotated[OptionalId, Query()] = None,
) -> Response:
    """Devices: online/offline, last heartbeat, fps, dropped frames, outbox depth."""
    if site is not None:
        _visible_site(session, user, site)
    rows = queries.devices(session=session, scope=user.scope, site_id=site)
    sites = queries.visible_sites(session=session, scope=user.scope)
    # What is wrong, in words (issue 17 D: server/devices/health.py).
    health = {
        h.id: h for h in queries.devices_health(session=session, scope=user.scope, site_id=site)
    }
    # Notification channels and their state (issue 15): admins and managers, read-only.
    channels = channel_rows(session=session, scope=user.scope, site_id=site) if user.can_act else []
    zones = queries.site_timezones(session=session, site_ids=[s.id for s in sites])
    return page(
        request,
        "devices.html",
        user=user,
        rows=rows,
        health=health,
        sites=sites,
        f_site=site,
        channels=channels,
        zones=zones,
        zone_names=zone_names(zones),
    )


@router.get("/audit")
def audit_page(
    request: Request,
    session: SessionDep,
    user: UserDep,
    case: Annotated[OptionalId, Query()] = None,
) -> Response:
    """Recent audit events of the caller's sites (admins and managers)."""
    if not user.can_act:
        raise Forbidden("the audit log is for managers and admins")
    rows = queries.audit(session=session, scope=user.scope, case_id=case)
    zones = queries.site_timezones(
        session=session, site_ids=sorted({r.site_id for r in rows if r.site_id is not None})
    )
    return page(
        request,
        "audit.html",
        user=user,
        rows=rows,
        f_case=case,
        zones=zones,
        default_tz=site_zone(None),
        zone_names=zone_names(zones),
    )
