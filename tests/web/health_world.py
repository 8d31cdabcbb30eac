"""Device heartbeats for the health tests (dashboard and browser): a box that is fine, one
whose camera went dark, one that went offline, and another device of a site."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from server.db import make_session_factory, utcnow
from server.devices.models import Camera, Device
from server.devices.service import create_device, record_heartbeat
from server.sites.models import Site


def healthy(engine: Engine, device_id: int, camera: str = "gate") -> None:
    """A heartbeat from a box that runs the server's settings and gallery, camera delivering."""
    with make_session_factory(engine)() as s:
        device = s.get(Device, device_id)
        assert device is not None
        site = s.get(Site, device.site_id)
        assert site is not None
        stats: dict[str, Any] = {
            "cameras": {camera: {"state": "running", "fps": 25.0, "frames": 100}},
            "outbox_depth": 0,
            "config_version": device.config_version,
            "gallery_version": site.gallery_version,
        }
        record_heartbeat(session=s, device=device, software_version="1.2", stats=stats)
        s.commit()


def dark(engine: Engine, device_id: int, camera: str = "gate") -> None:
    """The box reports in, but its camera has delivered no frame for 2 h 5 min."""
    healthy(engine, device_id, camera)
    with make_session_factory(engine)() as s:
        device = s.get(Device, device_id)
        assert device is not None and device.stats is not None
        device.stats = {
            **device.stats,
            "cameras": {camera: {"state": "reconnecting", "fps": 0.0, "frames": 100}},
            "frames_at": {camera: (utcnow() - timedelta(hours=2, minutes=5)).isoformat()},
        }
        s.commit()


def offline(engine: Engine, device_id: int) -> None:
    """A box that last reported 3 h 10 min ago."""
    healthy(engine, device_id)
    with make_session_factory(engine)() as s:
        device = s.get(Device, device_id)
        assert device is not None
        device.last_heartbeat_at = utcnow() - timedelta(hours=3, minutes=10)
        s.commit()


def second_device(engine: Engine, site_id: int, name: str, camera: str = "gate") -> int:
    with make_session_factory(engine)() as s:
        device, _token = create_device(session=s, site_id=site_id, name=name)
        s.add(Camera(device_id=device.id, name=camera))
        s.commit()
        return device.id
