"""What the stream pipeline reports: one :class:`TrackResult` per ended track, and its counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.face.types import BBox, Embedding


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
