"""The edge stream pipeline: frames in, one :class:`TrackResult` per face track out.

capture (grab every frame, retrieve the sampled ones) -> motion gate (skip
the detector on an idle scene) -> detector (crops or the whole frame) ->
quality gate -> tracker -> when a track ends: embed its best faces ->
quality-weighted fusion -> gallery match -> :class:`TrackResult`.

Cost model (why it is cheap):

* Sampling is dynamic (:meth:`Pipeline.want` is the capture's sampler): every
  frame is grabbed, but only ``analyse_fps`` frames a second are retrieved and
  analysed, and ``burst_fps`` only while the scene moves and some live track
  is still *hungry* (fewer than ``hungry_faces`` usable faces). A face that is
  usable for a fraction of a second is then not lost between samples, and the
  burst ends as soon as every track has its faces.
* An idle entrance costs decode + a 160 px grayscale difference per analysed
  frame: the detector runs only when something moves, or while a track is
  alive (once every ``still_detect_s`` when nothing moves, so a poster's face
  cannot keep it busy).
* The detector sees square crops around the moving blobs and the live
  tracks' predicted boxes at the full frame's pixel scale (the same faces, a
  smaller input); the whole frame every ``full_detect_s`` at least, and
  whenever the crops would cost more than ``roi_max_cost`` of it. A frame
  smaller than ``det_size`` is searched at ``full_min_scale`` of its size
  rather than upscaled (640x360: 320, a quarter of the cost of 640).
* The recogniser runs once per track, never per frame: the best face first;
  when it already names a resident decisively, the other crops are skipped,
  else all best k are embedded in one more batch and fused.

Faces that fail the quality gate still feed the tracker (so a person is one
track from far away to close up) but are never embedded. Tracks end on time
(``tracker.max_gap_s``), and a long stay is reported in pieces of
``tracker.max_track_s`` (see :mod:`edge.tracker`).
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

from edge.boxes import nms
from edge.capture import Frame, ReconnectPolicy, VideoSource
from edge.motion import MotionConfig, MotionGate
from edge.quality import fuse_embeddings
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
        description="Base analysis rate, frames per second of video: while nothing is tracked "
        "(only the motion gate runs) and while every live track has its faces (maintenance: "
        "the tracker follows people). A walk-in lasts 1-3 s, so 5/s still sees it 5-15 times.",
    )
    burst_fps: float = Field(
        default=12.5,
        gt=0,
        le=120,
        description="Analysis rate while some live track is hungry (fewer than hungry_faces "
        "usable faces) and the scene moves. A face turned to the camera for a fraction of a "
        "second (a profile that turns, a far face passing close) is usable in only 2-4 "
        "consecutive frames; at 5/s it falls between samples, at 12.5/s (every 2nd frame "
        "of 25 fps) it does not. Capped at the source's frame rate.",
    )
    hungry_faces: int = Field(
        default=2,
        ge=1,
        le=16,
        description="A live track with fewer usable faces than this is hungry. Once a track "
        "has them, the rest of its best_k faces come from base-rate frames. Two, not one: "
        "a single face may be a fluke that barely passed the quality gate.",
    )
    hunger_max_s: float = Field(
        default=6.0,
        gt=0,
        le=600,
        description="A track still hungry after this many seconds (someone standing with "
        "their back to the camera) no longer holds the burst rate; it is still followed at "
        "analyse_fps.",
    )
    det_size: int | None = Field(
        default=640,
        ge=128,
        le=1920,
        description="Detector input size for a full-frame detection (the frame is letterboxed "
        "into it); None uses the engine's configured size.",
    )
    full_min_scale: float = Field(
        default=0.5,
        gt=0,
        le=4,
        description="A frame smaller than det_size is searched at this share of its size "
        "(at least), not upscaled into det_size: a 640x360 frame at 320 instead of 640, a "
        "quarter of the cost. A usable face (>= 40 px) is then >= 20 px in the detector "
        "input; at 1080p, det_size 640 already puts it at 13 px (fine), 480 at 10 px (a "
        "borderline 43 px face was lost). 1 keeps frames at native scale.",
    )
    min_face_px: float = Field(
        default=40.0,
        ge=8.0,
        le=1024.0,
        description="Smallest face (shorter box side, px) the pipeline embeds; smaller ones "
        "are tracked only. Above the enrolment gate (edge.quality.QualityConfig.min_face_px, "
        "measured on still photos): door-camera frames add motion blur and compression, and "
        "a far face's unknown sighting opens a case nobody can judge. full_min_scale "
        "assumes it.",
    )
    roi: bool = Field(
        default=True,
        description="Detect in crops around the moving area and the live tracks' predicted "
        "boxes (on burst frames: the hungry tracks' only) when they are cheaper than the "
        "frame, at the same pixel scale as a full-frame detection (so no small face is "
        "lost). False: always the whole frame.",
    )
    roi_max_cost: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="Crops are searched while their detector inputs add up to at most this "
        "share of a full-frame call's input (the frame is letterboxed into a square, so a "
        "16:9 frame wastes 44% of it); beyond, one full-frame call is cheaper than the "
        "crops plus their fixed per-call costs.",
    )
    roi_min_det_size: int = Field(
        default=160,
        ge=64,
        le=1920,
        description="Smallest detector input for a region of interest: a smaller region is "
        "widened (at the full frame's pixel scale), never upscaled, so a face is measured "
        "the same whichever way it was found.",
    )
    full_detect_s: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="While something moves or is tracked, detect on the full frame at least "
        "this often, so a face outside the moving area (a still person) is not missed.",
    )
    still_detect_s: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="While tracks are alive but nothing moves, detect only this often. A "
        "motionless face (someone waiting, a poster) then costs one detection a second; "
        "tracks still end after tracker.max_gap_s without a match.",
    )
    embed_min_gap_s: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description="Of a track's best faces, skip (do not embed) one taken less than this "
        "many seconds after a better one, as a near-duplicate. Off by default: measured on "
        "a stage clip, fusing three crops 0.07 s apart lifted a ~40 px face of the enrolled "
        "person from below the threshold to 0.40, while one crop left it unknown; the "
        "recogniser's noise on small faces is not a duplicate.",
    )
    decisive_similarity: float | None = Field(
        default=0.5,
        ge=-1,
        le=1,
        description="A track's best face is embedded first; when it already matches a gallery "
        "identity at this similarity or more, the other crops are not embedded (buffalo_s: "
        "different people max 0.33, p99 0.28). Unknowns always get all best_k crops fused "
        "(their embedding is clustered on the server). None: always embed best_k.",
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
    continued_from: int | None = None
    """For a long stay cut at ``tracker.max_track_s``: the previous piece's track id."""

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
    """Analysed frames on which the detector searched (whole frame or crops)."""
    roi_searches: int = 0
    """Of ``detector_calls``, those on crops (regions of interest) instead of the frame."""
    roi_detector_calls: int = 0
    """Detector invocations on crops (a search may crop several regions)."""
    detector_pixels: int = 0
    """Sum of detector input areas (det_size squared), a device-independent cost."""
    burst_frames: int = 0
    """Analysed frames taken at the burst rate (some track was hungry)."""
    detections: int = 0
    usable_faces: int = 0
    tracks_reported: int = 0
    tracks_too_short: int = 0
    tracks_without_usable_face: int = 0
    faces_skipped_duplicate: int = 0
    """Best faces not embedded: near-duplicates of a better face (``embed_min_gap_s``)."""
    embed_calls: int = 0
    faces_embedded: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    fps: float = 0.0
    sample_every: int = 1
    """Base sampling step (frames) at analyse_fps."""
    burst_every: int = 1
    """Sampling step (frames) at burst_fps."""
    reconnects: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def video_s(self) -> float:
        """Seconds of video read (frames / fps)."""
        return self.frames_read / self.fps if self.fps > 0 else 0.0


def sample_every_for(fps: float, analyse_fps: float) -> int:
    """Every how many source frames one is analysed (>= 1)."""
    return max(1, round(fps / analyse_fps)) if fps > 0 else 1


def _engine_det_size(engine: EngineLike) -> int:
    """The engine's configured detector size (640 when it does not say)."""
    config = getattr(engine, "config", None)
    return int(getattr(config, "det_size", 640))


def _grow(b: BBox, by: float) -> BBox:
    """``b`` grown by ``by`` of its size on every side."""
    dx, dy = b.width * by, b.height * by
    return BBox(b.x1 - dx, b.y1 - dy, b.x2 + dx, b.y2 + dy)


Crop = tuple[int, int, int, int]
"""(x1, y1, x2, y2) in frame pixels."""

_TRACK_GROW = 1.0
"""A track's region: its predicted box grown by one face size on every side (3x the
side): room for the motion since the last detection, and the face fills a third of
the crop (SCRFD misses faces that fill its input)."""

_MAX_CROPS = 4
"""More separate regions than this: one full-frame call is cheaper than the calls'
fixed costs (each SCRFD call pays ~1-2 ms of pre/post-processing)."""


def _square(b: BBox, w: int, h: int, min_side: float = 8.0) -> Crop:
    """The square around ``b`` (side = its longer side, at least ``min_side``), moved
    inside the frame where it crosses an edge and clipped only where it is larger."""
    side = min(max(b.width, b.height, min_side), float(max(w, h)))
    cx, cy = (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2
    x1 = int(min(max(0.0, cx - side / 2), max(0.0, w - side)))
    y1 = int(min(max(0.0, cy - side / 2), max(0.0, h - side)))
    return x1, y1, min(w, int(x1 + side) + 1), min(h, int(y1 + side) + 1)


def _area(c: Crop) -> int:
    return max(0, c[2] - c[0]) * max(0, c[3] - c[1])


def _crops(
    regions: Sequence[BBox], w: int, h: int, max_cost: float, min_side: float
) -> list[Crop] | None:
    """Square crops covering ``regions`` (already grown by the caller), at least
    ``min_side`` pixels wide, or None for the full frame.

    Squares, because the detector letterboxes its input into a square: a square
    crop fills it with picture instead of padding. Crops are merged while a merge
    costs no extra area (overlapping or touching squares), and then the cheapest
    merges until at most ``_MAX_CROPS`` remain. None when there is no region or
    the crops' detector inputs would add up to more than ``max_cost`` of the
    full frame's (a crop of side c costs c squared; the frame max(w, h) squared).
    """
    crops = [_square(r, w, h, min_side) for r in regions]
    crops = [c for c in crops if c[2] - c[0] >= 8 and c[3] - c[1] >= 8]
    if not crops:
        return None
    while len(crops) > 1:
        best: tuple[int, int, int, Crop] | None = None
        for i in range(len(crops)):
            for j in range(i + 1, len(crops)):
                a, b = crops[i], crops[j]
                u = BBox(min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                merged = _square(u, w, h, min_side)
                extra = _area(merged) - _area(a) - _area(b)
                if best is None or extra < best[0]:
                    best = (extra, i, j, merged)
        assert best is not None
        extra, i, j, merged = best
        if extra > 0 and len(crops) <= _MAX_CROPS:
            break
        crops = [c for k, c in enumerate(crops) if k not in (i, j)] + [merged]
    if sum(max(c[2] - c[0], c[3] - c[1]) ** 2 for c in crops) > max_cost * max(w, h) ** 2:
        return None
    return crops


def _distinct(samples: Sequence[FaceSample], min_gap_s: float) -> list[FaceSample]:
    """``samples`` (best first) without those taken within ``min_gap_s`` of a better one."""
    kept: list[FaceSample] = []
    for s in samples:
        if all(abs(s.timestamp - k.timestamp) >= min_gap_s for k in kept):
            kept.append(s)
    return kept


def _offset(det: Detection, dx: float, dy: float) -> Detection:
    """A detection in crop pixels moved to frame pixels."""
    b = det.bbox
    return Detection(
        bbox=BBox(b.x1 + dx, b.y1 + dy, b.x2 + dx, b.y2 + dy),
        det_score=det.det_score,
        landmarks=tuple((x + dx, y + dy) for x, y in det.landmarks),
    )


class Pipeline:
    """Consumes frames; yields a :class:`TrackResult` whenever a track ends.

    ``gallery`` may be None: then every track is unknown (similarity 0).
    Not thread-safe: one pipeline per camera, fed by one thread (the capture
    reader thread of a live source only calls :meth:`want`, which reads one int).
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
        self._base_every = 1
        self._burst_every = 1
        self._step = 1  # frames between analysed frames right now (read by want())
        self._last_taken: int | None = None
        self._last_base: int | None = None  # frame index of the last base frame
        self._moved = False  # the motion gate's answer on the last base frame
        self._now = 0.0  # timestamp of the frame being processed
        self._last_detect: float | None = None  # timestamps of the last detector calls
        self._last_full: float | None = None
        self._hungry_k = self.config.hungry_faces

    # -- sampling ----------------------------------------------------------
    def set_fps(self, fps: float) -> None:
        """Derive the sampling steps from the source's frame rate (``run`` calls it)."""
        self.stats.fps = fps
        self._base_every = sample_every_for(fps, self.config.analyse_fps)
        self._burst_every = min(self._base_every, sample_every_for(fps, self.config.burst_fps))
        self.stats.sample_every, self.stats.burst_every = self._base_every, self._burst_every
        self._step = self._base_every

    def want(self, index: int) -> bool:
        """The capture sampler (:data:`edge.capture.Sampler`): retrieve frame ``index``?

        Takes a frame once ``step`` frames have passed since the last one taken;
        ``process`` sets the step after each analysed frame, so a burst starts
        with the very next frame.
        """
        last = self._last_taken
        if last is not None and 0 <= index - last < self._step:
            return False
        self._last_taken = index
        return True

    def _hungry(self, now: float) -> list[Track]:
        """Live tracks that lack usable faces and are young enough to be worth a burst."""
        hmax = self.config.hunger_max_s
        return [
            t
            for t in self.tracker.active
            if t.usable_faces < self._hungry_k and now - t.started_at <= hmax
        ]

    # -- per frame ---------------------------------------------------------
    def process(self, frame: Frame) -> list[TrackResult]:
        """Analyse one (sampled) frame; returns the tracks that ended with it.

        A *base* frame (one per ``analyse_fps`` step) runs the motion gate and,
        when something moved or a still track is due a check, a full search
        (the region of interest, or the whole frame). Frames between base
        frames are *burst* frames, taken only while a moving track is hungry:
        they search only crops around the hungry tracks (at the full frame's
        pixel scale), feed only those tracks and start no new track (new faces
        are left to base frames).
        """
        self.stats.frames_analysed += 1
        now = self._now = frame.timestamp
        last = self._last_base
        base = last is None or not 0 <= frame.index - last < self._base_every
        ended: list[Track] = []
        if base:
            self._last_base = frame.index
            moved = self._moved = self.motion.update(frame.image)
            if moved:
                self.stats.motion_frames += 1
            # Tracks alive but nothing moves (a person standing still, a poster): the
            # detector only checks on them every still_detect_s. Nothing tracked and
            # nothing moving: the detector stays off.
            still_check = (
                bool(self.tracker.active)
                and self._since(self._last_detect, now) >= self.config.still_detect_s
            )
            if moved or still_check:
                ended = self._search(frame, moved)
        else:
            self.stats.burst_frames += 1
            hungry = self._hungry(now)
            if hungry:
                ended = self._follow(frame, hungry)
        self._step = self._burst_every if self._moved and self._hungry(now) else self._base_every
        return self._finish_all(ended)

    @staticmethod
    def _since(then: float | None, now: float) -> float:
        # + 1 us: file timestamps are index / fps, and 29/25 - 4/25 must count as 1.0 s.
        return float("inf") if then is None else now - then + 1e-6

    def _search(self, frame: Frame, moved: bool) -> list[Track]:
        """Detect on the region of interest or the whole frame; feed the tracker."""
        detections = self._detect(frame, moved)
        self._count_call(frame.timestamp, detections)
        tracks, ended = self.tracker.update(
            [d.bbox for d in detections], frame_index=frame.index, timestamp=frame.timestamp
        )
        self._take_faces(frame, detections, tracks)
        return ended

    def _follow(self, frame: Frame, hungry: Sequence[Track]) -> list[Track]:
        """Detect around the hungry tracks only (burst frame); feed only them.

        Detector calls on crops around their predicted boxes, at the full
        frame's pixel scale: the faces are seen exactly as a full search would
        see them (same size in the detector input, so the same quality), the
        rest of the frame is not paid for.
        """
        image = frame.image
        h, w = image.shape[:2]
        regions = [_grow(t.predicted(frame.index), _TRACK_GROW) for t in hungry]
        crops = None
        if self.config.roi:
            crops = _crops(regions, w, h, self.config.roi_max_cost, self._min_crop(w, h))
        found = self._detect_in(image, crops)
        self._count_call(frame.timestamp, found)
        owners, ended = self.tracker.follow(
            [d.bbox for d in found],
            tracks=[t.track_id for t in hungry],
            frame_index=frame.index,
            timestamp=frame.timestamp,
        )
        kept = [(d, t) for d, t in zip(found, owners, strict=True) if t is not None]
        self._take_faces(frame, [d for d, _ in kept], [t for _, t in kept])
        return ended

    def _count_call(self, now: float, detections: Sequence[Detection]) -> None:
        self._last_detect = now
        self.stats.detector_calls += 1
        self.stats.detections += len(detections)

    def _take_faces(
        self, frame: Frame, detections: Sequence[Detection], tracks: Sequence[Track]
    ) -> None:
        """Quality-gate each detected face; keep it if among its track's best k."""
        engine = self.engine
        k = self.config.tracker.best_k
        for det, track in zip(detections, tracks, strict=True):
            # Align once: the quality gate measures sharpness on the aligned crop,
            # and the same crop is what the recogniser will see.
            aligned = engine.align(frame.image, det)
            q = engine.quality(frame.image, det, aligned=aligned)
            if not q.usable or q.size_px < self.config.min_face_px:
                continue  # tracked, never embedded
            self.stats.usable_faces += 1
            track.usable_faces += 1
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

    def _detect(self, frame: Frame, moved: bool) -> list[Detection]:
        """Full frame, or the region of interest (motion + live tracks)."""
        cfg = self.config
        image = frame.image
        h, w = image.shape[:2]
        crops = None
        if cfg.roi and self._since(self._last_full, frame.timestamp) < cfg.full_detect_s:
            # A moving blob grown by half its size on every side: if the blob is only a
            # head, the face still fills at most half the crop (SCRFD misses faces that
            # fill its input). A track's predicted box grown to 3x the face side.
            regions = [_grow(r, 0.5) for r in self.motion.last_regions] if moved else []
            regions += [_grow(t.predicted(frame.index), _TRACK_GROW) for t in self.tracker.active]
            crops = _crops(regions, w, h, cfg.roi_max_cost, self._min_crop(w, h))
        return self._detect_in(image, crops)

    def _min_crop(self, w: int, h: int) -> float:
        """Smallest crop side: ``roi_min_det_size`` at the full frame's pixel scale.

        Never a finer scale than the full frame either: near the quality gate's
        limits the detector's box and keypoints depend on the scale (a 43 px face
        in 1080p read as 22 px when a small crop was upscaled), and a face must
        pass or fail the gate the same way whichever way it was searched.
        """
        return self.config.roi_min_det_size * max(w, h) / self._full_size(w, h)

    def _full_size(self, w: int, h: int) -> int:
        """Detector input side for the whole frame: ``det_size``, or less for a small
        frame, down to ``full_min_scale`` of its longer side (multiple of 32)."""
        cap = self.config.det_size or _engine_det_size(self.engine)
        need = -(-round(max(w, h) * self.config.full_min_scale) // 32) * 32
        return max(32, min(cap, need))

    def _detect_in(self, image: npt.NDArray[np.uint8], crops: list[Crop] | None) -> list[Detection]:
        """Detect in ``crops`` (each at the full frame's pixel scale: never coarser, so
        no small face is lost) or, when None, on the whole frame at ``det_size``."""
        h, w = image.shape[:2]
        full_size = self._full_size(w, h)
        if crops is None:
            self._last_full = self._now
            self.stats.detector_pixels += full_size * full_size
            return self.engine.detect(image, det_size=full_size)
        scale = full_size / max(w, h)
        found: list[Detection] = []
        self.stats.roi_searches += 1
        for x1, y1, x2, y2 in crops:
            # Rounded up to the detector's stride of 32: at most 31 px finer than the
            # full frame's scale.
            size = min(-(-round(max(x2 - x1, y2 - y1) * scale) // 32) * 32, full_size)
            self.stats.roi_detector_calls += 1
            self.stats.detector_pixels += size * size
            dets = self.engine.detect(np.ascontiguousarray(image[y1:y2, x1:x2]), det_size=size)
            found.extend(_offset(d, x1, y1) for d in dets)
        # Overlapping crops can find one face twice.
        return nms(found, 0.5) if len(crops) > 1 else found

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

        Sampling is dynamic (:meth:`want`): ``analyse_fps`` normally,
        ``burst_fps`` while a moving track is hungry. Raises
        :class:`~edge.errors.CaptureError` for a source that cannot be opened
        or read. ``stats`` is up to date after every analysed frame.
        """
        src = (
            source if isinstance(source, VideoSource) else VideoSource(source, reconnect=reconnect)
        )
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            src.open()
            self.set_fps(src.fps)
            for frame in src.frames(self.want):
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
        """Process every frame of an iterable and flush (tests, generated video)."""
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
        if track.hits < self.config.tracker.min_hits and track.continued_from is None:
            self.stats.tracks_too_short += 1
            return None
        if not track.best:
            self.stats.tracks_without_usable_face += 1
            log.debug("track %d ended without a usable face", track.track_id)
            return None
        best = _distinct(track.best, self.config.embed_min_gap_s)
        self.stats.faces_skipped_duplicate += len(track.best) - len(best)
        identity: str | None = None
        candidate: str | None = None
        similarity = 0.0
        decisive = self.config.decisive_similarity
        used = best
        fused: Embedding | None = None
        if self.gallery is not None and decisive is not None and len(best) > 1:
            # The best face alone often settles a known resident: skip the other crops.
            first = self.engine.embed_aligned([best[0].aligned])
            self.stats.embed_calls += 1
            self.stats.faces_embedded += 1
            match = self.gallery.match(first)[0]
            if match.identity is not None and float(match.similarity) >= decisive:
                used, fused = best[:1], first[0].astype(np.float32)
                identity, candidate, similarity = match.identity, match.best, match.similarity
            else:
                # Not settled: embed the rest (one batch) and fuse all k.
                rest = self.engine.embed_aligned([s.aligned for s in best[1:]])
                self.stats.embed_calls += 1
                self.stats.faces_embedded += len(best) - 1
                fused = fuse_embeddings(np.vstack([first, rest]), [s.quality.score for s in best])
        if fused is None:
            # One recogniser call for the track's k crops (batched, not per face).
            embeddings = self.engine.embed_aligned([s.aligned for s in best])
            self.stats.embed_calls += 1
            self.stats.faces_embedded += len(best)
            fused = fuse_embeddings(embeddings, [s.quality.score for s in best])
        if self.gallery is not None and identity is None:
            match = self.gallery.match(fused[None, :])[0]
            identity, candidate, similarity = match.identity, match.best, match.similarity
        similarity = float(similarity)
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
            faces_used=len(used),
            hits=track.hits,
            model_id=self.engine.model_id,
            bbox=track.best[0].detection.bbox,
            best_frame=track.best[0].frame_index,
            crop_jpeg=crop,
            continued_from=track.continued_from,
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
