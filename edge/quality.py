"""Face quality: is this face good enough to enrol, or to be a track's best shot?

Four cheap measurements, each with a gate in :class:`QualityConfig`:

* size: the shorter side of the detector box, in pixels of the analysed image.
  Faces below ~60 px give unstable embeddings (a 2.5 px keypoint shift on a
  20 px face dropped similarity to 0.48).
* sharpness: variance of the Laplacian of the aligned 112x112 face (centre
  region, so the black warp border does not count as an edge), mapped to [0, 1].
* frontal: from the 5 SCRFD keypoints: left/right symmetry of the eyes about
  the nose (yaw) and the nose height between the eye and mouth lines (pitch).
* the detector's own score.

The combined ``score`` ranks faces (e.g. the best k of a track); the gates
decide usability. Reason codes are the enrolment error codes of
:class:`edge.errors.EnrolmentError`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from edge.types import Detection, FaceQuality

TOO_SMALL = "too_small"
TOO_BLURRY = "too_blurry"
BAD_POSE = "bad_pose"
LOW_SCORE = "low_score"
REASON_CODES = (TOO_SMALL, TOO_BLURRY, BAD_POSE, LOW_SCORE)


class QualityConfig(BaseModel):
    """Quality gates; a face failing any gate is not usable (enrolment refuses it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_face_px: float = Field(
        default=40.0,
        ge=8.0,
        le=1024.0,
        description=(
            "Minimum shorter side of the face box in pixels. Below ~60 px embeddings "
            "get unstable; 40 keeps the small TV/ORL faces of the eval set enrollable."
        ),
    )
    min_sharpness: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description=(
            "Minimum normalised sharpness (variance of Laplacian v of the aligned face "
            "mapped to v / (v + sharpness_half)); only clearly smeared faces fail."
        ),
    )
    sharpness_half: float = Field(
        default=100.0,
        gt=0.0,
        le=10_000.0,
        description="Laplacian variance that maps to sharpness 0.5.",
    )
    min_frontal: float = Field(
        default=0.35,
        ge=0.0,
        le=1.0,
        description=(
            "Minimum frontal score from the keypoints (1 = frontal, 0 = profile or "
            "implausible keypoints); 0.35 is roughly 45 degrees of yaw."
        ),
    )
    min_det_score: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="Minimum detector score of a usable face.",
    )


def sharpness(aligned_bgr: npt.NDArray[np.uint8], half: float) -> tuple[float, float]:
    """(normalised sharpness in [0, 1], raw Laplacian variance) of an aligned face."""
    gray = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY) if aligned_bgr.ndim == 3 else aligned_bgr
    h, w = gray.shape[:2]
    # Central 70%: the aligned crop's corners are often black warp border whose
    # hard edge would read as "sharp".
    y0, x0 = int(h * 0.15), int(w * 0.15)
    centre = gray[y0 : h - y0, x0 : w - x0]
    var = float(cv2.Laplacian(centre, cv2.CV_64F).var())
    return var / (var + half), var


def frontal_score(landmarks: tuple[tuple[float, float], ...]) -> float:
    """Frontal score in [0, 1] from 5 keypoints (left eye, right eye, nose, mouth l, r).

    1 for a frontal face; falls with yaw (nose off the eyes' midline) and pitch
    (nose too near the eye or mouth line); 0 for implausible geometry (eyes in
    the wrong order, mouth above the eyes), which is what profile faces and
    false detections produce.
    """
    if len(landmarks) != 5:
        return 0.0
    pts = np.asarray(landmarks, dtype=np.float64)
    le, re, nose, ml, mr = pts
    eye_vec = re - le
    iod = float(np.hypot(*eye_vec))
    if iod < 1e-6:
        return 0.0
    # Rotate into the eye-line frame so in-plane roll does not count as yaw.
    c, s = eye_vec / iod
    rot = np.array([[c, s], [-s, c]])
    nose_r, ml_r, mr_r = (rot @ (p - le) for p in (nose, ml, mr))
    mouth_r = (ml_r + mr_r) / 2
    if mouth_r[1] <= 0 or nose_r[1] <= 0 or mr_r[0] <= ml_r[0]:
        return 0.0
    # Yaw: nose (and mouth) horizontal position relative to the eyes, 0.5 = centred.
    nose_x = nose_r[0] / iod
    mouth_x = mouth_r[0] / iod
    yaw_dev = max(abs(nose_x - 0.5), abs(mouth_x - 0.5) * 0.5)
    yaw = max(0.0, 1.0 - yaw_dev / 0.5)  # nose at an eye -> 0
    # Pitch: nose height between the eye line (0) and mouth line (1); frontal
    # faces sit near 0.55 in the ArcFace template.
    nose_y = nose_r[1] / mouth_r[1]
    pitch = max(0.0, 1.0 - abs(nose_y - 0.55) / 0.45)
    return float(math.sqrt(yaw * pitch)) if yaw > 0 and pitch > 0 else 0.0


def assess(
    det: Detection, aligned_bgr: npt.NDArray[np.uint8], config: QualityConfig
) -> FaceQuality:
    """Measure one detected face (given its aligned crop) and apply the gates."""
    size = float(min(det.bbox.width, det.bbox.height))
    sharp, _ = sharpness(aligned_bgr, config.sharpness_half)
    frontal = frontal_score(det.landmarks)
    reasons: list[str] = []
    if size < config.min_face_px:
        reasons.append(TOO_SMALL)
    if sharp < config.min_sharpness:
        reasons.append(TOO_BLURRY)
    if frontal < config.min_frontal:
        reasons.append(BAD_POSE)
    if det.det_score < config.min_det_score:
        reasons.append(LOW_SCORE)
    # Size saturates at 2x the gate: beyond that a bigger face is not a better one.
    size_factor = min(1.0, size / (2.0 * config.min_face_px))
    parts = (size_factor, sharp, frontal, float(det.det_score))
    score = float(np.prod([max(p, 0.0) for p in parts]) ** (1.0 / len(parts)))
    return FaceQuality(
        score=min(1.0, score),
        size_px=size,
        blur=sharp,
        det_score=float(det.det_score),
        frontal=frontal,
        reasons=tuple(reasons),
    )


def fuse_embeddings(
    embeddings: npt.NDArray[np.float32], weights: npt.ArrayLike
) -> npt.NDArray[np.float32]:
    """Quality-weighted mean of L2-normalised embedding rows, re-normalised.

    Used for several enrolment photos of one person and for the frames of one
    track: a sharp frontal photo should count for more than a blurred side
    view, but none is thrown away (averaging cancels photo-specific noise such
    as lighting and expression). Weights are floored at 1e-3 so a zero quality
    never erases a row, and an all-cancelling mean falls back to the best row.
    """
    rows = np.asarray(embeddings, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"need a non-empty (n, dim) matrix, got shape {rows.shape}")
    w = np.clip(np.asarray(weights, dtype=np.float32).reshape(-1), 1e-3, None)
    if w.shape[0] != rows.shape[0]:
        raise ValueError(f"{rows.shape[0]} embeddings but {w.shape[0]} weights")
    mean = (rows * w[:, None]).sum(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-6:
        return rows[int(np.argmax(w))].copy()
    return (mean / norm).astype(np.float32)
