"""Face-box tracker: one person walking in is one track, not 40 detections.

Greedy association of detections to live tracks on a score built from the
IoU with each track's *predicted* box (constant velocity, so faces that move
fast between sampled frames, or two people crossing, keep their tracks), with
a fallback on centre distance measured in face sizes for fast movers whose
boxes no longer overlap. A track ends at a detector call that does not see it
when its last match is more than ``max_gap_s`` seconds old: time, not a count
of analysed frames, because the pipeline changes its analysis rate as it goes
(burst sampling). Only a look that fails ends a track: if the detector did not
run (nothing moved), nobody saw the face leave. Each track keeps the
best ``best_k`` faces by quality, as aligned crops taken at detection time, so
the frame itself can be dropped.

A long stay (someone waiting in the hall, a face on a poster) is cut into
pieces of at most ``max_track_s`` seconds: when a track reaches that age it
is ended (so it is reported) and a continuation track starts on the same
box, with ``continued_from`` naming the piece before it. A person who stays
two minutes is therefore four sightings in a row at the same place, each a
complete track with its own best faces; nothing is held back until the stream
ends.

The tracker is pure bookkeeping (no models), so the benchmark uses the same
class to cluster a naive baseline's per-frame detections into walk-ins.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from edge.face.boxes import iou
from edge.face.types import BBox, Detection, FaceQuality


class TrackerConfig(BaseModel):
    """Tracker settings; times are in seconds of the frames' timestamps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iou_min: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="IoU with the predicted box for the same face.",
    )
    max_centre_distance: float = Field(
        default=1.0,
        ge=0,
        le=5,
        description="Fallback match: centre distance in face sizes (box side) to the prediction.",
    )
    max_size_ratio: float = Field(
        default=1.5,
        ge=1,
        le=4,
        description="Largest size change between a track and its next box. A walker seen at "
        "5 analysed frames/s grows ~10-20% a frame; a cut from one face to another nearby "
        "(hamilton clip: 50 -> 80 px) grows more and starts a new track.",
    )
    max_gap_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Seconds without a match before a track ends (checked at each detector "
        "call that does not see it). 1 s bridges a few missed detections (a turned head, "
        "motion blur) without merging two people who pass the same spot seconds apart.",
    )
    max_track_s: float | None = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest track: at this age a track is ended (reported) and a continuation "
        "track starts on the same box, so a long stay or a poster is reported every "
        "max_track_s seconds instead of when the stream ends. None: no limit.",
    )
    min_hits: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Detections a track needs to be reported; 1-hit tracks are mostly "
        "false positives.",
    )
    best_k: int = Field(default=3, ge=1, le=16, description="Best-quality faces kept per track.")
    velocity_smoothing: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Weight of the newest step in the velocity EMA.",
    )


@dataclass(frozen=True, slots=True)
class FaceSample:
    """One usable face of a track, kept for embedding when the track ends."""

    frame_index: int
    timestamp: float
    detection: Detection
    quality: FaceQuality
    aligned: npt.NDArray[np.uint8]
    """112x112 BGR crop aligned for the recogniser."""
    context: npt.NDArray[np.uint8] | None = None
    """A looser crop around the face for people (the unknown's thumbnail)."""


@dataclass(slots=True)
class Track:
    """A live or ended track of one face (mutable: the tracker owns it)."""

    track_id: int
    bbox: BBox
    start_frame: int
    end_frame: int
    started_at: float
    ended_at: float
    hits: int = 1
    misses: int = 0
    """Analysed frames with a detector call since the last match (informational)."""
    usable_faces: int = 0
    """Faces that passed the quality gate (counted by the pipeline)."""
    continued_from: int | None = None
    """Id of the previous piece of the same stay (see ``max_track_s``), else None."""
    velocity: tuple[float, float] = (0.0, 0.0)
    """Centre displacement per source frame."""
    best_quality: float = 0.0
    faces_offered: int = 0
    best: list[FaceSample] = field(default_factory=list)
    boxes: list[tuple[int, BBox]] = field(default_factory=list)
    """(frame index, box) of every matched detection, for tests and the benchmark."""

    def predicted(self, frame_index: int) -> BBox:
        """The box moved along the velocity to ``frame_index``."""
        dt = frame_index - self.end_frame
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        b = self.bbox
        return BBox(b.x1 + dx, b.y1 + dy, b.x2 + dx, b.y2 + dy)

    def offer(self, sample: FaceSample, k: int) -> None:
        """Keep ``sample`` if it is among the ``k`` best faces so far (by quality score)."""
        self.faces_offered += 1
        self.best_quality = max(self.best_quality, sample.quality.score)
        self.best.append(sample)
        self.best.sort(key=lambda s: s.quality.score, reverse=True)
        del self.best[k:]


def _centre(b: BBox) -> tuple[float, float]:
    return (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2


def _size(b: BBox) -> float:
    return max(1.0, math.sqrt(max(b.width, 0.0) * max(b.height, 0.0)))


class IoUTracker:
    """Associates per-frame face boxes into tracks; see the module docstring."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._active: list[Track] = []
        self._next_id = 1

    @property
    def active(self) -> list[Track]:
        """Tracks still alive (a copy of the list; the tracks themselves are shared)."""
        return list(self._active)

    def _score(self, track: Track, box: BBox, frame_index: int) -> float:
        """Association score (> 0 means admissible; higher is better)."""
        cfg = self.config
        pred = track.predicted(frame_index)
        ratio = _size(box) / _size(pred)
        if ratio > cfg.max_size_ratio or ratio < 1 / cfg.max_size_ratio:
            return 0.0
        overlap = iou(pred, box)
        if overlap >= cfg.iou_min:
            return 1.0 + overlap
        (px, py), (bx, by) = _centre(pred), _centre(box)
        dist = math.hypot(px - bx, py - by) / max(_size(pred), _size(box))
        if dist <= cfg.max_centre_distance:
            # Always ranks below any IoU match; closer is better.
            return 1.0 - dist / (cfg.max_centre_distance + 1e-9) * 0.999
        return 0.0

    def update(
        self, boxes: Sequence[BBox], *, frame_index: int, timestamp: float
    ) -> tuple[list[Track], list[Track]]:
        """Associate one analysed frame's boxes (the detector searched the whole frame,
        or at least every live track's surroundings).

        Returns ``(tracks, ended)``: the track of each box (same order as
        ``boxes``; new tracks are started for unmatched boxes) and the tracks
        that ended: unmatched for more than ``max_gap_s``, or cut at
        ``max_track_s`` (their continuation is then the box's track).
        """
        owner, ended = self._match(boxes, None, frame_index, timestamp)
        result: list[Track] = []
        for bi, box in enumerate(boxes):
            found = owner[bi]
            if found is None:
                found = Track(
                    track_id=self._next_id,
                    bbox=box,
                    start_frame=frame_index,
                    end_frame=frame_index,
                    started_at=timestamp,
                    ended_at=timestamp,
                )
                found.boxes.append((frame_index, box))
                self._next_id += 1
                self._active.append(found)
            result.append(found)
        return result, ended

    def follow(
        self, boxes: Sequence[BBox], *, tracks: Collection[int], frame_index: int, timestamp: float
    ) -> tuple[list[Track | None], list[Track]]:
        """Associate boxes found by a detector call on the regions around ``tracks``
        (ids) only: only those tracks can match or miss, and no track is started
        (an unmatched box gets None; new faces are left to full searches).

        Returns ``(tracks, ended)`` as :meth:`update`.
        """
        return self._match(boxes, set(tracks), frame_index, timestamp)

    def _match(
        self,
        boxes: Sequence[BBox],
        only: set[int] | None,
        frame_index: int,
        timestamp: float,
    ) -> tuple[list[Track | None], list[Track]]:
        cfg = self.config
        ended: list[Track] = []
        pairs: list[tuple[float, int, int]] = []
        for ti, track in enumerate(self._active):
            if only is not None and track.track_id not in only:
                continue
            for bi, box in enumerate(boxes):
                s = self._score(track, box, frame_index)
                if s > 0:
                    pairs.append((s, ti, bi))
        pairs.sort(key=lambda p: p[0], reverse=True)
        owner: list[Track | None] = [None] * len(boxes)
        matched_tracks: set[int] = set()
        for _, ti, bi in pairs:
            if ti in matched_tracks or owner[bi] is not None:
                continue
            matched_tracks.add(ti)
            track = self._active[ti]
            if cfg.max_track_s is not None and timestamp - track.started_at >= cfg.max_track_s:
                # Long stay: report this piece, continue on the same box.
                ended.append(track)
                track = self._continuation(
                    track, box=boxes[bi], frame_index=frame_index, timestamp=timestamp
                )
                self._active[ti] = track
            else:
                self._extend(track, boxes[bi], frame_index, timestamp)
            owner[bi] = track

        still: list[Track] = []
        for ti, track in enumerate(self._active):
            looked = only is None or track.track_id in only
            if ti not in matched_tracks and looked:
                track.misses += 1
                if timestamp - track.ended_at > cfg.max_gap_s:
                    ended.append(track)
                    continue
            still.append(track)
        self._active = still
        return owner, ended

    def _continuation(
        self, track: Track, *, box: BBox, frame_index: int, timestamp: float
    ) -> Track:
        new = Track(
            track_id=self._next_id,
            bbox=box,
            start_frame=frame_index,
            end_frame=frame_index,
            started_at=timestamp,
            ended_at=timestamp,
            velocity=track.velocity,
            continued_from=track.track_id,
        )
        new.boxes.append((frame_index, box))
        self._next_id += 1
        return new

    def _extend(self, track: Track, box: BBox, frame_index: int, timestamp: float) -> None:
        dt = frame_index - track.end_frame
        if dt > 0:
            (ox, oy), (nx, ny) = _centre(track.bbox), _centre(box)
            w = self.config.velocity_smoothing if track.hits > 1 else 1.0
            vx = (nx - ox) / dt
            vy = (ny - oy) / dt
            track.velocity = (
                w * vx + (1 - w) * track.velocity[0],
                w * vy + (1 - w) * track.velocity[1],
            )
        track.bbox = box
        track.end_frame = frame_index
        track.ended_at = timestamp
        track.hits += 1
        track.misses = 0
        track.boxes.append((frame_index, box))

    def flush(self) -> list[Track]:
        """End every live track (end of stream)."""
        ended, self._active = self._active, []
        return ended
