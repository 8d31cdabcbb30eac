"""``lintel-edge run``: the unattended edge daemon.

Threads, each owning its own state (nothing shared but the outbox, which
locks, and the gallery reference, which is swapped whole):

- one *camera worker* per camera: a :class:`~edge.pipeline.capture.VideoSource` (its
  reader thread fills a bounded queue and drops, counting, the oldest frame
  when analysis falls behind; it reopens a failed stream with backoff) feeding
  a :class:`~edge.pipeline.Pipeline`; every ended track becomes a sighting in
  the durable outbox. A camera that cannot be opened at all is retried with
  the same backoff, forever: an unattended box never gives up on a camera.
- the *forwarder*: drains the outbox to the server in batches; a retryable
  failure (server unreachable, 5xx) backs off, doubling up to a cap, and keeps
  everything queued; a sighting the server refuses as invalid goes to the
  outbox's dead table (isolated by halving the batch, so one bad sighting
  does not bury its neighbours).
- the *gallery sync*: asks for the site's gallery with its ETag (304 when
  unchanged), keeps the last one on disk so a reboot without network still
  matches residents, and replaces the local copy whole, so an occupant deleted
  on the server leaves no template on the box. A heartbeat ack announcing a
  newer gallery version wakes it at once.
- *adaptive templates* (:mod:`edge.adaptive`): a known track that matched
  with high confidence may become an extra local template of that occupant
  (``<data_dir>/adaptive.npz``, never uploaded); matching is over enrolled and
  adaptive templates; a synced gallery that drops an occupant drops theirs.
- the *heartbeat*: per-camera state, fps, frames, dropped frames, reconnects,
  outbox depth/dropped/dead, model and version.

The main thread is the *watchdog*: every tick it samples each live camera's
frame counter; a stream that stays open but delivers nothing for
``stall_timeout_s`` (plus a grace, FFmpeg's own read timeout usually fires
first) is closed and reopened. It also rewrites ``<data_dir>/status.json``.

Shutdown: SIGTERM/SIGINT -> cameras stop after their current frame, their live
tracks are flushed into the outbox, then the outbox is uploaded for up to
``server.drain_on_stop_s``; what is left stays on disk for the next start. A
second signal exits at once (the outbox is durable, nothing committed is lost).
When every camera has ended (video files without ``loop``), the daemon keeps
forwarding until the outbox is empty and exits 0.

Exactly-once, end to end: a sighting's id is derived from the device, the
camera, the track's start time and its frames, so the same track always has
the same id; the outbox stores it durably before anything is sent, deletes it
only after the server answered for it, and the server stores an id once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge.adaptive import FILE_NAME as ADAPTIVE_FILE
from edge.adaptive import AdaptiveGallery
from edge.client import AuthRefused, ClientError, GalleryModelMismatch, LintelClient, Rejected
from edge.daemon_config import CameraConfig, EdgeConfig, load_config
from edge.errors import CaptureError, LintelEdgeError
from edge.files import atomic_write
from edge.gallery import Gallery, Match, Template
from edge.outbox import Outbox, OutboxStats
from edge.pipeline.capture import Opener, VideoSource
from edge.pipeline.results import TrackResult
from edge.pipeline.seams import EngineLike
from edge.pipeline.sightings import track_to_sighting
from edge.pipeline.stream import Pipeline
from server.wire import CameraStats, Heartbeat, SightingIn, decode_embedding
from server.wire import Gallery as WireGallery

log = logging.getLogger(__name__)

WATCHDOG_GRACE_S = 5.0
"""Extra wait beyond ``stall_timeout_s`` before the watchdog reopens a stream:
FFmpeg's read timeout (set to ``stall_timeout_s``) should fire first, and
closing a capture under a reader blocked inside FFmpeg is the last resort."""

TICK_S = 0.2
FPS_WINDOW_S = 10.0


def _version() -> str:
    try:
        return version("lintel")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class DaemonEngine(EngineLike, Protocol):
    """What the daemon needs of :class:`edge.engine.FaceEngine` (a seam for tests)."""

    @property
    def threshold(self) -> float: ...


class GalleryCache:
    """The last gallery the server sent, on disk (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> WireGallery | None:
        """The cached gallery, or None when there is none or it is unreadable."""
        try:
            return WireGallery.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("cached gallery %s is unreadable; ignoring it", self.path)
            return None

    def save(self, gallery: WireGallery) -> None:
        """Replace the cached copy whole: an occupant deleted on the server leaves
        no template behind on the box."""
        atomic_write(self.path, gallery.model_dump_json().encode())


def to_local_gallery(wire: WireGallery, *, model_id: str, threshold: float) -> Gallery:
    """A server gallery as a matcher; identities are occupant ids as strings."""
    try:
        templates = [
            Template(
                identity=str(t.occupant_id),
                embedding=decode_embedding(t.embedding_b64),
                model_id=t.model_id or wire.model_id,
            )
            for t in wire.templates
        ]
    except ValueError as exc:
        raise LintelEdgeError(
            f"gallery version {wire.version} holds a bad template: {exc}"
        ) from exc
    return Gallery.from_templates(templates, model_id=model_id, threshold=threshold)


class _CurrentGallery:
    """The pipeline's view of the daemon's gallery: always the latest one.

    Pipelines live as long as a stream; reading the daemon's reference at each
    match means a synced gallery (or a deletion) takes effect on the next track.
    """

    def __init__(self, daemon: EdgeDaemon) -> None:
        self._daemon = daemon

    def match(self, embeddings: npt.NDArray[np.float32]) -> Sequence[Match]:
        # Enrolled + adaptive templates (without a gallery: every track unknown).
        return self._daemon.adaptive.match(embeddings)


@dataclass
class CameraRuntime:
    """One camera's live state; written by its worker, read by the watchdog/heartbeat."""

    name: str
    state: str = "starting"
    source: VideoSource | None = None
    source_stop: threading.Event | None = None
    ended: bool = False
    tracks: int = 0
    lost_tracks: int = 0
    stalls: int = 0
    watchdog_fired: bool = False
    opens: int = 0
    last_error: str | None = None
    logged_state: str = "starting"
    # Totals of the sources already closed (a source's counters start at 0).
    frames_base: int = 0
    dropped_base: int = 0
    reconnects_base: int = 0
    # Watchdog: the frame counter it last saw and since when it has not moved.
    wd_frames: int = -1
    wd_since: float = field(default_factory=time.monotonic)
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=256))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def totals(self) -> tuple[int, int, int]:
        """(frames read, frames dropped, reconnects) over every source of this camera."""
        with self.lock:
            src = self.source
            frames, dropped, reconnects = self.frames_base, self.dropped_base, self.reconnects_base
        if src is not None:
            frames += src.stats.frames_read
            dropped += src.stats.dropped_frames
            reconnects += src.stats.reconnects
        return frames, dropped, reconnects

    def fps(self) -> float:
        """Frames read per second over the last ~10 s (sampled by the watchdog tick)."""
        if len(self.samples) < 2:
            return 0.0
        t1, f1 = self.samples[-1]
        t0, f0 = next(((t, f) for t, f in self.samples if t1 - t <= FPS_WINDOW_S), (t1, f1))
        return (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0

    def current_state(self, stall_timeout_s: float) -> str:
        """starting / running / reconnecting / stalled / stopped (as the heartbeat says)."""
        with self.lock:
            src = self.source
        if src is None:
            return "stopped" if self.state in ("ended", "stopped") else self.state
        state = src.stats.state
        if self.watchdog_fired:  # being closed for delivering nothing
            return "stalled"
        if state == "running" and time.monotonic() - self.wd_since > stall_timeout_s:
            return "stalled"
        if state == "stopped":  # the worker is about to reopen it
            return "reconnecting"
        return str(state)


class EdgeDaemon:
    """Runs cameras, forwarder, gallery sync and heartbeat until stopped."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        engine: DaemonEngine | None = None,
        client: LintelClient | None = None,
        opener: Opener | None = None,
    ) -> None:
        """``engine``/``client``: injected in tests; built from the config otherwise.
        ``opener``: how captures are opened (tests fake a camera); OpenCV otherwise."""
        self.config = config
        self.stop_event = threading.Event()
        data = config.device.data_dir
        self.status_path = data / "status.json"
        try:
            data.mkdir(parents=True, exist_ok=True)
            self.outbox = Outbox(data / "outbox.db", max_bytes=config.outbox.max_mb * 1024 * 1024)
        except (OSError, sqlite3.Error) as exc:
            raise LintelEdgeError(f"device.data_dir {data} is not usable: {exc}") from exc
        self.gallery_cache = GalleryCache(data / "gallery.json")
        if engine is None:
            from edge.engine import FaceEngine

            engine = FaceEngine.load(config.model)
        self.engine: DaemonEngine = engine
        self.model_id: str = engine.model_id
        self.threshold: float = engine.threshold
        self.client = client
        if self.client is None and config.server is not None:
            self.client = LintelClient(
                config.server.url,
                config.token(),
                timeout=config.server.timeout_s,
                model_id=self.model_id,
            )
        self.gallery: Gallery | None = None
        """The synced (enrolled) gallery; :attr:`adaptive` matches it plus local templates."""
        self.adaptive = AdaptiveGallery(
            config.adapt, path=data / ADAPTIVE_FILE, model_id=self.model_id
        )
        self.gallery_version: int | None = None
        self.gallery_etag: str | None = None
        cached = self.gallery_cache.load()
        if cached is not None:
            # Offline start: residents keep matching on the last gallery we had.
            self._install_gallery(cached, source="cache")
        self.cameras = {c.name: CameraRuntime(c.name) for c in config.cameras}
        self.started = time.monotonic()
        self.last_upload_at: str | None = None
        self.last_upload_error: str | None = None
        self._batch_limit = config.server.batch_size if config.server is not None else 1
        self._gallery_wakeup = threading.Event()
        self._threads: list[threading.Thread] = []
        self._signalled: int | None = None
        self._stopped = False
        self._gallery_view = _CurrentGallery(self)
        self._opener = opener

    # -- stopping ------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask every thread to finish (cameras end their streams, flushing live tracks)."""
        self.stop_event.set()
        self._gallery_wakeup.set()
        for rt in self.cameras.values():
            with rt.lock:
                if rt.source_stop is not None:
                    rt.source_stop.set()

    # -- gallery -----------------------------------------------------------
    def _install_gallery(self, wire: WireGallery, *, source: str) -> bool:
        try:
            gallery = to_local_gallery(wire, model_id=self.model_id, threshold=self.threshold)
        except LintelEdgeError as exc:
            log.error("gallery version %s (%s) refused: %s", wire.version, source, exc)
            return False
        self.gallery = gallery  # one reference swap: readers see the old or the new
        # Deleted occupants' adaptive templates go with them (on disk too).
        self.adaptive.set_base(gallery)
        self.gallery_version = wire.version
        self.gallery_etag = wire.etag
        log.info(
            "gallery version %d from %s: %d templates", wire.version, source, len(wire.templates)
        )
        return True

    def sync_gallery_once(self) -> bool:
        """Ask the server for a newer gallery; True when one was installed."""
        if self.client is None:
            return False
        try:
            wire = self.client.fetch_gallery(self.gallery_etag)
        except GalleryModelMismatch as exc:
            # Not a network blip: every unknown sighting will be refused too.
            log.error("gallery refused: %s", exc)
            return False
        except ClientError as exc:
            log.warning("gallery sync failed (keeping the current one): %s", exc)
            return False
        if wire is None:
            log.debug("gallery unchanged (304)")
            return False
        if not self._install_gallery(wire, source="server"):
            return False
        # Saved only once usable, so the cache never holds a gallery we refused.
        self.gallery_cache.save(wire)
        return True

    # -- sightings ---------------------------------------------------------
    def sighting(self, camera: str, result: TrackResult, origin: datetime | None) -> SightingIn:
        """The wire sighting of one ended track.

        ``origin``: wall-clock time of a file's first frame (None for live
        sources, whose timestamps are Unix time). The id hashes the device,
        camera, absolute start (ms), and (in :func:`server.wire.sighting_id`,
        shared with replay) the track id and frames: unique across restarts
        (frame counters restart, the clock does not), yet one track always
        maps to one id, so a re-sent sighting is stored once.
        """
        start = result.started_at + (origin.timestamp() if origin is not None else 0.0)
        source = f"{camera}@{round(start * 1000)}"
        return track_to_sighting(
            result, device=self.config.device.name, source=source, camera=camera, origin=origin
        )

    def record(self, camera: str, result: TrackResult, *, origin: datetime | None = None) -> bool:
        """Queue one ended track durably (a known one as an occupant id only)."""
        rt = self.cameras[camera]
        try:
            queued = self.outbox.put(self.sighting(camera, result, origin))
        except (LintelEdgeError, ValueError, sqlite3.Error) as exc:
            # Disk full or a corrupt file: count it, the heartbeat shows it.
            rt.lost_tracks += 1
            log.error("camera %s: track %d not recorded: %s", camera, result.track_id, exc)
            return False
        rt.tracks += 1
        if result.identity is not None:
            try:
                self.adaptive.observe(result.identity, result.embedding, quality=result.quality)
            except (LintelEdgeError, ValueError) as exc:  # never worth losing a camera over
                log.warning("camera %s: adaptive template not kept: %s", camera, exc)
        if not queued:
            log.debug("camera %s: track %d already queued", camera, result.track_id)
        return queued

    def forward_once(self) -> int:
        """Upload one batch from the outbox; returns how many entries it settled.

        Raises :class:`~edge.client.ClientError` when nothing can be settled now
        (server unreachable, token refused, an unexpected 4xx): they stay queued.
        """
        assert self.client is not None and self.config.server is not None
        entries = self.outbox.peek(self._batch_limit)
        if not entries:
            return 0
        try:
            result = self.client.upload_sightings([e.sighting for e in entries])
        except Rejected as exc:
            if exc.status_code not in (400, 413, 422):
                raise  # a proxy's 404 or the like: not the sightings' fault, keep them
            if len(entries) > 1:
                # Too big, or one bad item sinks the envelope: halve until the
                # culprit is alone, so only it goes to the dead table.
                self._batch_limit = max(1, len(entries) // 2)
                log.warning(
                    "server refused a batch of %d (%s); retrying with %d",
                    len(entries),
                    exc,
                    self._batch_limit,
                )
                return 0
            self.outbox.bury({entries[0].id: f"{exc.status_code}: {exc.detail}"})
            log.error("sighting %s refused by the server: %s", entries[0].id, exc)
            return 1
        except ClientError:
            self.outbox.fail([e.id for e in entries])
            raise
        rejected = {str(err.id): err.error for err in result.errors if err.id is not None}
        for err in result.errors:
            if err.id is None and 0 <= err.index < len(entries):
                rejected[entries[err.index].id] = err.error
        if rejected:
            log.error("server refused %d sighting(s): %s", len(rejected), rejected)
        self.outbox.bury(rejected)
        self.outbox.ack([e.id for e in entries if e.id not in rejected])
        if result.duplicates:
            # Expected after a crash between upload and ack: the server had them.
            log.info("%d sighting(s) were already on the server", result.duplicates)
        self._batch_limit = min(self.config.server.batch_size, self._batch_limit * 2)
        self.last_upload_at = datetime.now(UTC).isoformat()
        self.last_upload_error = None
        return len(entries)

    def drain(self, deadline: float) -> bool:
        """Upload until the outbox is empty (True) or ``deadline`` / a failure (False)."""
        if self.client is None:
            return self.outbox.stats().depth == 0
        while time.monotonic() < deadline:
            if self.outbox.stats().depth == 0:
                return True
            try:
                self.forward_once()
            except ClientError as exc:
                log.warning("upload stopped: %s", exc)
                return False
        return self.outbox.stats().depth == 0

    # -- threads -----------------------------------------------------------
    def _camera_worker(self, cam: CameraConfig) -> None:
        rt = self.cameras[cam.name]
        failures = 0
        while not self.stop_event.is_set():
            delivered = False
            try:
                delivered = self._run_source(cam, rt)
            except CaptureError as exc:
                rt.last_error = str(exc)
                log.warning("camera %s: %s", cam.name, exc)
            except Exception as exc:  # a months-long daemon restarts the camera instead
                rt.last_error = repr(exc)
                log.exception("camera %s: unexpected error; restarting it", cam.name)
            if self.stop_event.is_set() or rt.ended:
                break
            failures = 0 if delivered else failures + 1
            delay = cam.reconnect.delay(max(1, failures))
            rt.state = "reconnecting"
            log.info("camera %s: reopening in %.1f s", cam.name, delay)
            self.stop_event.wait(delay)
        rt.state = "ended" if rt.ended else "stopped"
        log.info("camera %s: %s (%d tracks recorded)", cam.name, rt.state, rt.tracks)

    def _run_source(self, cam: CameraConfig, rt: CameraRuntime) -> bool:
        """Open the camera once and analyse it until it ends; True if it gave frames."""
        stop = threading.Event()
        source = VideoSource(
            cam.source,
            reconnect=cam.reconnect,
            queue_size=cam.queue_size,
            stop_event=stop,
            open_timeout_s=cam.open_timeout_s,
            read_timeout_s=cam.stall_timeout_s,
            opener=self._opener,
        )
        with rt.lock:
            rt.source, rt.source_stop = source, stop
            rt.watchdog_fired = False
            rt.opens += 1
        if self.stop_event.is_set():  # a stop raced the registration above
            stop.set()
        rt.wd_since = time.monotonic()
        origin = None if source.is_live else (cam.start_at or datetime.now(UTC))
        pipeline = Pipeline(self.engine, self._gallery_view, cam.pipeline or self.config.pipeline)
        try:
            for result in pipeline.run(source):
                self.record(cam.name, result, origin=origin)
        except CaptureError:
            # The stream gave up mid-way: the tracks it had are still people
            # who walked in; record them before reopening.
            for result in pipeline.flush():
                self.record(cam.name, result, origin=origin)
            raise
        finally:
            with rt.lock:
                rt.frames_base += source.stats.frames_read
                rt.dropped_base += source.stats.dropped_frames
                rt.reconnects_base += source.stats.reconnects
                rt.source, rt.source_stop = None, None
        stopped_early = rt.watchdog_fired or self.stop_event.is_set()
        if not source.is_live and not cam.loop and not stopped_early:
            rt.ended = True
            log.info("camera %s: end of %s", cam.name, source.spec.display)
        return source.stats.frames_read > 0

    def _forwarder(self) -> None:
        assert self.config.server is not None
        server = self.config.server
        delay = 0.0
        while not self.stop_event.is_set():
            try:
                settled = self.forward_once()
                delay = 0.0
                if settled == 0 and self.outbox.stats().depth == 0:
                    self.stop_event.wait(server.upload_interval_s)
                elif settled == 0:
                    self.stop_event.wait(0.05)  # a batch was split; go again
                continue
            except AuthRefused as exc:
                self.last_upload_error = str(exc)
                log.error("server refused the device token: %s (sightings stay queued)", exc)
                delay = server.retry_max_s
            except ClientError as exc:
                self.last_upload_error = str(exc)
                delay = min(server.retry_max_s, max(1.0, delay * 2))
                depth = self.outbox.stats().depth
                log.warning(
                    "upload failed (%s); the outbox holds %d, retry in %.0f s", exc, depth, delay
                )
            except Exception as exc:
                self.last_upload_error = repr(exc)
                delay = min(server.retry_max_s, max(1.0, delay * 2))
                log.exception("forwarder: unexpected error; retry in %.0f s", delay)
            self.stop_event.wait(delay)

    def _gallery_loop(self) -> None:
        assert self.config.server is not None
        while not self.stop_event.is_set():
            self._gallery_wakeup.wait(self.config.server.gallery_sync_s)
            self._gallery_wakeup.clear()
            if self.stop_event.is_set():
                break
            try:
                self.sync_gallery_once()
            except Exception:
                log.exception("gallery sync: unexpected error (keeping the current gallery)")

    def heartbeat_payload(self) -> Heartbeat:
        """Per-camera state and counters, outbox depth/drops, model and version."""
        cams = {}
        for cam in self.config.cameras:
            rt = self.cameras[cam.name]
            frames, dropped, reconnects = rt.totals()
            cams[cam.name] = CameraStats(
                state=rt.current_state(cam.stall_timeout_s),  # type: ignore[arg-type]
                fps=round(rt.fps(), 2),
                frames=frames,
                dropped_frames=dropped,
                reconnects=reconnects,
            )
        stats = self.outbox.stats()
        return Heartbeat(
            version=_version(),
            model_id=self.model_id,
            uptime_s=round(time.monotonic() - self.started, 1),
            cameras=cams,
            outbox_depth=stats.depth,
            outbox_dropped=stats.dropped,
            outbox_dead=stats.dead,
        )

    def _heartbeat_loop(self) -> None:
        assert self.config.server is not None and self.client is not None
        while not self.stop_event.is_set():
            try:
                ack = self.client.heartbeat(self.heartbeat_payload())
                if self.gallery_version is None or ack.gallery_version != self.gallery_version:
                    self._gallery_wakeup.set()  # the server has a newer gallery: fetch now
            except ClientError as exc:
                log.info("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat: unexpected error")
            self.stop_event.wait(self.config.server.heartbeat_s)

    # -- watchdog and status -------------------------------------------------
    def tick(self) -> None:
        """Watchdog pass: sample frame counters, reopen streams that stopped delivering."""
        now = time.monotonic()
        for cam in self.config.cameras:
            rt = self.cameras[cam.name]
            frames, _dropped, _rec = rt.totals()
            rt.samples.append((now, frames))
            state = rt.current_state(cam.stall_timeout_s)
            if state != rt.logged_state:
                # One line per transition: the operator's timeline of a camera.
                log.info("camera %s: %s -> %s", cam.name, rt.logged_state, state)
                rt.logged_state = state
            with rt.lock:
                src, stop = rt.source, rt.source_stop
            if src is None or stop is None or not src.is_live or rt.watchdog_fired:
                continue  # nothing to watch, or already reopening this one
            if frames != rt.wd_frames or src.stats.state != "running":
                rt.wd_frames, rt.wd_since = frames, now
                continue
            if now - rt.wd_since > cam.stall_timeout_s + WATCHDOG_GRACE_S:
                rt.stalls += 1
                rt.watchdog_fired = True
                log.warning(
                    "camera %s: stream open but no frame for %.0f s; reopening it",
                    cam.name,
                    now - rt.wd_since,
                )
                stop.set()
                rt.wd_since = now

    def status(self) -> dict[str, Any]:
        """Everything an operator (or a test) wants to know, as JSON-able data."""
        hb = self.heartbeat_payload().model_dump(mode="json")
        for name, cam in hb["cameras"].items():
            rt = self.cameras[name]
            cam.update(
                tracks=rt.tracks,
                lost_tracks=rt.lost_tracks,
                stalls=rt.stalls,
                opens=rt.opens,
                ended=rt.ended,
                last_error=rt.last_error,
            )
        ob: OutboxStats = self.outbox.stats()
        return {
            "device": self.config.device.name,
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
                "version": self.gallery_version,
                "templates": 0 if self.gallery is None else int(self.gallery.templates.shape[0]),
                "adaptive_templates": self.adaptive.count(),
            },
            "server": {
                "url": None if self.config.server is None else self.config.server.url,
                "last_upload_at": self.last_upload_at,
                "last_error": self.last_upload_error,
            },
        }

    def write_status(self) -> None:
        """Rewrite ``<data_dir>/status.json`` atomically (never fatal)."""
        try:
            atomic_write(self.status_path, json.dumps(self.status(), indent=1).encode())
        except (OSError, sqlite3.Error) as exc:
            log.warning("cannot write %s: %s", self.status_path, exc)

    # -- life cycle ----------------------------------------------------------
    def start(self) -> None:
        """Start every thread (the first gallery sync runs before the cameras)."""

        def spawn(name: str, target: Any, *args: object) -> None:
            t = threading.Thread(target=target, args=args, name=name, daemon=True)
            t.start()
            self._threads.append(t)

        if self.client is not None:
            if self.gallery is None:
                # First start: wait (up to the HTTP timeout) for a gallery so
                # residents match from the first track. With a cached one the
                # cameras start at once and the sync thread refreshes it.
                self.sync_gallery_once()
            else:
                self._gallery_wakeup.set()
            spawn("forwarder", self._forwarder)
            spawn("gallery-sync", self._gallery_loop)
            spawn("heartbeat", self._heartbeat_loop)
        for cam in self.config.cameras:
            spawn(f"camera-{cam.name}", self._camera_worker, cam)
        self.write_status()

    def _camera_threads(self) -> list[threading.Thread]:
        return [t for t in self._threads if t.name.startswith("camera-")]

    def stop(self, *, drain_s: float | None = None) -> int:
        """Stop everything, then upload what is queued for up to ``drain_s``.

        Returns the number of sightings left in the outbox (kept for next time).
        """
        if self._stopped:
            return 0
        self._stopped = True
        self.request_stop()
        # Cameras first: their last tracks are flushed into the outbox.
        for t in self._camera_threads():
            t.join(timeout=20.0)
            if t.is_alive():
                log.error("%s did not stop in time; its live tracks are lost", t.name)
        # The others only wait or talk to the server; one stuck in a request to
        # a dead server is not worth waiting its full timeout for.
        deadline = time.monotonic() + 2.0
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        if drain_s is None:
            drain_s = self.config.server.drain_on_stop_s if self.config.server else 0.0
        forwarder_busy = any(t.name == "forwarder" and t.is_alive() for t in self._threads)
        if forwarder_busy:
            log.warning("an upload is still waiting for the server; not draining further")
        elif self.client is not None:
            self.drain(time.monotonic() + drain_s)
        self.write_status()
        if self.client is not None:
            self.client.close()
        left = self.outbox.stats().depth
        log.info("stopped; %d sighting(s) left in the outbox for next time", left)
        self.outbox.close()
        return left

    def run_forever(self) -> int:
        """Start, run the watchdog until SIGTERM/SIGINT (or every camera ended), stop."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._signalled is not None:
                # Second signal: leave now. The outbox is durable; only live
                # tracks and the final upload are skipped.
                os._exit(128 + signum)
            self._signalled = signum  # the main loop sees it within one tick

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():  # an embedding program (the demo) goes on
                signal.signal(sig, handler)

    def _run(self) -> int:
        self.start()
        log.info(
            "edge daemon %s running: %d camera(s), model %s, version %s",
            self.config.device.name,
            len(self.config.cameras),
            self.model_id,
            _version(),
        )
        next_status = 0.0
        all_ended_logged = False
        while self._signalled is None:
            self.tick()
            now = time.monotonic()
            if now >= next_status:
                self.write_status()
                next_status = now + self.config.device.status_interval_s
            if not any(t.is_alive() for t in self._camera_threads()):
                if not all_ended_logged:
                    log.info("every camera has ended; forwarding what is queued, then exiting")
                    all_ended_logged = True
                if self.client is None or self.outbox.stats().depth == 0:
                    break
            time.sleep(TICK_S)
        if self._signalled is not None:
            log.info("signal %d: stopping", self._signalled)
        self.stop()
        return 0


def cli_run(args: argparse.Namespace) -> int:
    """``lintel-edge run --config FILE [--validate-config]``."""
    config = load_config(args.config)
    if config.server is not None:
        config.token()  # a missing token fails here, not later in a thread
    if args.validate_config:
        sys.stdout.write(
            f"{args.config}: OK ({len(config.cameras)} camera(s), "
            f"server {'none (offline)' if config.server is None else config.server.url})\n"
        )
        return 0
    verbose = getattr(args, "verbose", 0)
    if verbose == 0:
        # A daemon's log is its operator's only window: INFO by default.
        logging.getLogger().setLevel(logging.INFO)
    if verbose < 2:
        # One line per upload, heartbeat and gallery poll drowns the rest.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    return EdgeDaemon(config).run_forever()
