"""Devices and cameras in the web (issue 17 D): health, camera settings, snapshots,
adding a device, enrolment codes, token rotation and disabling.

Every change goes through the same service functions as the CLI and the JSON
API (:mod:`server.devices`), which audit it; the route commits once. Managers
see and set their sites' cameras (entrance, analysed fps, region of interest,
on/off); adding a device, making a code, renewing a token, disabling a device
and the site's snapshot switch are for admins. A token or code is shown once,
on the page that answers the POST, and never again (stored hashed only).
Snapshot views are audited by :func:`server.devices.snapshots.view_snapshot`.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from pydantic import BeforeValidator, Field, field_validator
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response

from edge.wire import Roi
from server.audit.service import record
from server.db import utcnow
from server.deps import FormDep, SessionDep, UserDep, WebUser
from server.devices.enrolment import CODE_TTL, create_enrolment_code, live_codes
from server.devices.health import device_health
from server.devices.models import Device
from server.devices.service import create_device, rotate_device_token, set_device_disabled
from server.devices.settings import get_camera, set_site_snapshots, update_camera
from server.devices.snapshots import view_snapshot
from server.errors import Forbidden, InvalidInput, NotFound
from server.sites.models import Entrance, Site
from server.sites.service import get_or_create_entrance
from server.web import queries
from server.web.errors import ReadOnly
from server.web.routes import PREFIX, WebRoute, _Form, _parse, page, zone_names

router = APIRouter(prefix=PREFIX, route_class=WebRoute, include_in_schema=False)

DONE = ("saved", "unchanged", "disabled", "enabled", "snapshots")


def _admin(user: WebUser) -> WebUser:
    if user.role != "admin":
        raise Forbidden("only admins add devices and manage their keys")
    return user


def _manager(user: WebUser) -> WebUser:
    if not user.can_act:
        raise ReadOnly("viewers may not change cameras")
    return user


def _device(session: SessionDep, user: WebUser, device_id: int) -> Device:
    device = session.get(Device, device_id)
    if device is None or not user.sees(device.site_id):
        raise NotFound(f"device {device_id} does not exist")
    return device


def _blank_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _roi(value: object) -> object:
    """``"x1,y1,x2,y2"`` (what the region field and its canvas write) -> a tuple."""
    if isinstance(value, str):
        if not value.strip():
            return None
        return tuple(v.strip() for v in value.split(","))
    return value


class AddDeviceForm(_Form):
    site_id: int
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]


class CameraForm(_Form):
    entrance: Annotated[str | None, BeforeValidator(_blank_none), Field(max_length=100)] = None
    analyse_fps: Annotated[float | None, BeforeValidator(_blank_none)] = None
    roi: Annotated[Roi | None, BeforeValidator(_roi)] = None
    enabled: bool = False  # an unticked checkbox sends nothing

    @field_validator("enabled", mode="before")
    @classmethod
    def _ticked(cls, value: object) -> object:
        return value in ("1", "on", "true", True)


class SnapshotsForm(_Form):
    enabled: bool = False
    retention_hours: Annotated[int, Field(ge=1, le=168)] = 24

    @field_validator("enabled", mode="before")
    @classmethod
    def _ticked(cls, value: object) -> object:
        return value in ("1", "on", "true", True)


def _back(device_id: int, done: str) -> Response:
    return RedirectResponse(
        f"{PREFIX}/devices/{device_id}?{urlencode({'done': done})}", status_code=303
    )


def _server_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _secret_page(
    request: Request,
    user: WebUser,
    device: Device,
    *,
    token: str | None,
    code: str | None,
    cameras: list[str],
) -> Response:
    """The one page that shows a token or code: ready edge.yaml and the commands."""
    return page(
        request,
        "device_secret.html",
        user=user,
        device=device,
        token=token,
        code=code,
        minutes=int(CODE_TTL.total_seconds() // 60),
        server_url=_server_url(request),
        cameras=cameras or ["door"],
    )


@router.get("/devices/{device_id}")
def device_page(
    request: Request,
    device_id: int,
    session: SessionDep,
    user: UserDep,
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """One device: health in words, its cameras' settings and snapshots, its actions."""
    device = _device(session, user, device_id)
    site = session.get(Site, device.site_id)
    assert site is not None  # the device's foreign key
    health = device_health(session=session, devices=[device], now=utcnow())[0]
    entrances = list(
        session.scalars(
            select(Entrance.name).where(Entrance.site_id == site.id).order_by(Entrance.name)
        )
    )
    zones = queries.site_timezones(session=session, site_ids=[site.id])
    return page(
        request,
        "device.html",
        user=user,
        d=health,
        site=site,
        entrances=entrances,
        codes_waiting=live_codes(session=session, device_id=device.id)
        if user.role == "admin"
        else 0,
        done=done if done in DONE else None,
        tz=zones[site.id],
        zone_names=zone_names(zones),
    )


@router.post("/devices")
def add_device(request: Request, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """A new device of a site: its token and a one-time code, shown once."""
    _admin(user)
    body = _parse(AddDeviceForm, form)
    if session.get(Site, body.site_id) is None:
        raise InvalidInput("the chosen site does not exist")
    device, token = create_device(session=session, site_id=body.site_id, name=body.name)
    # The same record as `lintel-server device add`.
    record(
        session=session,
        actor=user.actor,
        action="device.add",
        object_type="device",
        object_id=device.id,
        site_id=device.site_id,
        detail={"name": device.name},
    )
    code = create_enrolment_code(session=session, device=device, actor=user.actor)
    session.commit()
    return _secret_page(request, user, device, token=token, code=code, cameras=[])


def _camera_names(session: SessionDep, device: Device) -> list[str]:
    return [
        c.name for c in device_health(session=session, devices=[device], now=utcnow())[0].cameras
    ]


@router.post("/devices/{device_id}/code")
def new_code(
    request: Request, device_id: int, form: FormDep, session: SessionDep, user: UserDep
) -> Response:
    """A new one-time enrolment code (earlier unused ones stop working)."""
    _admin(user)
    _parse(_Form, form)
    device = _device(session, user, device_id)
    if device.disabled:
        raise InvalidInput("enable the device before making an enrolment code")
    code = create_enrolment_code(session=session, device=device, actor=user.actor)
    session.commit()
    return _secret_page(
        request, user, device, token=None, code=code, cameras=_camera_names(session, device)
    )


@router.post("/devices/{device_id}/rotate")
def rotate(
    request: Request, device_id: int, form: FormDep, session: SessionDep, user: UserDep
) -> Response:
    """A new token for the device; the old one stops at once."""
    _admin(user)
    _parse(_Form, form)
    device = _device(session, user, device_id)
    token = rotate_device_token(session=session, device=device, actor=user.actor)
    session.commit()
    return _secret_page(
        request, user, device, token=token, code=None, cameras=_camera_names(session, device)
    )


@router.post("/devices/{device_id}/disable")
def disable(device_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Refuse the device's token from now on (a stolen or retired box)."""
    _admin(user)
    _parse(_Form, form)
    device = _device(session, user, device_id)
    set_device_disabled(session=session, device=device, disabled=True, actor=user.actor)
    session.commit()
    return _back(device.id, "disabled")


@router.post("/devices/{device_id}/enable")
def enable(device_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Accept the device's token again."""
    _admin(user)
    _parse(_Form, form)
    device = _device(session, user, device_id)
    set_device_disabled(session=session, device=device, disabled=False, actor=user.actor)
    session.commit()
    return _back(device.id, "enabled")


@router.post("/cameras/{camera_id}")
def save_camera(camera_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Entrance, analysed fps, region of interest and on/off of one camera; the box
    applies them at its next heartbeat, without a restart."""
    _manager(user)
    scope = user.scope
    camera = get_camera(session=session, camera_id=camera_id, site_ids=scope)
    body = _parse(CameraForm, form)
    device = session.get(Device, camera.device_id)
    assert device is not None  # the camera's foreign key
    entrance_id = None
    if body.entrance is not None:
        entrance_id = get_or_create_entrance(
            session=session, site_id=device.site_id, name=body.entrance
        ).id
    changed = update_camera(
        session=session,
        camera=camera,
        actor=user.actor,
        entrance_id=entrance_id,
        analyse_fps=body.analyse_fps,
        roi=body.roi,
        enabled=body.enabled,
    )
    session.commit()
    return _back(device.id, "saved" if changed else "unchanged")


@router.get("/cameras/{camera_id}/snapshot")
def snapshot(camera_id: int, session: SessionDep, user: UserDep) -> Response:
    """The camera's latest snapshot (audited: a door camera's frame shows people)."""
    camera = get_camera(session=session, camera_id=camera_id, site_ids=user.scope)
    jpeg = view_snapshot(session=session, camera=camera, actor=user.actor)
    session.commit()
    return Response(
        jpeg,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )


@router.post("/sites/{site_id}/snapshots")
def site_snapshots(site_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Opt the site in or out of camera snapshots and set how long they are kept."""
    _admin(user)
    body = _parse(SnapshotsForm, {k: v for k, v in form.items() if k != "device_id"})
    site = session.get(Site, site_id)
    if site is None:
        raise NotFound(f"site {site_id} does not exist")
    set_site_snapshots(
        session=session,
        site=site,
        enabled=body.enabled,
        retention_hours=body.retention_hours,
        actor=user.actor,
    )
    session.commit()
    back = form.get("device_id", "")
    if back.isdigit():
        return _back(int(back), "snapshots")
    return RedirectResponse(f"{PREFIX}/devices?site={site.id}", status_code=303)
