"""Camera settings managed from the web and synced to the box (issue 17 D).

Per camera the server holds its entrance, analysed fps, region of interest and
on/off. Every change bumps the device's ``config_version``; the heartbeat ack
names that version, and a box running another one fetches
``GET /device/config`` (ETag) and applies it without a restart. A value the
box's own edge.yaml sets wins there; the box reports which (``config_pinned``)
and the web says "pinned on the box".
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.wire import CameraSettings, DeviceSettings, Roi, check_roi
from server.audit.service import record
from server.devices.models import Camera, CameraSnapshot, Device
from server.errors import InvalidInput, NotFound
from server.sites.models import Entrance, Site

SNAPSHOT_INTERVAL_S = 300.0
"""How often a box sends a camera's snapshot when its site opted in: the angle of a
door camera changes rarely, and a fresh frame every 5 minutes is enough to check it."""

MAX_RETENTION_HOURS = 24 * 7


def get_camera(*, session: Session, camera_id: int, site_ids: set[int] | None) -> Camera:
    """A camera in one of ``site_ids`` (None: any); :class:`NotFound` otherwise."""
    found = session.execute(
        select(Camera, Device.site_id)
        .join(Device, Device.id == Camera.device_id)
        .where(Camera.id == camera_id)
    ).first()
    if found is None or (site_ids is not None and found[1] not in site_ids):
        raise NotFound(f"camera {camera_id} does not exist")
    camera: Camera = found[0]
    return camera


def update_camera(
    *,
    session: Session,
    camera: Camera,
    actor: str,
    entrance_id: int | None,
    analyse_fps: float | None,
    roi: Roi | None,
    enabled: bool,
) -> bool:
    """Change a camera's settings, audited; bumps its device's config version when
    anything changed. Returns whether anything did."""
    device = session.get(Device, camera.device_id)
    assert device is not None  # a camera's device is its foreign key
    if entrance_id is not None:
        entrance = session.get(Entrance, entrance_id)
        if entrance is None or entrance.site_id != device.site_id:
            raise InvalidInput("the entrance is not one of this device's site")
    if analyse_fps is not None and not 0.2 <= analyse_fps <= 30:
        raise InvalidInput("analysed fps must be between 0.2 and 30")
    try:
        roi = check_roi(roi)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    rounded = None if roi is None else [round(v, 4) for v in roi]
    before = {
        "entrance_id": camera.entrance_id,
        "analyse_fps": camera.analyse_fps,
        "roi": camera.roi,
        "enabled": camera.enabled,
    }
    after = {
        "entrance_id": entrance_id,
        "analyse_fps": analyse_fps,
        "roi": rounded,
        "enabled": enabled,
    }
    changed = {k: v for k, v in after.items() if before[k] != v}
    if not changed:
        return False
    camera.entrance_id = entrance_id
    camera.analyse_fps = analyse_fps
    camera.roi = rounded
    camera.enabled = enabled
    device.config_version += 1
    session.flush()
    record(
        session=session,
        actor=actor,
        action="camera.settings",
        object_type="device",
        object_id=device.id,
        site_id=device.site_id,
        detail={"camera": camera.name, "changed": changed, "config_version": device.config_version},
    )
    return True


def set_site_snapshots(
    *, session: Session, site: Site, enabled: bool, retention_hours: int, actor: str
) -> None:
    """Opt a site in or out of camera snapshots, audited; off deletes those it has.

    Every device of the site gets a new config version, so the boxes start or
    stop sending at their next heartbeat.
    """
    if not 1 <= retention_hours <= MAX_RETENTION_HOURS:
        raise InvalidInput(f"snapshots are kept between 1 and {MAX_RETENTION_HOURS} hours")
    if site.snapshots == enabled and site.snapshot_retention_hours == retention_hours:
        return
    site.snapshots = enabled
    site.snapshot_retention_hours = retention_hours
    for device in session.scalars(select(Device).where(Device.site_id == site.id)):
        device.config_version += 1
    if not enabled:
        from_site = select(Camera.id).join(Device, Device.id == Camera.device_id)
        ids = list(session.scalars(from_site.where(Device.site_id == site.id)))
        _delete_snapshots(session, ids)
    session.flush()
    record(
        session=session,
        actor=actor,
        action="site.snapshots",
        object_type="site",
        object_id=site.id,
        site_id=site.id,
        detail={"enabled": enabled, "retention_hours": retention_hours},
    )


def _delete_snapshots(session: Session, camera_ids: list[int]) -> None:
    if camera_ids:
        for snap in session.scalars(
            select(CameraSnapshot).where(CameraSnapshot.camera_id.in_(camera_ids))
        ):
            session.delete(snap)


def device_settings(*, session: Session, device: Device) -> DeviceSettings:
    """The device's settings at its current version, as the box receives them."""
    site = session.get(Site, device.site_id)
    if site is None:
        raise NotFound(f"site {device.site_id} does not exist")
    rows = session.execute(
        select(Camera, Entrance.name)
        .outerjoin(Entrance, Entrance.id == Camera.entrance_id)
        .where(Camera.device_id == device.id)
        .order_by(Camera.name)
    ).all()
    return DeviceSettings(
        device_id=device.id,
        version=device.config_version,
        snapshots=site.snapshots,
        snapshot_interval_s=SNAPSHOT_INTERVAL_S,
        cameras=[
            CameraSettings(
                name=cam.name,
                enabled=cam.enabled,
                analyse_fps=cam.analyse_fps,
                roi=None if cam.roi is None else (cam.roi[0], cam.roi[1], cam.roi[2], cam.roi[3]),
                entrance=entrance,
            )
            for cam, entrance in rows
            # An empty name (a heartbeat may register one) is no camera a box can run.
            if cam.name
        ],
    )
