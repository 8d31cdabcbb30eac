"""The edge stream pipeline: frames in, one :class:`TrackResult` per face track out.

capture (grab every frame, retrieve every Nth) -> motion gate (skip the
detector on an idle scene) -> detector -> quality gate -> tracker -> when a
track ends: embed its best k aligned faces in one batch -> quality-weighted
fusion -> gallery match -> :class:`TrackResult`.

Cost model (why it is cheap): an idle entrance costs decode + a 160 px
grayscale difference per analysed frame; the detector runs only when
something moves, or while a track is alive (every analysed frame while
there is motion, once a second when nothing moves, so a poster's face cannot
keep it busy); the recogniser runs once per track (one batch of <= k crops),
never per frame. Faces that fail the quality gate still
feed the tracker (so a person is one track from far away to close up) but are
never embedded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from edge.capture import Frame, ReconnectPolicy, VideoSource
from edge.motion import MotionConfig, MotionGate
from edge.tracker import FaceSample, IoUTracker, Track, TrackerConfig
from edge.types import BBox, Detection, Embedding, FaceQuality

log = logging.getLogger(__name__)


class EngineLike(Protocol):
    """The slice of :class:`edge.engine.FaceEngine` the pipeline uses (a seam for fakes)."""

    @property
    def model_id(self) -> str: ...

    def detect(
        self, image_bgr: npt.NDArray[np.uint8], *, det_size: int | None = None
    ) -> list[Detection]: ...

    def quality(
        self,
        image_bgr: npt.NDArray[np.uint8],
        det: Detection,
        *,
        aligned: npt.NDArray[np.uint8] | None = None,
    ) -> FaceQuality: ...

    def align(self, image_bgr: npt.NDArray[np.uint8], det: Detection) -> npt.NDArray[np.uint8]: ...

    def embed_aligned(self, crops: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]: ...


class MatchLike(Protocol):
    """One gallery answer: ``identity`` is None below the threshold."""

    @property
    def identity(self) -> str | None: ...

    @property
    def best(self) -> str | None: ...

    @property
    def similarity(self) -> float: ...


class GalleryLike(Protocol):
    """The slice of :class:`edge.gallery.Gallery` the pipeline uses."""

    def match(self, embeddings: npt.NDArray[np.float32]) -> Sequence[MatchLike]: ...


class PipelineConfig(BaseModel):
    """Stream pipeline settings; every default is explained in its description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    analyse_fps: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="Frames analysed per second of video (every Nth frame is retrieved, "
        "N = round(source fps / analyse_fps)). A walk-in lasts 1-3 s, so 5/s still sees "
        "every face 5-15 times.",
    )
    det_size: int | None = Field(
        default=640,
        ge=128,
        le=1920,
        description="Detector input size (the frame is letterboxed into it); None uses the "
        "engine's configured size.",
    )
    still_detect_every: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="While tracks are alive but nothing moves, detect on every Nth analysed "
        "frame only (5 = once a second at 5 fps). A motionless face (someone waiting, a "
        "poster) then costs 1/N of the detector; tracks still end after "
        "tracker.max_misses detector calls without a match.",
    )
    motion: MotionConfig = Field(default_factory=MotionConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    context_scale: float = Field(
        default=2.0,
        ge=1.0,
        le=4.0,
        description="Thumbnail side in face-box sizes.",
    )
    crop_max_px: int = Field(
        default=160,
        ge=64,
        le=512,
        description="Longest side of the thumbnail JPEG.",
    )
    jpeg_quality: int = Field(default=85, ge=30, le=100, description="Thumbnail JPEG quality.")


@dataclass(frozen=True, slots=True)
class TrackResult:
    """One ended face track, matched (or not) against the gallery."""

    track_id: int
    start_frame: int
    end_frame: int
    started_at: float
    """Seconds: from the start of a file, or Unix time for live sources."""
    ended_at: float
    identity: str | None
    """Gallery identity at or above the threshold, else None (unknown)."""
    best_candidate: str | None
    """Closest gallery identity even when below the threshold (for review)."""
    similarity: float
    """Cosine similarity of the fused embedding to ``best_candidate`` (0 without gallery)."""
    quality: float
    """Best quality score of the track's faces, in [0, 1]."""
    embedding: Embedding
    """Quality-weighted mean of the best k embeddings, re-normalised."""
    faces_used: int
    hits: int
    model_id: str
    bbox: BBox
    """Box of the best face, in frame pixels (where in the view the person was)."""
    best_frame: int
    """Frame index of the best face (``bbox`` is its box)."""
    crop_jpeg: bytes | None = None
    """Thumbnail of the best face; only for unknowns (known faces never leave the box)."""

    @property
    def known(self) -> bool:
        return self.identity is not None


@dataclass(slots=True)
class PipelineStats:
    """Counters of one pipeline run (``cpu_s`` is process CPU time, all threads)."""

    frames_read: int = 0
    frames_analysed: int = 0
    dropped_frames: int = 0
    motion_frames: int = 0
    detector_calls: int = 0
    detections: int = 0
    usable_faces: int = 0
    tracks_reported: int = 0
    tracks_too_short: int = 0
    tracks_without_usable_face: int = 0
    embed_calls: int = 0
    faces_embedded: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    fps: float = 0.0
    sample_every: int = 1
    reconnects: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def video_s(self) -> float:
        """Seconds of video read (frames / fps)."""
        return self.frames_read / self.fps if self.fps > 0 else 0.0


def sample_every_for(fps: float, analyse_fps: float) -> int:
    """Every how many source frames one is analysed (>= 1)."""
    return max(1, round(fps / analyse_fps)) if fps > 0 else 1


def fuse(embeddings: npt.NDArray[np.float32], weights: Sequence[float]) -> Embedding:
    """Quality-weighted mean of L2-normalised rows, re-normalised to unit length."""
    w = np.clip(np.asarray(weights, dtype=np.float32), 1e-3, None)
    mean = (embeddings.astype(np.float32) * w[:, None]).sum(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0.0:
        return embeddings[0].astype(np.float32)
    return (mean / norm).astype(np.float32)


class Pipeline:
    """Consumes frames; yields a :class:`TrackResult` whenever a track ends.

    ``gallery`` may be None: then every track is unknown (similarity 0).
    Not thread-safe: one pipeline per camera, fed by one thread.
    """

    def __init__(
        self,
        engine: EngineLike,
        gallery: GalleryLike | None = None,
        config: PipelineConfig | None = None,
    ) -> None:
        self.engine = engine
        self.gallery = gallery
        self.config = config or PipelineConfig()
        self.motion = MotionGate(self.config.motion)
        self.tracker = IoUTracker(self.config.tracker)
        self.stats = PipelineStats()
        self._still = 0  # analysed frames without motion while tracks are alive

    # -- per frame ---------------------------------------------------------
    def process(self, frame: Frame) -> list[TrackResult]:
        """Analyse one (sampled) frame; returns the tracks that ended with it."""
        self.stats.frames_analysed += 1
        moved = self.motion.update(frame.image)
        if moved:
            self.stats.motion_frames += 1
        if not moved:
            if not self.tracker.active:
                return []  # idle scene, nobody being tracked: the detector stays off
            # Tracks alive but nothing moves: a person standing still, or a face on a
            # poster. Check on them only every ``still_detect_every`` analysed frames,
            # so a static face cannot keep the detector running on every frame.
            self._still += 1
            if self._still % self.config.still_detect_every:
                return []
        else:
            self._still = 0
        engine = self.engine
        detections = engine.detect(frame.image, det_size=self.config.det_size)
        self.stats.detector_calls += 1
        self.stats.detections += len(detections)
        tracks, ended = self.tracker.update(
            [d.bbox for d in detections], frame_index=frame.index, timestamp=frame.timestamp
        )
        k = self.config.tracker.best_k
        for det, track in zip(detections, tracks, strict=True):
            # Align once: the quality gate measures sharpness on the aligned crop,
            # and the same crop is what the recogniser will see.
            aligned = engine.align(frame.image, det)
            q = engine.quality(frame.image, det, aligned=aligned)
            if not q.usable:
                continue  # tracked, never embedded
            self.stats.usable_faces += 1
            if len(track.best) >= k and q.score <= track.best[-1].quality.score:
                continue  # not among the best k: skip the crops
            track.offer(
                FaceSample(
                    frame_index=frame.index,
                    timestamp=frame.timestamp,
                    detection=det,
                    quality=q,
                    aligned=aligned,
                    context=self._context_crop(frame.image, det),
                ),
                k,
            )
        return self._finish_all(ended)

    def flush(self) -> list[TrackResult]:
        """End every live track (end of stream) and return their results."""
        return self._finish_all(self.tracker.flush())

    # -- whole streams -----------------------------------------------------
    def run(
        self,
        source: VideoSource | str | int | Path,
        *,
        reconnect: ReconnectPolicy | None = None,
    ) -> Iterator[TrackResult]:
        """Open ``source`` (unless given open), analyse it and yield results as tracks end.

        Raises :class:`~edge.errors.CaptureError` for a source that cannot be
        opened or read. ``stats`` is up to date after every analysed frame.
        """
        src = (
            source if isinstance(source, VideoSource) else VideoSource(source, reconnect=reconnect)
        )
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            src.open()
            self.stats.fps = src.fps
            self.stats.sample_every = sample_every_for(src.fps, self.config.analyse_fps)
            for frame in src.frames(self.stats.sample_every):
                results = self.process(frame)
                self._sync_stats(src, cpu0, wall0)  # ~1 us: a daemon may read stats any time
                yield from results
            results = self.flush()
            self._sync_stats(src, cpu0, wall0)
            yield from results
        finally:
            src.close()
            self._sync_stats(src, cpu0, wall0)

    def run_all(self, frames: Iterable[Frame]) -> list[TrackResult]:
        """Process an iterable of frames and flush (for tests and generated video)."""
        out: list[TrackResult] = []
        for frame in frames:
            out.extend(self.process(frame))
        out.extend(self.flush())
        return out

    def _sync_stats(self, src: VideoSource, cpu0: float, wall0: float) -> None:
        self.stats.frames_read = src.stats.frames_read
        self.stats.dropped_frames = src.stats.dropped_frames
        self.stats.reconnects = src.stats.reconnects
        self.stats.cpu_s = time.process_time() - cpu0
        self.stats.wall_s = time.perf_counter() - wall0

    # -- track end ---------------------------------------------------------
    def _finish_all(self, ended: Sequence[Track]) -> list[TrackResult]:
        out = []
        for track in ended:
            result = self._finish(track)
            if result is not None:
                out.append(result)
        return out

    def _finish(self, track: Track) -> TrackResult | None:
        if track.hits < self.config.tracker.min_hits:
            self.stats.tracks_too_short += 1
            return None
        if not track.best:
            self.stats.tracks_without_usable_face += 1
            log.debug("track %d ended without a usable face", track.track_id)
            return None
        # One recogniser call for the track's k crops (batched, not per face).
        embeddings = self.engine.embed_aligned([s.aligned for s in track.best])
        self.stats.embed_calls += 1
        self.stats.faces_embedded += len(track.best)
        fused = fuse(embeddings, [s.quality.score for s in track.best])
        identity: str | None = None
        candidate: str | None = None
        similarity = 0.0
        if self.gallery is not None:
            match = self.gallery.match(fused[None, :])[0]
            identity, candidate, similarity = match.identity, match.best, float(match.similarity)
        crop = None
        if identity is None and track.best[0].context is not None:
            crop = self._jpeg(track.best[0].context)
        self.stats.tracks_reported += 1
        return TrackResult(
            track_id=track.track_id,
            start_frame=track.start_frame,
            end_frame=track.end_frame,
            started_at=track.started_at,
            ended_at=track.ended_at,
            identity=identity,
            best_candidate=candidate,
            similarity=similarity,
            quality=track.best_quality,
            embedding=fused,
            faces_used=len(track.best),
            hits=track.hits,
            model_id=self.engine.model_id,
            bbox=track.best[0].detection.bbox,
            best_frame=track.best[0].frame_index,
            crop_jpeg=crop,
        )

    def _context_crop(self, image: npt.NDArray[np.uint8], det: Detection) -> npt.NDArray[np.uint8]:
        """A square crop around the face, ``context_scale`` box sizes wide, downsized now
        so a track holds a few KB per face rather than a reference to the frame."""
        b = det.bbox
        side = max(b.width, b.height) * self.config.context_scale
        cx, cy = (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2
        h, w = image.shape[:2]
        x1, y1 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
        x2, y2 = min(w, int(cx + side / 2)), min(h, int(cy + side / 2))
        crop = image[y1:y2, x1:x2]
        if crop.size == 0:
            crop = image[:1, :1]
        longest = max(crop.shape[:2])
        if longest > self.config.crop_max_px:
            scale = self.config.crop_max_px / longest
            size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
            return cv2.resize(crop, size, interpolation=cv2.INTER_AREA)  # type: ignore[return-value]
        return crop.copy()

    def _jpeg(self, image: npt.NDArray[np.uint8]) -> bytes | None:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        return bytes(buf) if ok else None
