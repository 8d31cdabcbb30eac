"""Health of devices and cameras in words (issue 17 D): what the devices pages flag.

Read from each device's last heartbeat (``Device.stats``) and its cameras'
rows, and compared with what the server holds (gallery and
settings versions). :func:`problems` is pure: a list of (message key, values)
the page translates, so "camera 'gate-2' has sent no frames for 2 h" reads
the same in both languages and the rules are tested without a page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.devices.models import Camera, Device
from server.devices.service import FRAMES_AT
from server.devices.snapshots import snapshot_taken_at
from server.sites.models import Entrance, Site

ONLINE_WITHIN = timedelta(seconds=90)
"""A device is online if it sent a heartbeat this recently (3 periods of the edge's 30 s)."""
BACKLOG_WARN = 1000
"""Sightings waiting in a box's outbox worth a flag: at the default upload pace a
healthy box drains thousands in seconds, so a backlog this size means it cannot
reach the server (or the server refuses it)."""
DARK_AFTER = timedelta(minutes=5)
"""A camera that delivered no frame for this long is flagged (a reconnect takes seconds)."""
DROP_SHARE_WARN = 0.05
"""Frames dropped (the analysis falls behind the camera) above this share: lower the
analysed fps or the camera's resolution."""


CAMERA_STATES = ("starting", "reconnecting", "stalled", "stopped")
"""Camera states (other than running) with their own words."""

WORST_FIRST = (
    "health.offline",
    "health.never",
    "health.no_frames",
    "health.cam_stalled",
    "health.cam_reconnecting",
    "health.cam_stopped",
    "health.cam_other",
    "health.config_behind",
    "health.no_config",
    "health.gallery_behind",
    "health.backlog",
    "health.lost",
    "health.dropping",
    "health.clock",
    "health.cam_starting",
)
"""Every key :func:`problems` gives, worst first across devices (the dashboard's order).
Nothing seen at all comes first (a door is unwatched): a box that stopped reporting before
one that never did (that is usually an install in progress), then settings the box does not
run (it watches with old rules or an old gallery), then sightings that wait or are lost,
then frames dropped and a wrong clock (some sightings), and a camera that is starting
(seconds, usually gone by the next heartbeat). ``health.disabled`` is not here: an
admin turned the device off on purpose, so it does not need anyone's attention."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong, as a message key and its values (the page translates it)."""

    key: str
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CameraHealth:
    """One camera: settings the server holds, and how the box says it runs."""

    id: int
    name: str
    entrance_id: int | None
    entrance: str | None
    enabled: bool
    analyse_fps: float | None
    roi: tuple[float, float, float, float] | None
    state: str | None
    fps: float | None
    analysed_fps: float | None
    frames: int | None
    dropped_frames: int | None
    frames_at: datetime | None
    last_sighting: datetime | None
    pinned: tuple[str, ...]
    runs_enabled: bool | None
    snapshot_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """One device with its cameras and what is wrong with it."""

    id: int
    name: str
    site_id: int
    site_name: str
    disabled: bool
    online: bool
    last_heartbeat: datetime | None
    software_version: str | None
    outbox: int | None
    outbox_lost: int
    gallery_version: int | None
    site_gallery_version: int
    config_version: int | None
    server_config_version: int
    future_refused: int
    cameras: tuple[CameraHealth, ...]
    problems: tuple[Problem, ...]


def _hours_minutes(delta: timedelta) -> dict[str, int]:
    minutes = max(0, int(delta.total_seconds() // 60))
    return {"h": minutes // 60, "m": minutes % 60}


def _when(value: object) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def problems(d: DeviceHealth, now: datetime) -> list[Problem]:
    """What is wrong with a device, worst first, in message keys and values."""
    out: list[Problem] = []
    if d.disabled:
        return [Problem("health.disabled")]
    if d.last_heartbeat is None:
        return [Problem("health.never")]
    if not d.online:
        out.append(Problem("health.offline", _hours_minutes(now - d.last_heartbeat)))
    for cam in d.cameras:
        if not cam.enabled or cam.runs_enabled is False:
            continue
        if cam.state is not None and cam.state != "running":
            dark = now - cam.frames_at if cam.frames_at else None
            if dark is not None and dark >= DARK_AFTER:
                out.append(
                    Problem("health.no_frames", {"camera": cam.name, **_hours_minutes(dark)})
                )
            else:
                known = cam.state in CAMERA_STATES
                key = f"health.cam_{cam.state}" if known else "health.cam_other"
                out.append(Problem(key, {"camera": cam.name}))
        if cam.frames and cam.dropped_frames and cam.dropped_frames / cam.frames > DROP_SHARE_WARN:
            out.append(
                Problem(
                    "health.dropping",
                    {"camera": cam.name, "pct": round(100 * cam.dropped_frames / cam.frames)},
                )
            )
    if d.outbox is not None and d.outbox >= BACKLOG_WARN:
        out.append(Problem("health.backlog", {"n": f"{d.outbox:,}"}))
    if d.outbox_lost:
        out.append(Problem("health.lost", {"n": d.outbox_lost}))
    if d.config_version is None:
        out.append(Problem("health.no_config"))
    elif d.config_version != d.server_config_version:
        out.append(
            Problem(
                "health.config_behind", {"box": d.config_version, "server": d.server_config_version}
            )
        )
    if d.gallery_version is not None and d.gallery_version != d.site_gallery_version:
        out.append(
            Problem(
                "health.gallery_behind",
                {"box": d.gallery_version, "server": d.site_gallery_version},
            )
        )
    if d.future_refused:
        out.append(Problem("health.clock", {"n": d.future_refused}))
    return out


def device_health(
    *, session: Session, devices: Sequence[Device], now: datetime
) -> list[DeviceHealth]:
    """Health of ``devices`` (three queries for all of them, whatever their number)."""
    if not devices:
        return []
    ids = [d.id for d in devices]
    sites = {
        s.id: s
        for s in session.scalars(select(Site).where(Site.id.in_({d.site_id for d in devices})))
    }
    cams: dict[int, list[tuple[Camera, str | None]]] = {}
    for cam, entrance in session.execute(
        select(Camera, Entrance.name)
        .outerjoin(Entrance, Entrance.id == Camera.entrance_id)
        .where(Camera.device_id.in_(ids))
        .order_by(Camera.name)
    ):
        cams.setdefault(cam.device_id, []).append((cam, entrance))
    cam_ids = [c.id for rows in cams.values() for c, _ in rows]
    snaps = snapshot_taken_at(session=session, camera_ids=cam_ids)
    out = []
    for device in devices:
        stats: dict[str, Any] = device.stats or {}
        reported = _mapping(stats.get("cameras"))
        frames_at = _mapping(stats.get(FRAMES_AT))
        pinned = _mapping(stats.get("config_pinned"))
        cam_rows = []
        for cam, entrance_name in cams.get(device.id, []):
            r = reported.get(cam.name) if isinstance(reported.get(cam.name), dict) else None
            cam_rows.append(
                CameraHealth(
                    id=cam.id,
                    name=cam.name,
                    entrance_id=cam.entrance_id,
                    entrance=entrance_name,
                    enabled=cam.enabled,
                    analyse_fps=cam.analyse_fps,
                    roi=None
                    if cam.roi is None
                    else (cam.roi[0], cam.roi[1], cam.roi[2], cam.roi[3]),
                    state=None if r is None else str(r.get("state", "?")),
                    fps=None if r is None else float(r.get("fps") or 0.0),
                    analysed_fps=None
                    if r is None or r.get("analysed_fps") is None
                    else float(r["analysed_fps"]),
                    frames=None if r is None else int(r.get("frames") or 0),
                    dropped_frames=None if r is None else int(r.get("dropped_frames") or 0),
                    frames_at=_when(frames_at.get(cam.name)),
                    # As the box reports it: a query for the newest sighting per camera
                    # has no index to use and would scan a district's sightings.
                    last_sighting=None if r is None else _when(r.get("last_track_at")),
                    pinned=tuple(str(k) for k in pinned.get(cam.name) or ()),
                    runs_enabled=None
                    if r is None or r.get("enabled") is None
                    else bool(r["enabled"]),
                    snapshot_at=snaps.get(cam.id),
                )
            )
        site = sites[device.site_id]
        beat = device.last_heartbeat_at
        outbox = stats.get("outbox_depth")
        config_version = stats.get("config_version")
        gallery_version = stats.get("gallery_version")
        row = DeviceHealth(
            id=device.id,
            name=device.name,
            site_id=device.site_id,
            site_name=site.name,
            disabled=device.disabled,
            online=not device.disabled and beat is not None and now - beat <= ONLINE_WITHIN,
            last_heartbeat=beat,
            software_version=device.software_version,
            outbox=outbox if isinstance(outbox, int) else None,
            outbox_lost=int(stats.get("outbox_dropped") or 0) + int(stats.get("outbox_dead") or 0),
            gallery_version=gallery_version if isinstance(gallery_version, int) else None,
            site_gallery_version=site.gallery_version,
            config_version=config_version if isinstance(config_version, int) else None,
            server_config_version=device.config_version,
            future_refused=device.future_refused,
            cameras=tuple(cam_rows),
            problems=(),
        )
        out.append(_with_problems(row, now))
    return out


def needs_attention(rows: Sequence[DeviceHealth]) -> list[tuple[DeviceHealth, Problem]]:
    """Each problem of each device in use (not disabled), worst first, then by device name."""
    found = [(d, p) for d in rows if not d.disabled for p in d.problems]
    return sorted(found, key=lambda dp: (WORST_FIRST.index(dp[1].key), dp[0].name, dp[0].id))


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _with_problems(row: DeviceHealth, now: datetime) -> DeviceHealth:
    # A frozen row, its problems derived from the rest of it.
    return replace(row, problems=tuple(problems(row, now)))
