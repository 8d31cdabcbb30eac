"""Quality reason codes and their words for people (text only: no cv2).

Split from :mod:`edge.quality`, which measures faces with cv2: the registry
import report, which the server also runs (``server.registry_api`` ->
``registry.importer`` -> ``registry.enrol``), needs the words without the face
engine installed (the ``server`` extra has no OpenCV).
"""

from __future__ import annotations

from edge.types import FaceQuality

TOO_SMALL = "too_small"
TOO_BLURRY = "too_blurry"
BAD_POSE = "bad_pose"
LOW_SCORE = "low_score"
LOW_QUALITY = "low_quality"
REASON_CODES = (TOO_SMALL, TOO_BLURRY, BAD_POSE, LOW_SCORE, LOW_QUALITY)
"""``low_quality`` is enrolment only: the recogniser's own quality signal (the
embedding norm before normalisation, see :class:`edge.models.ModelPack`)."""


def warning_text(quality: FaceQuality) -> str:
    """What is poor about a usable face, for people ('' when nothing is)."""
    parts = {
        TOO_SMALL: f"small face ({quality.size_px:.0f} px)",
        TOO_BLURRY: f"blurred (sharpness {quality.relative_sharpness:.3f})",
        BAD_POSE: f"turned away (frontal {quality.frontal:.2f})",
        LOW_SCORE: f"faint face (detector score {quality.det_score:.2f})",
        LOW_QUALITY: f"the recogniser rates it poor (norm {quality.embedding_norm:.1f})",
    }
    return ", ".join(parts[w] for w in quality.warnings if w in parts)
