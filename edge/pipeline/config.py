"""The stream pipeline's settings: every knob bounded and described."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge.pipeline.motion import MotionConfig
from edge.pipeline.tracker import TrackerConfig


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
        "are tracked only. Above the enrolment gate (edge.face.quality.QualityConfig.min_face_px, "
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
