"""The daemon's *settings sync* thread: camera settings from the server, applied live.

Per camera the server holds on/off, the analysed fps and a region of interest
(issue 17 D). The heartbeat ack names the server's settings version; when it
is not the one this box runs, this thread fetches ``GET /device/config``
(ETag) and hands each camera its settings (:meth:`Cameras.apply
<edge.daemon.cameras.Cameras.apply>`): no restart, live tracks go on, nothing
queued is touched. The settings are cached in ``<data_dir>/settings.json``
so a box that restarts without the server keeps them.

A value written in the box's own edge.yaml wins (``enabled``/``roi`` on a
camera, ``analyse_fps`` in its or the top-level ``pipeline``): the box keeps
it, and reports it as *pinned*, so the web can say "pinned on the box".

When the site opted in to snapshots, a second thread sends each running
camera's latest frame, 320 px wide, every ``snapshot_interval_s``.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from edge.client import ClientError, LintelClient
from edge.daemon.cameras import Cameras
from edge.daemon.config import CameraConfig
from edge.files import atomic_write
from edge.pipeline.config import PipelineConfig
from edge.wire import (
    MAX_SNAPSHOT_BYTES,
    SNAPSHOT_WIDTH,
    CameraSettings,
    DeviceSettings,
    SnapshotIn,
)

log = logging.getLogger(__name__)

SNAPSHOT_JPEG_QUALITY = 70


def pinned_keys(cam: CameraConfig, top: PipelineConfig) -> list[str]:
    """The settings this camera's edge.yaml sets itself (they win over the server's)."""
    keys: list[str] = [k for k in ("enabled", "roi") if k in cam.model_fields_set]
    own = cam.pipeline is not None and "analyse_fps" in cam.pipeline.model_fields_set
    if own or "analyse_fps" in top.model_fields_set:
        keys.append("analyse_fps")
    return sorted(keys)


def snapshot_jpeg(image: npt.NDArray[np.uint8], width: int = SNAPSHOT_WIDTH) -> bytes | None:
    """``image`` scaled to ``width`` px wide (never up) as a JPEG, or None if it fails."""
    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(  # type: ignore[assignment]
            image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA
        )
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_JPEG_QUALITY])
    if not ok or len(buf) > MAX_SNAPSHOT_BYTES:
        return None
    return bytes(buf)


class SettingsSync:
    """Holds the server's settings, applies them to the cameras, reports what it runs."""

    def __init__(
        self,
        *,
        cameras: Cameras,
        camera_configs: list[CameraConfig],
        pipeline: PipelineConfig,
        client: LintelClient | None,
        cache_path: Path,
    ) -> None:
        self.cameras = cameras
        self.client = client
        self.cache_path = cache_path
        self.pinned = {c.name: pinned_keys(c, pipeline) for c in camera_configs}
        self.settings: DeviceSettings | None = None
        self.applied_at: float | None = None
        self.wakeup = threading.Event()
        """Set to sync now (a heartbeat ack names another version) or to stop waiting."""

    @property
    def version(self) -> int | None:
        """The settings version this box runs (None: none from the server yet)."""
        return None if self.settings is None else self.settings.version

    def load_cached(self) -> None:
        """Offline start: the cameras start with the last settings we had."""
        try:
            text = self.cache_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read %s: %s", self.cache_path, exc)
            return
        try:
            self.apply(DeviceSettings.model_validate_json(text), source="cache")
        except ValidationError as exc:
            log.warning("ignoring unreadable cached settings %s: %s", self.cache_path, exc)

    def apply(self, settings: DeviceSettings, *, source: str) -> None:
        """Give every camera its settings; what edge.yaml pins stays as written there."""
        remote = {c.name: c for c in settings.cameras}
        for cam in self.cameras.configs:
            mine = remote.get(cam.name) or CameraSettings(name=cam.name)
            pinned = self.pinned.get(cam.name, [])
            self.cameras.apply(
                cam.name,
                enabled=cam.enabled if "enabled" in pinned else mine.enabled,
                analyse_fps=None if "analyse_fps" in pinned else mine.analyse_fps,
                roi=cam.roi if "roi" in pinned else mine.roi,
            )
        self.settings = settings
        self.applied_at = time.time()
        log.info("camera settings version %d from %s applied", settings.version, source)

    def sync_once(self) -> bool:
        """Fetch newer settings and apply them; True when some were applied."""
        if self.client is None:
            return False
        try:
            fetched = self.client.fetch_config(
                None if self.settings is None else self.settings.etag
            )
        except ClientError as exc:
            log.warning("settings sync failed (keeping the current ones): %s", exc)
            return False
        if fetched is None:
            return False
        self.apply(fetched, source="server")
        try:
            atomic_write(self.cache_path, fetched.model_dump_json().encode())
        except OSError as exc:
            log.warning("cannot cache the settings in %s: %s", self.cache_path, exc)
        return True

    def run(self, stop_event: threading.Event, interval_s: float) -> None:
        """The settings-sync thread: at once, then when woken or every ``interval_s``."""
        self.wakeup.set()
        while not stop_event.is_set():
            self.wakeup.wait(interval_s)
            self.wakeup.clear()
            if stop_event.is_set():
                break
            try:
                self.sync_once()
            except Exception:
                log.exception("settings sync: unexpected error (keeping the current settings)")

    def run_snapshots(self, stop_event: threading.Event) -> None:
        """The snapshot thread: while the site opts in, each running camera's latest frame
        every ``snapshot_interval_s``."""
        last: dict[str, float] = {}
        while not stop_event.wait(1.0):
            settings, client = self.settings, self.client
            if settings is None or client is None or not settings.snapshots:
                continue
            now = time.monotonic()
            for name, rt in self.cameras.runtimes.items():
                if now - last.get(name, -1e9) < settings.snapshot_interval_s:
                    continue
                pipeline = rt.pipeline
                frame = None if pipeline is None else pipeline.last_frame
                if frame is None:
                    continue
                jpeg = snapshot_jpeg(frame.image)
                if jpeg is None:
                    continue
                last[name] = now
                try:
                    client.upload_snapshot(
                        SnapshotIn(
                            camera=name,
                            taken_at=datetime.now(UTC),
                            jpeg_b64=base64.b64encode(jpeg).decode("ascii"),
                        )
                    )
                except ClientError as exc:
                    log.info("camera %s: snapshot not sent: %s", name, exc)

    def status(self) -> dict[str, Any]:
        """What status.json says of the settings."""
        return {
            "version": self.version,
            "pinned": {k: v for k, v in self.pinned.items() if v},
            "snapshots": bool(self.settings and self.settings.snapshots),
            "cameras": {
                name: {
                    "enabled": rt.enabled,
                    "analyse_fps": rt.analyse_fps
                    if rt.analyse_fps is not None
                    else self.cameras.base_config(name).analyse_fps,
                    "roi": None if rt.roi is None else list(rt.roi),
                    # What the running pipeline does now: every how many frames it analyses.
                    "sample_every": None if rt.pipeline is None else rt.pipeline.stats.sample_every,
                }
                for name, rt in self.cameras.runtimes.items()
            },
        }
