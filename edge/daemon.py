"""``lintel-edge run``: the unattended edge daemon.

Threads, each owning its own state (nothing shared but the outbox, which
locks, and the gallery reference, which is swapped whole):

- one *camera worker* per camera: a live :class:`~edge.capture.VideoSource`
  (reconnects with backoff; its reader thread drops and counts frames when
  analysis falls behind) feeding a :class:`~edge.pipeline.Pipeline`; every
  ended track becomes a sighting in the outbox;
- the *forwarder*: drains the outbox to the server in batches; retryable
  failures back off (doubling, capped), item rejections go to the dead table;
- the *gallery sync*: asks for the site's gallery with its ETag, keeps the
  last one on disk so a reboot without network still matches residents, and
  replaces the local copy whole (so deleted occupants leave it);
- the *heartbeat*: fps, dropped frames, outbox depth, model and version.

SIGTERM/SIGINT set one stop event; workers finish their current frame, live
tracks are flushed into the outbox, and the forwarder gets a last short drain.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType

from edge.capture import VideoSource
from edge.daemon_config import CameraConfig, EdgeConfig, load_config
from edge.errors import CaptureError, LintelEdgeError
from edge.gallery import Gallery, Template
from edge.outbox import Outbox
from edge.pipeline import Pipeline, TrackResult
from edge.replay import track_to_sighting
from server.wire import CameraStats, Heartbeat, SightingIn, decode_embedding
from server.wire import Gallery as WireGallery

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return version("lintel")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class GalleryCache:
    """The last gallery the server sent, on disk (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> WireGallery | None:
        try:
            return WireGallery.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("cached gallery %s is unreadable; ignoring it", self.path)
            return None

    def save(self, gallery: WireGallery) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".gallery-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(gallery.model_dump_json().encode())
                fh.flush()
                os.fsync(fh.fileno())
            # The replace drops the previous copy whole: an occupant deleted on
            # the server leaves no template behind on the box.
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def to_local_gallery(wire: WireGallery, *, model_id: str, threshold: float) -> Gallery:
    """A server gallery as a matcher; identities are occupant ids as strings."""
    return Gallery.from_templates(
        (
            Template(
                identity=str(t.occupant_id),
                embedding=decode_embedding(t.embedding_b64),
                model_id=t.model_id or wire.model_id,
            )
            for t in wire.templates
        ),
        model_id=model_id,
        threshold=threshold,
    )


@dataclass
class CameraState:
    """What the heartbeat reports for one camera."""

    state: str = "starting"
    frames: int = 0
    dropped: int = 0
    tracks: int = 0
    last_frame_at: float = 0.0
    fps_window: list[float] = field(default_factory=list)

    def fps(self) -> float:
        now = time.monotonic()
        recent = [t for t in self.fps_window if now - t <= 10.0]
        self.fps_window = recent
        return len(recent) / 10.0


class EdgeDaemon:
    """Runs cameras, forwarder, gallery sync and heartbeat until :meth:`stop`."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        engine: object | None = None,
        client: object | None = None,
    ) -> None:
        """``engine``/``client``: injected in tests; built from the config otherwise."""
        self.config = config
        self.stop_event = threading.Event()
        data = config.device.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(data / "outbox.db", max_bytes=config.outbox.max_mb * 1024 * 1024)
        self.gallery_cache = GalleryCache(data / "gallery.json")
        if engine is None:
            from edge.engine import FaceEngine

            engine = FaceEngine.load(config.model)
        self.engine = engine
        self.model_id: str = engine.model_id  # type: ignore[attr-defined]
        self.threshold: float = engine.threshold  # type: ignore[attr-defined]
        self.client = client
        if self.client is None and config.server is not None:
            from edge.client import LintelClient

            self.client = LintelClient(
                config.server.url,
                config.token(),
                timeout=config.server.timeout_s,
                model_id=self.model_id,
            )
        self.gallery: Gallery | None = None
        self.gallery_etag: str | None = None
        cached = self.gallery_cache.load()
        if cached is not None:
            self._install_gallery(cached)
        self.cameras = {c.name: CameraState() for c in config.cameras}
        self.started = time.monotonic()
        self._threads: list[threading.Thread] = []

    # -- gallery -----------------------------------------------------------
    def _install_gallery(self, wire: WireGallery) -> None:
        try:
            self.gallery = to_local_gallery(wire, model_id=self.model_id, threshold=self.threshold)
        except LintelEdgeError as exc:
            log.error("gallery version %s refused: %s", wire.version, exc)
            return
        self.gallery_etag = wire.etag
        log.info("gallery version %d: %d templates", wire.version, len(wire.templates))

    def sync_gallery_once(self) -> bool:
        """Ask the server for a newer gallery; True when one was installed."""
        from edge.client import ClientError

        if self.client is None:
            return False
        try:
            wire = self.client.fetch_gallery(self.gallery_etag)  # type: ignore[attr-defined]
        except ClientError as exc:
            log.warning("gallery sync failed (keeping the current one): %s", exc)
            return False
        if wire is None:
            return False
        self.gallery_cache.save(wire)
        self._install_gallery(wire)
        return True

    # -- sightings ---------------------------------------------------------
    def _sighting(self, camera: str, result: TrackResult) -> SightingIn:
        # Live frame indexes restart with the process, so the id also carries
        # the track's start time: unique across restarts, yet the same track
        # always maps to the same id (re-sends are deduplicated server-side).
        source = f"{camera}@{int(result.started_at * 1000)}"
        return track_to_sighting(
            result, device=self.config.device.name, source=source, camera=camera
        )

    def record(self, camera: str, results: list[TrackResult]) -> None:
        """Queue ended tracks durably (known ones as ids only)."""
        for r in results:
            self.cameras[camera].tracks += 1
            try:
                self.outbox.put(self._sighting(camera, r))
            except LintelEdgeError as exc:
                log.error("camera %s: track not recorded: %s", camera, exc)

    def forward_once(self) -> int:
        """Send one batch from the outbox; returns how many left it (raises on retryable)."""
        from edge.client import Rejected

        assert self.client is not None and self.config.server is not None
        entries = self.outbox.peek(self.config.server.batch_size)
        if not entries:
            return 0
        try:
            result = self.client.upload_sightings(  # type: ignore[attr-defined]
                [e.sighting for e in entries]
            )
        except Rejected as exc:
            if exc.status_code == 413 and len(entries) > 1:
                # Too big together: send them one by one next time round.
                raise
            # The whole batch is invalid as such: keep it out of the retry loop.
            self.outbox.bury({e.id: exc.detail for e in entries})
            return len(entries)
        rejected = {str(err.id): err.error for err in result.errors if err.id is not None}
        for err in result.errors:
            if err.id is None and 0 <= err.index < len(entries):
                rejected[entries[err.index].id] = err.error
        self.outbox.bury(rejected)
        self.outbox.ack([e.id for e in entries if e.id not in rejected])
        return len(entries)

    # -- threads -----------------------------------------------------------
    def _camera_worker(self, cam: CameraConfig) -> None:
        state = self.cameras[cam.name]
        pipeline_cfg = cam.pipeline or self.config.pipeline
        while not self.stop_event.is_set():
            pipeline = Pipeline(self.engine, self.gallery, pipeline_cfg)  # type: ignore[arg-type]
            source = VideoSource(
                cam.source,
                reconnect=cam.reconnect,
                stop_event=self.stop_event,
                read_timeout_s=cam.stall_timeout_s,
            )
            state.state = "starting"
            try:
                for result in pipeline.run(source):
                    self.record(cam.name, [result])
                    self._note_frames(state, source)
                    if pipeline.gallery is not self.gallery:
                        pipeline.gallery = self.gallery  # a new gallery arrived
            except CaptureError as exc:
                state.state = "reconnecting"
                log.error("camera %s: %s", cam.name, exc)
            finally:
                self._note_frames(state, source)
            if not self.stop_event.is_set():
                # A file source ended or the stream gave up: reopen after a pause.
                self.stop_event.wait(cam.reconnect.initial_delay_s)
        state.state = "stopped"

    @staticmethod
    def _note_frames(state: CameraState, source: VideoSource) -> None:
        stats = source.stats
        state.state = stats.state
        state.dropped = stats.dropped_frames
        new = stats.frames_read - state.frames
        if new > 0:
            now = time.monotonic()
            state.fps_window.extend([now] * new)
            state.frames = stats.frames_read
            state.last_frame_at = now

    def _forwarder(self) -> None:
        from edge.client import AuthRefused, ClientError

        assert self.config.server is not None
        delay = 0.0
        while not self.stop_event.is_set():
            try:
                sent = self.forward_once()
                delay = 0.0
                if sent == 0:
                    self.stop_event.wait(self.config.server.upload_interval_s)
            except AuthRefused as exc:
                log.error("server refused the device token: %s (sightings stay queued)", exc)
                delay = self.config.server.retry_max_s
                self.stop_event.wait(delay)
            except ClientError as exc:
                delay = min(self.config.server.retry_max_s, max(1.0, delay * 2))
                log.warning("upload failed (%s); outbox holds them, retry in %.0f s", exc, delay)
                self.stop_event.wait(delay)

    def _gallery_loop(self) -> None:
        assert self.config.server is not None
        while not self.stop_event.is_set():
            self.sync_gallery_once()
            self.stop_event.wait(self.config.server.gallery_sync_s)

    def heartbeat_payload(self) -> Heartbeat:
        cams = {}
        for name, st in self.cameras.items():
            state = st.state if st.state in {"starting", "running", "reconnecting"} else "stopped"
            if state == "running" and time.monotonic() - st.last_frame_at > 30:
                state = "stalled"
            cams[name] = CameraStats(
                state=state,  # type: ignore[arg-type]
                fps=round(st.fps(), 2),
                frames=st.frames,
                dropped_frames=st.dropped,
            )
        return Heartbeat(
            version=_version(),
            model_id=self.model_id,
            uptime_s=round(time.monotonic() - self.started, 1),
            cameras=cams,
            outbox_depth=self.outbox.stats().depth,
        )

    def _heartbeat_loop(self) -> None:
        from edge.client import ClientError

        assert self.config.server is not None
        while not self.stop_event.is_set():
            try:
                self.client.heartbeat(self.heartbeat_payload())  # type: ignore[union-attr]
            except ClientError as exc:
                log.info("heartbeat failed: %s", exc)
            self.stop_event.wait(self.config.server.heartbeat_s)

    def start(self) -> None:
        def spawn(name: str, target: object, *args: object) -> None:
            t = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
            t.start()
            self._threads.append(t)

        if self.client is not None:
            self.sync_gallery_once()  # before the cameras, so residents match at once
            spawn("forwarder", self._forwarder)
            spawn("gallery-sync", self._gallery_loop)
            spawn("heartbeat", self._heartbeat_loop)
        for cam in self.config.cameras:
            spawn(f"camera-{cam.name}", self._camera_worker, cam)

    def stop(self, *, drain_s: float = 5.0) -> None:
        """Stop everything; then try to deliver what is queued for up to ``drain_s``."""
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=15.0)
        if self.client is not None and self.config.server is not None:
            from edge.client import ClientError

            deadline = time.monotonic() + drain_s
            try:
                while time.monotonic() < deadline and self.forward_once():
                    pass
            except ClientError as exc:
                log.warning("final drain stopped: %s", exc)
            self.client.close()  # type: ignore[attr-defined]
        stats = self.outbox.stats()
        log.info("stopped; %d sightings left in the outbox for next time", stats.depth)
        self.outbox.close()

    def run_forever(self) -> None:
        """Start, wait for SIGTERM/SIGINT, stop cleanly."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        log.info(
            "edge daemon %s running: %d camera(s), model %s",
            self.config.device.name,
            len(self.config.cameras),
            self.model_id,
        )
        while not self.stop_event.wait(1.0):
            if all(not t.is_alive() for t in self._threads if t.name.startswith("camera-")):
                log.error("every camera worker has ended; stopping")
                self.stop_event.set()
        self.stop()


def status_json(daemon: EdgeDaemon) -> str:
    """One-line JSON of the daemon's state (logged periodically, used by tests)."""
    hb = daemon.heartbeat_payload()
    out = hb.model_dump(mode="json")
    out["at"] = datetime.now(UTC).isoformat()
    out["gallery_templates"] = (
        0 if daemon.gallery is None else int(daemon.gallery.templates.shape[0])
    )
    return json.dumps(out)


def cli_run(args: argparse.Namespace) -> int:
    """``lintel-edge run --config FILE [--validate-config]``."""
    config = load_config(args.config)
    if args.validate_config:
        sys.stdout.write(
            f"{args.config}: OK ({len(config.cameras)} camera(s), "
            f"server {'none' if config.server is None else config.server.url})\n"
        )
        return 0
    if config.server is not None:
        config.token()  # fail now, not in a thread, when the token is missing
    EdgeDaemon(config).run_forever()
    return 0
