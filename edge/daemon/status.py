"""The daemon's *heartbeat* thread and ``<data_dir>/status.json``: what the box reports.

The heartbeat sends per-camera state, fps, frames, dropped frames, reconnects,
outbox depth/dropped/dead, model and version; its ack naming a newer gallery
version wakes the gallery sync. ``status.json`` (rewritten by the main thread)
adds the per-camera counters, the outbox, the gallery and the last upload.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edge.client import AuthRefused, ClientError, LintelClient
from edge.daemon.cameras import Cameras
from edge.daemon.forwarder import Forwarder
from edge.daemon.gallery_sync import GallerySync
from edge.daemon.settings_sync import SettingsSync
from edge.daemon.token_watch import TokenWatch
from edge.files import atomic_write
from edge.outbox import Outbox, OutboxStats
from edge.wire import CameraStats, Heartbeat

log = logging.getLogger(__name__)


def software_version() -> str:
    """The installed ``lintel`` version (``0+unknown`` from a source tree)."""
    try:
        return version("lintel")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class StatusReporter:
    """Builds the heartbeat and ``status.json`` from the other threads' state (read only)."""

    def __init__(
        self,
        *,
        device: str,
        server_url: str | None,
        status_path: Path,
        model_id: str,
        cameras: Cameras,
        outbox: Outbox,
        forwarder: Forwarder,
        gallery: GallerySync,
        stop_event: threading.Event,
        settings: SettingsSync | None = None,
        tokens: TokenWatch | None = None,
    ) -> None:
        """``settings``: the camera settings from the server (None: a box without them).
        ``tokens``: the device token's watch (None: a box without a server)."""
        self.device = device
        self.server_url = server_url
        self.status_path = status_path
        self.model_id = model_id
        self.cameras = cameras
        self.outbox = outbox
        self.forwarder = forwarder
        self.gallery = gallery
        self.stop_event = stop_event
        self.settings = settings
        self.tokens = tokens
        self.started = time.monotonic()

    def heartbeat_payload(self) -> Heartbeat:
        """Per-camera state and counters, outbox depth/drops, model and version."""
        cams = {}
        for cam in self.cameras.configs:
            rt = self.cameras.runtimes[cam.name]
            frames, dropped, reconnects = rt.totals()
            cams[cam.name] = CameraStats(
                state=rt.current_state(cam.stall_timeout_s),  # type: ignore[arg-type]
                fps=round(rt.fps(), 2),
                frames=frames,
                dropped_frames=dropped,
                reconnects=reconnects,
                analysed_fps=round(rt.analysed_fps(), 2),
                enabled=rt.enabled,
                last_track_at=rt.last_track_at,
            )
        stats = self.outbox.stats()
        settings = self.settings
        return Heartbeat(
            version=software_version(),
            model_id=self.model_id,
            uptime_s=round(time.monotonic() - self.started, 1),
            cameras=cams,
            outbox_depth=stats.depth,
            outbox_dropped=stats.dropped,
            outbox_dead=stats.dead,
            gallery_version=self.gallery.version,
            # 0: this box takes settings from the server but has none yet.
            config_version=None if settings is None else settings.version or 0,
            config_pinned=None
            if settings is None
            else {k: v for k, v in settings.pinned.items() if v},
        )

    def run_heartbeat(self, client: LintelClient, interval_s: float) -> None:
        """The heartbeat thread: report every ``interval_s`` until stopped."""
        while not self.stop_event.is_set():
            try:
                ack = client.heartbeat(self.heartbeat_payload())
                if self.gallery.version is None or ack.gallery_version != self.gallery.version:
                    self.gallery.wakeup.set()  # the server has a newer gallery: fetch now
                settings = self.settings
                if (
                    settings is not None
                    and ack.config_version is not None
                    and ack.config_version != settings.version
                ):
                    settings.wakeup.set()  # the server has other camera settings: fetch now
            except AuthRefused as exc:
                # Refused heartbeats are the periodic look at the token file even
                # while the outbox is empty; a new token gets a heartbeat at once.
                if self.tokens is not None and self.tokens.recovered(exc):
                    continue
                log.info("heartbeat refused: %s", exc)
            except ClientError as exc:
                log.info("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat: unexpected error")
            self.stop_event.wait(interval_s)

    def status(self) -> dict[str, Any]:
        """Everything an operator (or a test) wants to know, as JSON-able data."""
        hb = self.heartbeat_payload().model_dump(mode="json")
        for name, cam in hb["cameras"].items():
            rt = self.cameras.runtimes[name]
            cam.update(
                tracks=rt.tracks,
                lost_tracks=rt.lost_tracks,
                stalls=rt.stalls,
                opens=rt.opens,
                ended=rt.ended,
                last_error=rt.last_error,
            )
        ob: OutboxStats = self.outbox.stats()
        gallery = self.gallery.gallery
        return {
            "device": self.device,
            "pid": os.getpid(),
            "at": datetime.now(UTC).isoformat(),
            "stopping": self.stop_event.is_set(),
            "version": hb["version"],
            "model_id": hb["model_id"],
            "uptime_s": hb["uptime_s"],
            "cameras": hb["cameras"],
            "outbox": {
                "depth": ob.depth,
                "bytes": ob.bytes,
                "queued": ob.queued,
                "delivered": ob.delivered,
                "dropped": ob.dropped,
                "dead": ob.dead,
            },
            "gallery": {
                "version": self.gallery.version,
                "templates": 0 if gallery is None else int(gallery.templates.shape[0]),
                "adaptive_templates": self.gallery.adaptive.count(),
            },
            "config": None if self.settings is None else self.settings.status(),
            "server": {
                "url": self.server_url,
                "last_upload_at": self.forwarder.last_upload_at,
                "last_error": self.forwarder.last_upload_error,
                **({} if self.tokens is None else self.tokens.status()),
            },
        }

    def write_status(self) -> None:
        """Rewrite ``<data_dir>/status.json`` atomically (never fatal)."""
        try:
            atomic_write(self.status_path, json.dumps(self.status(), indent=1).encode())
        except (OSError, sqlite3.Error) as exc:
            log.warning("cannot write %s: %s", self.status_path, exc)
