"""Devices (edge boxes) and cameras."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from server.audit.service import record
from server.db import utcnow
from server.devices.models import Camera, Device
from server.dialect import insert_ignore
from server.errors import Conflict, InvalidInput, NotFound
from server.security import DEVICE_TOKEN_PREFIX, hash_token, new_token

FRAMES_AT = "frames_at"
"""Key of ``Device.stats`` the server adds: camera name -> when it last delivered frames."""


@dataclass(frozen=True, slots=True)
class CameraRef:
    """What ingest needs to know of a camera."""

    id: int
    entrance_id: int | None


def create_device(*, session: Session, site_id: int, name: str) -> tuple[Device, str]:
    """Register a device for a site; returns it with its token (shown once, stored hashed)."""
    name = name.strip()
    if not name:
        raise InvalidInput("device name is empty")
    exists = session.scalar(select(Device.id).where(Device.site_id == site_id, Device.name == name))
    if exists is not None:
        raise Conflict(f"device {name!r} already exists in site {site_id}")
    token = new_token(DEVICE_TOKEN_PREFIX)
    device = Device(site_id=site_id, name=name, token_hash=hash_token(token))
    session.add(device)
    session.flush()
    return device, token


def get_device(*, session: Session, ref: str, site_id: int | None = None) -> Device:
    """A device by id, or by name (within ``site_id`` when given); :class:`NotFound` else.

    A name used in several sites is refused as ambiguous: name the site too.
    """
    ref = ref.strip()
    if ref.isdigit():
        device = session.get(Device, int(ref))
        if device is not None and (site_id is None or device.site_id == site_id):
            return device
    query = select(Device).where(Device.name == ref)
    if site_id is not None:
        query = query.where(Device.site_id == site_id)
    found = list(session.scalars(query.limit(2)))
    if not found:
        raise NotFound(f"device {ref!r} does not exist")
    if len(found) > 1:
        raise InvalidInput(f"device name {ref!r} is used in several sites; name the site (--site)")
    return found[0]


def set_device_disabled(*, session: Session, device: Device, disabled: bool, actor: str) -> None:
    """Disable (its token answers 401 at once) or re-enable a device, audited."""
    device.disabled = disabled
    session.flush()
    record(
        session=session,
        actor=actor,
        action="device.disable" if disabled else "device.enable",
        object_type="device",
        object_id=device.id,
        site_id=device.site_id,
        detail={"name": device.name},
    )


def rotate_device_token(*, session: Session, device: Device, actor: str) -> str:
    """Give the device a new token (returned once, stored hashed); the old one stops at once."""
    token = new_token(DEVICE_TOKEN_PREFIX)
    device.token_hash = hash_token(token)
    session.flush()
    record(
        session=session,
        actor=actor,
        action="device.rotate_token",
        object_type="device",
        object_id=device.id,
        site_id=device.site_id,
        detail={"name": device.name},
    )
    return token


def cameras_by_name(
    *, session: Session, device_id: int, names: Iterable[str]
) -> dict[str, CameraRef]:
    """The device's cameras of these names, registering unseen names on the fly."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    table = cast(Table, Camera.__table__)

    def fetch() -> dict[str, CameraRef]:
        rows = session.execute(
            select(Camera.name, Camera.id, Camera.entrance_id).where(
                Camera.device_id == device_id, Camera.name.in_(wanted)
            )
        )
        return {r.name: CameraRef(id=r.id, entrance_id=r.entrance_id) for r in rows}

    found = fetch()
    missing = [n for n in wanted if n not in found]
    if missing:
        now = utcnow()
        # ON CONFLICT: another worker may register the same camera concurrently.
        session.execute(
            insert_ignore(session, table, ["device_id", "name"]),
            [{"device_id": device_id, "name": n, "created_at": now} for n in missing],
        )
        found = fetch()
    return found


def record_heartbeat(
    *, session: Session, device: Device, software_version: str, stats: dict[str, Any]
) -> None:
    """Store the device's latest heartbeat stats.

    Also kept, per camera, when it last delivered frames (``frames_at``): a
    heartbeat says only how a camera is now, and the devices page says how long
    one has been dark ("has sent no frames for 2 h").
    """
    now = utcnow()
    previous = device.stats or {}
    seen = _mapping(previous.get(FRAMES_AT))
    old_cams = _mapping(previous.get("cameras"))
    frames_at: dict[str, str] = {}
    for name, cam in _mapping(stats.get("cameras")).items():
        if not isinstance(cam, dict):
            continue
        before = _mapping(old_cams.get(name))
        delivering = float(cam.get("fps") or 0) > 0 or int(cam.get("frames") or 0) > int(
            before.get("frames") or 0
        )
        if delivering:
            frames_at[name] = now.isoformat()
        elif isinstance(seen.get(name), str):
            frames_at[name] = seen[name]
    device.last_heartbeat_at = now
    device.software_version = software_version[:64]
    device.stats = {**stats, FRAMES_AT: frames_at}
    session.flush()


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def list_devices(*, session: Session, site_id: int | None = None) -> list[Device]:
    """Devices, optionally of one site."""
    query = select(Device).order_by(Device.id)
    if site_id is not None:
        query = query.where(Device.site_id == site_id)
    return list(session.scalars(query))
