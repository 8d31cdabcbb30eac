"""Result types of the face engine: our own frozen dataclasses.

Nothing of insightface's ``Face`` dict leaks past ``edge.engine``; every other
module (pipeline, gallery, registry enrolment) speaks these types only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Embedding = npt.NDArray[np.float32]
"""A 1-D, L2-normalised float32 face embedding."""


@dataclass(frozen=True, slots=True)
class BBox:
    """Axis-aligned box in pixel coordinates of the analysed image."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


@dataclass(frozen=True, slots=True)
class Detection:
    """One face found by the detector."""

    bbox: BBox
    det_score: float
    # 5 landmarks (eyes, nose, mouth corners) as ((x, y), ...), image pixels.
    landmarks: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """Quality of one face for recognition; ``score`` in [0, 1], higher is better."""

    score: float
    size_px: float
    blur: float
    det_score: float
    frontal: float
    reasons: tuple[str, ...] = field(default=())
    """Why the face fails the quality gate; empty when usable."""
    warnings: tuple[str, ...] = field(default=())
    """Usable but poor: the signals (same codes as ``reasons``) that are in the
    band between the gate and the warning level (:class:`edge.quality.QualityConfig`).
    An enrolment photo with warnings is enrolled, and the registry report says so."""
    relative_sharpness: float = 1.0
    """Contrast-free sharpness the blur gate uses (:func:`edge.quality.relative_sharpness`)."""
    yaw_deg: float = 0.0
    """|yaw| in degrees when the keypoints say the face is turned past ~45 deg, else 0."""
    embedding_norm: float = 0.0
    """The recogniser's embedding norm before normalisation (enrolment only; 0 = not measured)."""

    @property
    def usable(self) -> bool:
        return not self.reasons


@dataclass(frozen=True, slots=True)
class EnrolledFace:
    """Exactly one usable face from an enrolment photo."""

    embedding: Embedding
    quality: FaceQuality
    detection: Detection
    model_id: str
    chip: bytes | None = None
    """The aligned face the embedding was made from, as a small JPEG (the server's
    desk check shows it beside door crops; None where the caller made none)."""
