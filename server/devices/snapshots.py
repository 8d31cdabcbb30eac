"""Camera snapshots: a recent 320 px frame per camera, to check the angle (issue 17 D).

Sent by a box only when its site opted in (``Site.snapshots``, default off),
sealed at rest with the crop keyring (AES-GCM, bound to the camera), one per
camera (a new one replaces the last), deleted after the site's
``snapshot_retention_hours`` by the purge, and every view by a person is
audited (``snapshot.view``): a door camera's frame shows people.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from edge.wire import MAX_SNAPSHOT_BYTES, SNAPSHOT_WIDTH
from server.audit.service import record
from server.db import utcnow
from server.devices.models import Camera, CameraSnapshot, Device
from server.errors import Conflict, InvalidInput, NotFound
from server.privacy.crypto import CropKeyring, current_keyring
from server.sites.models import Site

JPEG_MAGIC = b"\xff\xd8\xff"
MAX_SNAPSHOT_WIDTH = 2 * SNAPSHOT_WIDTH
"""The box sends 320 px; the server refuses anything much larger, so a misconfigured
or altered box cannot leave full-resolution frames of a door on the server."""
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, or None when there is none."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF and i + 9 <= len(data):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + length
    return None


def _aad(camera_id: int) -> bytes:
    # Bound to its camera: copied onto another camera's row, it does not open.
    return f"snapshot:{camera_id}".encode()


def store_snapshot(
    *,
    session: Session,
    device: Device,
    camera_id: int,
    jpeg: bytes,
    taken_at: datetime,
    keyring: CropKeyring | None = None,
) -> None:
    """Seal and keep ``jpeg`` as the camera's snapshot; :class:`Conflict` when the site
    has not opted in (the box was told so and should stop)."""
    site = session.get(Site, device.site_id)
    if site is None or not site.snapshots:
        raise Conflict("this site does not keep camera snapshots")
    if not jpeg.startswith(JPEG_MAGIC):
        raise InvalidInput("a snapshot must be a JPEG image")
    if len(jpeg) > MAX_SNAPSHOT_BYTES:
        raise InvalidInput(f"a snapshot is at most {MAX_SNAPSHOT_BYTES} bytes")
    size = jpeg_size(jpeg)
    if size is None:
        raise InvalidInput("a snapshot must be a readable JPEG image")
    if size[0] > MAX_SNAPSHOT_WIDTH:
        raise InvalidInput(
            f"a snapshot is at most {MAX_SNAPSHOT_WIDTH} px wide (send {SNAPSHOT_WIDTH}), "
            f"not {size[0]}"
        )
    key_id, blob = (keyring or current_keyring()).seal(jpeg, aad=_aad(camera_id))
    now = utcnow()
    taken_at = min(taken_at, now)  # a box's fast clock must not keep it past retention
    snap = session.get(CameraSnapshot, camera_id)
    if snap is None:
        session.add(
            CameraSnapshot(
                camera_id=camera_id, taken_at=taken_at, received_at=now, jpeg=blob, key_id=key_id
            )
        )
    else:
        snap.taken_at, snap.received_at, snap.jpeg, snap.key_id = taken_at, now, blob, key_id
    session.flush()


def snapshot_taken_at(*, session: Session, camera_ids: list[int]) -> dict[int, datetime]:
    """When each camera's snapshot (if any) was taken; no image is read."""
    if not camera_ids:
        return {}
    rows = session.execute(
        select(CameraSnapshot.camera_id, CameraSnapshot.taken_at).where(
            CameraSnapshot.camera_id.in_(camera_ids)
        )
    )
    return {r.camera_id: r.taken_at for r in rows}


def view_snapshot(
    *, session: Session, camera: Camera, actor: str, keyring: CropKeyring | None = None
) -> bytes:
    """The camera's snapshot for a person, audited (``snapshot.view``); NotFound if none."""
    snap = session.get(CameraSnapshot, camera.id)
    device = session.get(Device, camera.device_id)
    if snap is None or device is None:
        raise NotFound(f"camera {camera.id} has no snapshot")
    jpeg = (keyring or current_keyring()).open(snap.key_id, bytes(snap.jpeg), aad=_aad(camera.id))
    record(
        session=session,
        actor=actor,
        action="snapshot.view",
        object_type="device",
        object_id=device.id,
        site_id=device.site_id,
        detail={"camera": camera.name},
    )
    return jpeg


def purge_snapshots(
    *, session: Session, site: Site, now: datetime | None = None, dry_run: bool = False
) -> int:
    """Delete the site's snapshots older than its retention; returns how many (a dry run
    counts them only)."""
    now = now or utcnow()
    cutoff = now - timedelta(hours=site.snapshot_retention_hours)
    ids = select(Camera.id).join(Device, Device.id == Camera.device_id)
    ids = ids.where(Device.site_id == site.id)
    if dry_run:
        return int(
            session.scalar(
                select(func.count())
                .select_from(CameraSnapshot)
                .where(CameraSnapshot.camera_id.in_(ids), CameraSnapshot.taken_at < cutoff)
            )
            or 0
        )
    result = session.execute(
        delete(CameraSnapshot)
        .where(CameraSnapshot.camera_id.in_(ids), CameraSnapshot.taken_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
