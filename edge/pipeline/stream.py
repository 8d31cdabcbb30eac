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
``tracker.max_track_s`` (see :mod:`edge.pipeline.tracker`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.face.boxes import nms
from edge.face.quality import fuse_embeddings
from edge.face.types import Detection, Embedding
from edge.pipeline.capture import Frame, ReconnectPolicy, VideoSource
from edge.pipeline.config import PipelineConfig
from edge.pipeline.motion import MotionGate
from edge.pipeline.regions import (
    TRACK_GROW,
    Crop,
    NormRect,
    crop_regions,
    distinct,
    engine_det_size,
    grow,
    mask_outside,
    offset,
)
from edge.pipeline.results import PipelineStats, TrackResult
from edge.pipeline.seams import EngineLike, GalleryLike
from edge.pipeline.tracker import FaceSample, IoUTracker, Track

log = logging.getLogger(__name__)


def sample_every_for(fps: float, analyse_fps: float) -> int:
    """Every how many source frames one is analysed (>= 1)."""
    return max(1, round(fps / analyse_fps)) if fps > 0 else 1


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
        *,
        roi: NormRect | None = None,
    ) -> None:
        """``roi``: analyse only this part of the frame (set from the web; None: all)."""
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
        self.roi = roi
        # Settings changed while running (issue 17 D): set by the settings thread,
        # applied by the analysing thread before its next frame.
        self._retune_lock = threading.Lock()
        self._pending: tuple[float, NormRect | None] | None = None
        self.last_frame: Frame | None = None  # unmasked, for the camera's snapshot

    def retune(self, *, analyse_fps: float, roi: NormRect | None) -> None:
        """Change the analysed fps and the region of interest of a running pipeline
        (thread-safe; takes effect from the next analysed frame, live tracks go on)."""
        with self._retune_lock:
            self._pending = (analyse_fps, roi)

    def _apply_pending(self) -> None:
        with self._retune_lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        fps, self.roi = pending
        if fps != self.config.analyse_fps:
            self.config = self.config.model_copy(update={"analyse_fps": fps})
            if self.stats.fps:
                self.set_fps(self.stats.fps)

    # -- sampling ----------------------------------------------------------
    def set_fps(self, fps: float) -> None:
        """Derive the sampling steps from the source's frame rate (``run`` calls it)."""
        self.stats.fps = fps
        self._base_every = sample_every_for(fps, self.config.analyse_fps)
        self._burst_every = min(self._base_every, sample_every_for(fps, self.config.burst_fps))
        self.stats.sample_every, self.stats.burst_every = self._base_every, self._burst_every
        self._step = self._base_every

    def want(self, index: int) -> bool:
        """The capture sampler (:data:`edge.pipeline.capture.Sampler`): retrieve frame ``index``?

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
        self._apply_pending()
        self.last_frame = frame
        if self.roi is not None:
            frame = Frame(frame.index, frame.timestamp, mask_outside(frame.image, self.roi))
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
        regions = [grow(t.predicted(frame.index), TRACK_GROW) for t in hungry]
        crops = None
        if self.config.roi:
            crops = crop_regions(regions, w, h, self.config.roi_max_cost, self._min_crop(w, h))
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
            regions = [grow(r, 0.5) for r in self.motion.last_regions] if moved else []
            regions += [grow(t.predicted(frame.index), TRACK_GROW) for t in self.tracker.active]
            crops = crop_regions(regions, w, h, cfg.roi_max_cost, self._min_crop(w, h))
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
        cap = self.config.det_size or engine_det_size(self.engine)
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
            found.extend(offset(d, x1, y1) for d in dets)
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
        best = distinct(track.best, self.config.embed_min_gap_s)
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
