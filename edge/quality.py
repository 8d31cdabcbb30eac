"""Face quality: is this face good enough to enrol, or to be a track's best shot?

Cheap measurements, each with a gate (and a warning level) in :class:`QualityConfig`:

* size: the shorter side of the detector box, in pixels of the analysed image.
* sharpness: variance of the Laplacian of the aligned 112x112 face (centre
  region, so the black warp border does not count as an edge) over the
  intensity variance there (contrast-free: a dark photo is not a blurred one).
* pose: the head's yaw from the 5 keypoints (:func:`head_pose`, ``cv2.solvePnP``
  on a mean face). In-plane roll never counts: alignment removes it. The
  keypoint ``frontal`` score only ranks faces and warns.
* the detector's own score.
* at enrolment only, the recogniser's own signal: the embedding norm before
  normalisation (:meth:`edge.engine.FaceEngine.enrol`, per pack in
  :class:`edge.models.ModelPack`).

The combined ``score`` ranks faces (e.g. the best k of a track); the gates
decide usability, and only refuse what the recogniser cannot use (see the
measurements in docs/model-packs.md). Reason codes are the enrolment error
codes of :class:`edge.errors.EnrolmentError`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from edge.reasons import BAD_POSE, LOW_SCORE, TOO_BLURRY, TOO_SMALL
from edge.types import Detection, FaceQuality

# Every gate below was chosen with bench/quality_gates.py on ../shared/eval (ORL
# left out: 1,050 photos of 149 people plus 2,831 degraded copies of each
# person's first photo: roll, blur, downscale, JPEG, dark, crops), fitted on the
# identities of one hash half and checked on the other (docs/model-packs.md has
# the tables). The rule: refuse a face only where the faces beyond the gate match
# fewer than 10% of the person's other photos at the pack's threshold (a clean
# photo matches ~93%): that is what the recogniser cannot use. A refused person's
# probes are all misses, so anything a template still finds is worth enrolling.
# Between the gate and the warning level a face is usable but poor: enrolled,
# with a warning.


class QualityConfig(BaseModel):
    """Quality gates; a face failing any gate is not usable (enrolment refuses it).

    ``warn_*``: a usable face below these is poor (``FaceQuality.warnings``): it is
    enrolled, and the registry import report says so.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_face_px: float = Field(
        default=20.0,
        ge=8.0,
        le=1024.0,
        description=(
            "Minimum shorter side of the face box in pixels. Measured on photos "
            "downscaled on purpose (buffalo_s / sface): 12-14 px faces match 19% / 18% of "
            "the person's other photos, 14-18 px ~50% / 60%, 20-24 px 85% / 90%, 32+ px "
            "like the originals (the fit gives 14). 20, not 14: real small faces are worse "
            "than clean downscales (originals of 24-32 px match 17% / 43%)."
        ),
    )
    warn_face_px: float = Field(
        default=32.0,
        ge=8.0,
        le=1024.0,
        description="Below this a usable face is poor (matches fall off under 32 px).",
    )
    full_size_px: float = Field(
        default=80.0,
        gt=0.0,
        le=4096.0,
        description=(
            "Face size at which the size part of the ranking score saturates (a bigger "
            "face is not a better one beyond it); ranking only, never a gate."
        ),
    )
    min_sharpness: float = Field(
        default=0.002,
        ge=0.0,
        le=1.0,
        description=(
            "Minimum relative sharpness (Laplacian variance over intensity variance of "
            "the aligned face's centre; contrast-free, so dark but sharp photos pass). "
            "Measured: below 0.002 a face matches 17% of the person's other photos, "
            "0.002-0.004 27-31%, 0.01-0.015 56-59%, above 0.03 ~91% (fit: 0.002 "
            "buffalo_s; sface's fit is lower and its norm gate does the work)."
        ),
    )
    warn_sharpness: float = Field(
        default=0.015,
        ge=0.0,
        le=1.0,
        description="Below this relative sharpness a usable face is poor.",
    )
    sharpness_half: float = Field(
        default=100.0,
        gt=0.0,
        le=10_000.0,
        description=(
            "Raw Laplacian variance that maps to 0.5 in the ranking score's sharpness "
            "part (``FaceQuality.blur``); ranking only."
        ),
    )
    max_yaw_deg: float = Field(
        default=70.0,
        ge=10.0,
        le=90.0,
        description=(
            "Largest head turn (|yaw| from cv2.solvePnP on a mean 5-point face) of a "
            "usable face. In-plane roll never counts (alignment removes it). Measured "
            "(originals, buffalo_s): faces turned 50-65 deg still match 79-98% of the "
            "person's other photos, the 6 turned 65-80 deg 0-36% (too few to fit on half "
            "the identities: a judgement, documented in docs/model-packs.md)."
        ),
    )
    warn_frontal: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description=(
            "Below this keypoint frontal score a usable face is poor (turned past ~45 deg). "
            "Measured: frontal 0-0.01 matches 69% (buffalo_s) / 78% (sface) of the "
            "person's other photos, 0.2-0.5 84-100%, like clean photos. It used to be a "
            "gate at 0.35, which refused faces matching 69-100% of the time (the "
            "keypoint yaw part saturates at ~45 deg)."
        ),
    )
    min_det_score: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description=(
            "Minimum detector score of a usable face (0.5: SCRFD's own threshold; "
            "YuNet's is 0.8, so it never binds there). Measured: 0.5-0.6 matches 45%."
        ),
    )
    warn_det_score: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="Below this detector score a usable face is poor.",
    )


def _centre_gray(aligned_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    gray = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY) if aligned_bgr.ndim == 3 else aligned_bgr
    h, w = gray.shape[:2]
    # Central 70%: the aligned crop's corners are often black warp border whose
    # hard edge would read as "sharp".
    y0, x0 = int(h * 0.15), int(w * 0.15)
    return np.asarray(gray[y0 : h - y0, x0 : w - x0])


def sharpness(aligned_bgr: npt.NDArray[np.uint8], half: float) -> tuple[float, float]:
    """(normalised sharpness in [0, 1], raw Laplacian variance) of an aligned face."""
    var = float(cv2.Laplacian(_centre_gray(aligned_bgr), cv2.CV_64F).var())
    return var / (var + half), var


def relative_sharpness(aligned_bgr: npt.NDArray[np.uint8]) -> float:
    """Laplacian variance over intensity variance of the aligned face's centre.

    Contrast-free: a dark or low-contrast but sharp photo keeps its value (the
    raw Laplacian variance of a photo darkened 4x falls 16x, though the
    recogniser matches it as well as the original), while blur lowers the
    high-frequency part only.
    """
    return _sharpness_parts(_centre_gray(aligned_bgr))[1]


def _sharpness_parts(centre: npt.NDArray[np.uint8]) -> tuple[float, float]:
    """(raw Laplacian variance, relative sharpness) of a grey face centre, in one pass."""
    lap = float(cv2.Laplacian(centre, cv2.CV_64F).var())
    _, std = cv2.meanStdDev(centre)
    return lap, lap / max(float(std[0, 0]) ** 2, 1.0)


def frontal_score(landmarks: tuple[tuple[float, float], ...]) -> float:
    """Frontal score in [0, 1] from 5 keypoints (left eye, right eye, nose, mouth l, r).

    1 for a frontal face; falls with yaw (nose off the eyes' midline) and pitch
    (nose too near the eye or mouth line); 0 for implausible geometry (eyes in
    the wrong order, mouth above the eyes), which is what profile faces and
    false detections produce. See :func:`frontal_parts`.
    """
    return frontal_parts(landmarks)[2]


def frontal_parts(landmarks: tuple[tuple[float, float], ...]) -> tuple[float, float, float]:
    """(yaw part, pitch part, frontal score), each in [0, 1], from 5 keypoints.

    Everything is measured in the eye-line frame, so in-plane roll never counts.
    """
    if len(landmarks) != 5:
        return 0.0, 0.0, 0.0
    pts = np.asarray(landmarks, dtype=np.float64)
    le, re, nose, ml, mr = pts
    eye_vec = re - le
    iod = float(np.hypot(*eye_vec))
    if iod < 1e-6:
        return 0.0, 0.0, 0.0
    # Rotate into the eye-line frame so in-plane roll does not count as yaw.
    c, s = eye_vec / iod
    rot = np.array([[c, s], [-s, c]])
    nose_r, ml_r, mr_r = (rot @ (p - le) for p in (nose, ml, mr))
    mouth_r = (ml_r + mr_r) / 2
    if mouth_r[1] <= 0 or nose_r[1] <= 0 or mr_r[0] <= ml_r[0]:
        return 0.0, 0.0, 0.0
    # Yaw: nose (and mouth) horizontal position relative to the eyes, 0.5 = centred.
    nose_x = nose_r[0] / iod
    mouth_x = mouth_r[0] / iod
    yaw_dev = max(abs(nose_x - 0.5), abs(mouth_x - 0.5) * 0.5)
    yaw = max(0.0, 1.0 - yaw_dev / 0.5)  # nose at an eye -> 0
    # Pitch: nose height between the eye line (0) and mouth line (1); frontal
    # faces sit near 0.55 in the ArcFace template.
    nose_y = nose_r[1] / mouth_r[1]
    pitch = max(0.0, 1.0 - abs(nose_y - 0.55) / 0.45)
    frontal = float(math.sqrt(yaw * pitch)) if yaw > 0 and pitch > 0 else 0.0
    return float(yaw), float(pitch), frontal


def assess(
    det: Detection, aligned_bgr: npt.NDArray[np.uint8], config: QualityConfig
) -> FaceQuality:
    """Measure one detected face (given its aligned crop) and apply the gates.

    Runs per detected face on the pipeline's hot path: the 3D pose
    (:func:`head_pose`, ~0.5 ms) is only solved when the keypoints say the face
    is turned past ~45 deg (keypoint yaw part 0, ~2% of faces); below that it
    cannot reach the yaw gate.
    """
    size = float(min(det.bbox.width, det.bbox.height))
    raw_var, rel_sharp = _sharpness_parts(_centre_gray(aligned_bgr))
    sharp = raw_var / (raw_var + config.sharpness_half)
    yaw_part, _, frontal = frontal_parts(det.landmarks)
    yaw = abs(head_pose(det.landmarks)[0]) if yaw_part <= 0.0 else 0.0
    reasons: list[str] = []
    warnings: list[str] = []
    if size < config.min_face_px:
        reasons.append(TOO_SMALL)
    elif size < config.warn_face_px:
        warnings.append(TOO_SMALL)
    if rel_sharp < config.min_sharpness:
        reasons.append(TOO_BLURRY)
    elif rel_sharp < config.warn_sharpness:
        warnings.append(TOO_BLURRY)
    if yaw >= config.max_yaw_deg:
        reasons.append(BAD_POSE)
    elif frontal < config.warn_frontal:
        warnings.append(BAD_POSE)
    if det.det_score < config.min_det_score:
        reasons.append(LOW_SCORE)
    elif det.det_score < config.warn_det_score:
        warnings.append(LOW_SCORE)
    size_factor = min(1.0, size / config.full_size_px)
    # The ranking score keeps the keypoint frontal score (floored: a usable side
    # view still ranks below a frontal one, but is not zero).
    parts = (size_factor, sharp, max(frontal, 0.05), float(det.det_score))
    score = float(np.prod([max(p, 0.0) for p in parts]) ** (1.0 / len(parts)))
    return FaceQuality(
        score=min(1.0, score),
        size_px=size,
        blur=sharp,
        det_score=float(det.det_score),
        frontal=frontal,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        relative_sharpness=rel_sharp,
        yaw_deg=yaw,
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


# Mean 3D positions (mm) of the 5 keypoints in the detector's order (image-left
# eye, image-right eye, nose tip, image-left and image-right mouth corner), in a
# head frame with x to the image right, y down and z away from the camera. Eyes
# and mouth corners sit ~2-2.5 cm behind the nose tip. Rounded from the usual
# 68-point mean face (eye centres, nose tip, mouth corners).
_FACE_MODEL_5 = np.array(
    [
        [-31.0, -32.0, 24.0],
        [31.0, -32.0, 24.0],
        [0.0, 0.0, 0.0],
        [-25.0, 30.0, 22.0],
        [25.0, 30.0, 22.0],
    ],
    dtype=np.float64,
)


def head_pose(landmarks: tuple[tuple[float, float], ...]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 5 keypoints, by ``cv2.solvePnP`` on a mean face.

    Roll is the in-plane rotation, which alignment removes; yaw and pitch are the
    out-of-plane turns that hide part of the face. The focal length is taken as
    the inter-keypoint span times 4 (a portrait lens: the pose barely depends on
    it). Implausible geometry (fewer than 5 points) gives (90, 90, 0).
    """
    if len(landmarks) != 5:
        return 90.0, 90.0, 0.0
    pts = np.asarray(landmarks, dtype=np.float64)
    centre = pts.mean(axis=0)
    span = float(np.ptp(pts, axis=0).max()) or 1.0
    f = 4.0 * span
    cam = np.array([[f, 0.0, centre[0]], [0.0, f, centre[1]], [0.0, 0.0, 1.0]])
    # Start from a frontal face at the distance the span implies (the model
    # spans ~62 mm): iterative PnP from there does not flip to the mirror pose.
    rvec0 = np.zeros((3, 1))
    tvec0 = np.array([[0.0], [0.0], [f * 62.0 / span]])
    ok, rvec, _ = cv2.solvePnP(
        _FACE_MODEL_5,
        pts,
        cam,
        None,
        rvec=rvec0,
        tvec=tvec0,
        useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        return 90.0, 90.0, 0.0
    r, _ = cv2.Rodrigues(rvec)
    # R = Rz(roll) @ Ry(yaw) @ Rx(pitch) in the camera frame (x right, y down, z ahead).
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, -float(r[2, 0])))))
    pitch = math.degrees(math.atan2(float(r[2, 1]), float(r[2, 2])))
    roll = math.degrees(math.atan2(float(r[1, 0]), float(r[0, 0])))
    return yaw, pitch, roll
