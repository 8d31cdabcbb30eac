"""The daemon's *camera workers* and the watchdog that watches them.

One worker thread per camera: a :class:`~edge.pipeline.capture.VideoSource`
(its reader thread fills a bounded queue and drops, counting, the oldest frame
when analysis falls behind; it reopens a failed stream with backoff) feeding a
:class:`~edge.pipeline.stream.Pipeline`; every ended track becomes a sighting
in the durable outbox. A camera that cannot be opened at all is retried with
the same backoff, forever: an unattended box never gives up on a camera.

The watchdog (:meth:`Cameras.tick`, on the main thread) samples each live
camera's frame counter; a stream that stays open but delivers nothing for
``stall_timeout_s`` (plus a grace, FFmpeg's own read timeout usually fires
first) is closed and reopened.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edge.adaptive import AdaptiveGallery
from edge.daemon.config import CameraConfig
from edge.errors import CaptureError
from edge.face.errors import LintelEdgeError
from edge.outbox import Outbox
from edge.pipeline.capture import Opener, VideoSource
from edge.pipeline.config import PipelineConfig
from edge.pipeline.regions import NormRect
from edge.pipeline.results import TrackResult
from edge.pipeline.seams import EngineLike, GalleryLike
from edge.pipeline.sightings import track_to_sighting
from edge.pipeline.stream import Pipeline
from edge.wire import SightingIn

log = logging.getLogger(__name__)

WATCHDOG_GRACE_S = 5.0
"""Extra wait beyond ``stall_timeout_s`` before the watchdog reopens a stream:
FFmpeg's read timeout (set to ``stall_timeout_s``) should fire first, and
closing a capture under a reader blocked inside FFmpeg is the last resort."""

FPS_WINDOW_S = 10.0


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
    # -- settings applied while running (issue 17 D; see edge.daemon.settings_sync)
    enabled: bool = True
    analyse_fps: float | None = None  # None: the config's
    roi: NormRect | None = None
    pipeline: Pipeline | None = None
    analysed_base: int = 0
    last_track_at: datetime | None = None  # when a track of this camera was last recorded
    analysed_samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=256))
    wake: threading.Event = field(default_factory=threading.Event)

    def analysed(self) -> int:
        """Frames analysed over every source of this camera."""
        with self.lock:
            pipe, base = self.pipeline, self.analysed_base
        return base + (pipe.stats.frames_analysed if pipe is not None else 0)

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
        return _rate(self.samples)

    def analysed_fps(self) -> float:
        """Frames analysed per second over the last ~10 s."""
        return _rate(self.analysed_samples)

    def current_state(self, stall_timeout_s: float) -> str:
        """starting / running / reconnecting / stalled / stopped (as the heartbeat says)."""
        with self.lock:
            src = self.source
        if src is None:
            return "stopped" if self.state in ("ended", "stopped", "disabled") else self.state
        state = src.stats.state
        if self.watchdog_fired:  # being closed for delivering nothing
            return "stalled"
        if state == "running" and time.monotonic() - self.wd_since > stall_timeout_s:
            return "stalled"
        if state == "stopped":  # the worker is about to reopen it
            return "reconnecting"
        return str(state)


def _rate(samples: deque[tuple[float, int]]) -> float:
    if len(samples) < 2:
        return 0.0
    t1, f1 = samples[-1]
    t0, f0 = next(((t, f) for t, f in samples if t1 - t <= FPS_WINDOW_S), (t1, f1))
    return (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0


class Cameras:
    """Every camera's runtime, its worker loop, the sighting it records, and the watchdog."""

    def __init__(
        self,
        cameras: Sequence[CameraConfig],
        *,
        device: str,
        engine: EngineLike,
        gallery: GalleryLike,
        adaptive: AdaptiveGallery,
        outbox: Outbox,
        pipeline: PipelineConfig,
        stop_event: threading.Event,
        opener: Opener | None = None,
    ) -> None:
        """``gallery``: what the pipelines match against (always the latest synced one);
        ``opener``: how captures are opened (tests fake a camera); OpenCV otherwise."""
        self.configs = list(cameras)
        self.runtimes = {
            c.name: CameraRuntime(c.name, enabled=c.enabled, roi=c.roi) for c in cameras
        }
        self.device = device
        self.engine = engine
        self.gallery = gallery
        self.adaptive = adaptive
        self.outbox = outbox
        self.pipeline = pipeline
        self.stop_event = stop_event
        self._opener = opener

    def request_stop(self) -> None:
        """Make every open stream end after its current frame (live tracks are flushed)."""
        for rt in self.runtimes.values():
            with rt.lock:
                if rt.source_stop is not None:
                    rt.source_stop.set()
            rt.wake.set()

    def base_config(self, name: str) -> PipelineConfig:
        """The camera's pipeline settings from edge.yaml (its own, else the top-level)."""
        cam = next(c for c in self.configs if c.name == name)
        return cam.pipeline or self.pipeline

    def apply(
        self, name: str, *, enabled: bool, analyse_fps: float | None, roi: NormRect | None
    ) -> None:
        """Apply settings to a camera while it runs (issue 17 D).

        fps and region go to the running pipeline before its next frame (live
        tracks go on); switching a camera off ends its stream the way a stop does
        (its live tracks are flushed into the outbox), switching it on wakes it.
        """
        rt = self.runtimes[name]
        fps = analyse_fps if analyse_fps is not None else self.base_config(name).analyse_fps
        with rt.lock:
            changed = (rt.enabled, rt.analyse_fps, rt.roi) != (enabled, analyse_fps, roi)
            rt.enabled, rt.analyse_fps, rt.roi = enabled, analyse_fps, roi
            pipeline, stop = rt.pipeline, rt.source_stop
        if not changed:
            return
        log.info(
            "camera %s: settings applied: %s, analyse %.2g fps, region %s",
            name,
            "on" if enabled else "off",
            fps,
            "all" if roi is None else roi,
        )
        if pipeline is not None:
            pipeline.retune(analyse_fps=fps, roi=roi)
        if not enabled and stop is not None:
            stop.set()
        rt.wake.set()

    # -- sightings ---------------------------------------------------------
    def sighting(self, camera: str, result: TrackResult, origin: datetime | None) -> SightingIn:
        """The wire sighting of one ended track.

        ``origin``: wall-clock time of a file's first frame (None for live
        sources, whose timestamps are Unix time). The id hashes the device,
        camera, absolute start (ms), and (in :func:`edge.wire.sighting_id`,
        shared with replay) the track id and frames: unique across restarts
        (frame counters restart, the clock does not), yet one track always
        maps to one id, so a re-sent sighting is stored once.
        """
        start = result.started_at + (origin.timestamp() if origin is not None else 0.0)
        source = f"{camera}@{round(start * 1000)}"
        return track_to_sighting(
            result, device=self.device, source=source, camera=camera, origin=origin
        )

    def record(self, camera: str, result: TrackResult, *, origin: datetime | None = None) -> bool:
        """Queue one ended track durably (a known one as an occupant id only)."""
        rt = self.runtimes[camera]
        try:
            queued = self.outbox.put(self.sighting(camera, result, origin))
        except (LintelEdgeError, ValueError, sqlite3.Error) as exc:
            # Disk full or a corrupt file: count it, the heartbeat shows it.
            rt.lost_tracks += 1
            log.error("camera %s: track %d not recorded: %s", camera, result.track_id, exc)
            return False
        rt.tracks += 1
        rt.last_track_at = datetime.now(UTC)
        if result.identity is not None:
            try:
                self.adaptive.observe(result.identity, result.embedding, quality=result.quality)
            except (LintelEdgeError, ValueError) as exc:  # never worth losing a camera over
                log.warning("camera %s: adaptive template not kept: %s", camera, exc)
        if not queued:
            log.debug("camera %s: track %d already queued", camera, result.track_id)
        return queued

    # -- workers -----------------------------------------------------------
    def worker(self, cam: CameraConfig) -> None:
        """One camera's thread: open, analyse, reopen with backoff, until stopped or ended."""
        rt = self.runtimes[cam.name]
        failures = 0
        while not self.stop_event.is_set():
            if not rt.enabled:
                if rt.state != "disabled":
                    log.info("camera %s: switched off", cam.name)
                rt.state = "disabled"
                rt.wake.wait(1.0)
                rt.wake.clear()
                continue
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
            if not rt.enabled:  # switched off while running: no reconnect wait
                continue
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
        config = cam.pipeline or self.pipeline
        with rt.lock:  # the settings as they are now; later changes go through retune
            if rt.analyse_fps is not None:
                config = config.model_copy(update={"analyse_fps": rt.analyse_fps})
            pipeline = Pipeline(self.engine, self.gallery, config, roi=rt.roi)
            rt.pipeline = pipeline
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
                rt.analysed_base += pipeline.stats.frames_analysed
                rt.source, rt.source_stop, rt.pipeline = None, None, None
        stopped_early = rt.watchdog_fired or self.stop_event.is_set() or not rt.enabled
        if not source.is_live and not cam.loop and not stopped_early:
            rt.ended = True
            log.info("camera %s: end of %s", cam.name, source.spec.display)
        return source.stats.frames_read > 0

    # -- watchdog ----------------------------------------------------------
    def tick(self) -> None:
        """Watchdog pass: sample frame counters, reopen streams that stopped delivering."""
        now = time.monotonic()
        for cam in self.configs:
            rt = self.runtimes[cam.name]
            frames, _dropped, _rec = rt.totals()
            rt.samples.append((now, frames))
            rt.analysed_samples.append((now, rt.analysed()))
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
