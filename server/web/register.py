"""The register pages: buildings -> units -> occupants, search, an occupant's page, its actions.

Reads and changes go through :mod:`server.occupants.register` (audited there);
the route commits once. Scope and roles are the queue's: admins see every
site, managers and viewers theirs, another site's occupant does not exist
(404); viewers look but do not act; subject export and erase are for admins
(:mod:`server.privacy.subject`, the services the JSON API calls). Registry
faces are shown through ``/web/chips/{id}``, which audits every view.

A photo (a file, or the phone's camera: ``<input type=file capture=user>``)
is enrolled by the import's engine (:mod:`server.occupants.face_engine`,
imported on the first photo only, so a server without the face stack serves
every other page) and then discarded: only the template and its chip stay.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field, field_validator
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response

from server.deps import FormDep, SessionDep, UserDep, WebUser, app_settings
from server.errors import Forbidden, InvalidInput
from server.occupants import directory, face_engine, register
from server.occupants.errors import FaceEngineMissing, PhotoRefused
from server.privacy import subject
from server.web import queries
from server.web.errors import CsrfRejected
from server.web.routes import (
    PREFIX,
    Flag,
    OptionalId,
    WebRoute,
    _actor,
    _Form,
    _parse,
    _visible_site,
    page,
)
from server.web.session import csrf_ok, read_session

router = APIRouter(prefix=PREFIX, route_class=WebRoute, include_in_schema=False)

DONE = ("edited", "moved_out", "photo_added", "photo_poor", "template_deleted", "erased")
MULTIPART_MARGIN = 16 * 1024
"""Bytes of a photo form that are not the photo: boundaries, headers, the CSRF token."""
ENGINE_MISSING = "photo enrolment needs the face engine on this server"
PHOTO_REASONS = (
    "unreadable",
    "no_face",
    "several_faces",
    "too_small",
    "too_blurry",
    "bad_pose",
    "low_score",
    "low_quality",
    "same_face",
    "duplicate",
    "wrong_model",
    "no_engine",
)
"""Photo refusal codes with words on the page (others show the engine's message only)."""


class EditForm(_Form):
    name: Annotated[str, Field(max_length=200)] = ""
    role: Annotated[str, Field(max_length=20)] = ""
    phone: Annotated[str, Field(max_length=40)] = ""
    move_in: Annotated[str, Field(max_length=40)] = ""
    unit_id: int | None = None

    @field_validator("unit_id", mode="before")
    @classmethod
    def _no_unit(cls, value: object) -> object:
        return None if value == "" else value


class MoveOutForm(_Form):
    move_out: Annotated[str, Field(max_length=40)] = ""


@dataclass(frozen=True, slots=True)
class PhotoUpload:
    """A POSTed photo form whose CSRF token matched; the photo only in memory."""

    data: bytes
    filename: str


async def verified_photo(request: Request) -> PhotoUpload:
    """The photo of a multipart form, once its CSRF token matched the session's; else 403.

    Read before the route takes a database connection (as ``FormDep``). Starlette
    keeps an upload in memory up to 1 MiB and beyond that in an anonymous temporary
    file that is gone when the request ends; nothing here writes the photo anywhere.
    """
    async with request.form(max_files=1, max_fields=4) as form:
        web = read_session(request, app_settings(request))
        token = form.get("csrf_token")
        if not csrf_ok(web, token if isinstance(token, str) else None):
            raise CsrfRejected("missing or wrong CSRF token")
        upload = form.get("photo")
        if not isinstance(upload, UploadFile):
            return PhotoUpload(b"", "")
        return PhotoUpload(await upload.read(), upload.filename or "photo")


PhotoDep = Annotated[PhotoUpload, Depends(verified_photo)]


def max_photo_bytes(request: Request) -> int:
    """The largest photo the request size limit lets through (the form's fields take ~1 KB)."""
    return max(0, app_settings(request).max_body_bytes - MULTIPART_MARGIN)


def _to_occupant(occupant_id: int, done: str) -> Response:
    return RedirectResponse(
        f"{PREFIX}/occupants/{occupant_id}?{urlencode({'done': done})}", status_code=303
    )


def _admin(user: WebUser) -> WebUser:
    if user.role != "admin":
        raise Forbidden("subject export and erase are for admins")
    return user


# -- browse and search ----------------------------------------------------------------------
@router.get("/register")
def register_page(
    request: Request,
    session: SessionDep,
    user: UserDep,
    site: Annotated[OptionalId, Query()] = None,
    building: Annotated[OptionalId, Query()] = None,
    unit: Annotated[OptionalId, Query()] = None,
    q: Annotated[str, Query(max_length=100)] = "",
    moved: Annotated[Flag, Query()] = False,
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """A site's buildings, a building's units, a unit's occupants; or a search
    (people who moved out only when ``moved`` is ticked; a unit lists them all)."""
    sites = queries.visible_sites(session=session, scope=user.scope)
    chosen = _visible_site(session, user, site) if site is not None else None
    if chosen is None and sites:
        chosen = sites[0]
    unit_row = None
    if chosen is not None and unit is not None:
        unit_row = next(
            (u for u in directory.units(session=session, site_id=chosen.id) if u.id == unit), None
        )
        if unit_row is None:
            unit = None
    buildings = directory.buildings(session=session, site_id=chosen.id) if chosen else []
    # ``building=0``: the units that belong to no building (a register without them).
    building_row = next(
        (b for b in buildings if building is not None and (b.id or 0) == building), None
    )
    units = (
        directory.units(
            session=session,
            site_id=chosen.id,
            building_id=building_row.id,
            unplaced=building_row.id is None,
        )
        if chosen is not None and building_row is not None
        else []
    )
    results = (
        directory.search(
            session=session, site_id=chosen.id, q=q, unit_id=unit, include_moved_out=moved
        )
        if chosen is not None and (q.strip() or unit is not None)
        else []
    )
    return page(
        request,
        "register.html",
        user=user,
        active="register",
        sites=sites,
        site=chosen,
        buildings=buildings,
        building=building_row,
        units=units,
        unit=unit_row,
        q=q.strip(),
        moved=moved,
        results=results,
        searched=bool(q.strip()) or unit is not None,
        done="erased" if done == "erased" else None,
    )


# -- one occupant ---------------------------------------------------------------------------
def _occupant_response(
    request: Request,
    session: SessionDep,
    user: WebUser,
    occupant_id: int,
    *,
    audited: bool,
    status: int = 200,
    done: str | None = None,
    error: str | None = None,
    error_for: str | None = None,
    photo_reason: str | None = None,
) -> Response:
    if audited:
        found = directory.view_occupant(
            session=session, occupant_id=occupant_id, actor=user.actor, site_ids=user.scope
        )
        session.commit()
    else:
        found = directory.occupant_page(
            session=session, occupant_id=occupant_id, site_ids=user.scope
        )
    zones = queries.site_timezones(session=session, site_ids=[found.site.id])
    return page(
        request,
        "occupant.html",
        user=user,
        status=status,
        active="register",
        v=found,
        tz=zones[found.site.id],
        today=directory.today_in(session, found.site.id).isoformat(),
        done=done if done in DONE else None,
        error=error,
        error_for=error_for,
        photo_reason=photo_reason if photo_reason in PHOTO_REASONS else None,
        max_photo_bytes=max_photo_bytes(request),
    )


@router.get("/occupants/{occupant_id}")
def occupant_page(
    request: Request,
    session: SessionDep,
    user: UserDep,
    occupant_id: int,
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """An occupant's register entry, faces, templates by origin and cases (audited view)."""
    return _occupant_response(request, session, user, occupant_id, audited=True, done=done)


def _refused(
    request: Request,
    session: SessionDep,
    user: WebUser,
    occupant_id: int,
    exc: InvalidInput,
    error_for: str,
) -> Response:
    """The occupant's page again with the reason beside the form; nothing was written."""
    session.rollback()
    return _occupant_response(
        request,
        session,
        user,
        occupant_id,
        audited=False,
        status=exc.status_code,
        error=exc.detail,
        error_for=error_for,
        photo_reason=exc.reason if isinstance(exc, PhotoRefused) else None,
    )


@router.post("/occupants/{occupant_id}/edit")
def edit(
    request: Request, occupant_id: int, form: FormDep, session: SessionDep, user: UserDep
) -> Response:
    """Change the register fields (the import's parsers validate them)."""
    _actor(user)
    body = _parse(EditForm, form)
    try:
        register.edit_occupant(
            session=session,
            occupant_id=occupant_id,
            actor=user.actor,
            site_ids=user.scope,
            name=body.name,
            role=body.role,
            phone=body.phone,
            move_in=body.move_in,
            unit_id=body.unit_id,
        )
    except InvalidInput as exc:
        return _refused(request, session, user, occupant_id, exc, "edit")
    session.commit()
    return _to_occupant(occupant_id, "edited")


@router.post("/occupants/{occupant_id}/move-out")
def move_out(
    request: Request, occupant_id: int, form: FormDep, session: SessionDep, user: UserDep
) -> Response:
    """Move out on a date: their faces leave the gallery (and the database) at once."""
    _actor(user)
    body = _parse(MoveOutForm, form)
    try:
        register.move_out(
            session=session,
            occupant_id=occupant_id,
            actor=user.actor,
            site_ids=user.scope,
            on=body.move_out,
        )
    except InvalidInput as exc:
        return _refused(request, session, user, occupant_id, exc, "move_out")
    session.commit()
    return _to_occupant(occupant_id, "moved_out")


def _check_face_engine() -> None:
    """Refuse in words when this server has no face stack (a lean ``[server]`` install).

    :mod:`server.occupants.face_engine` imports without it (the engine itself loads
    on the first photo, through :func:`registry.enrol.load_engine`); every other page
    works there.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        raise FaceEngineMissing(ENGINE_MISSING)


@router.post("/occupants/{occupant_id}/photo")
def add_photo(
    request: Request, occupant_id: int, photo: PhotoDep, session: SessionDep, user: UserDep
) -> Response:
    """Enrol a photo (a file or the phone's camera) as a new face; the photo is not kept."""
    _actor(user)
    try:
        site = register.photo_target(session=session, occupant_id=occupant_id, site_ids=user.scope)
        _check_face_engine()
        face, sha = face_engine.enrol_photo(photo.data, model_id=site.model_id, name="photo")
        register.add_photo(
            session=session,
            occupant_id=occupant_id,
            actor=user.actor,
            site_ids=user.scope,
            face=face,
            photo_sha256=sha,
            same_face_similarity=face_engine.SAME_FACE_SIMILARITY,
        )
    except FaceEngineMissing as exc:
        return _refused(
            request, session, user, occupant_id, PhotoRefused("no_engine", exc.detail), "photo"
        )
    except InvalidInput as exc:
        return _refused(request, session, user, occupant_id, exc, "photo")
    session.commit()
    # Usable but poor (small, blurred, turned): enrolled, as the import does, with a word.
    return _to_occupant(occupant_id, "photo_poor" if face.warning else "photo_added")


@router.post("/occupants/{occupant_id}/templates/{template_id}/delete")
def delete_template(
    occupant_id: int, template_id: int, form: FormDep, session: SessionDep, user: UserDep
) -> Response:
    """Delete one face template (and its chip); the gallery version bumps."""
    _actor(user)
    _parse(_Form, form)
    register.delete_template(
        session=session,
        occupant_id=occupant_id,
        template_id=template_id,
        actor=user.actor,
        site_ids=user.scope,
    )
    session.commit()
    return _to_occupant(occupant_id, "template_deleted")


@router.post("/occupants/{occupant_id}/export")
def export(occupant_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Everything held on the occupant as a JSON download (admins; ``subject.export``)."""
    _admin(user)
    _parse(_Form, form)
    directory.visible_occupant(session=session, occupant_id=occupant_id, site_ids=user.scope)
    data = subject.export_subject(session=session, occupant_id=occupant_id, actor=user.actor)
    session.commit()
    return Response(
        json.dumps(data, ensure_ascii=False, indent=2),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="occupant-{occupant_id}.json"',
            "Cache-Control": "private, no-store",
        },
    )


@router.post("/occupants/{occupant_id}/erase")
def erase(occupant_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Erase the occupant everywhere (admins; ``subject.erase``); back to their unit."""
    _admin(user)
    _parse(_Form, form)
    occupant = directory.visible_occupant(
        session=session, occupant_id=occupant_id, site_ids=user.scope
    )
    site_id, unit_id = occupant.site_id, occupant.unit_id
    subject.erase_subject(session=session, occupant_id=occupant_id, actor=user.actor)
    session.commit()
    query = {"site": site_id, "done": "erased", **({"unit": unit_id} if unit_id else {})}
    return RedirectResponse(f"{PREFIX}/register?{urlencode(query)}", status_code=303)
