"""The face engine: SCRFD detection, quality, alignment and ArcFace embeddings.

A thin wrapper around insightface's ``model_zoo`` classes (``SCRFD``,
``ArcFaceONNX``) and ``face_align.norm_crop``. We build the ONNX Runtime
sessions ourselves (CPU provider, fixed intra-op threads, spinning off: on a
2-core box spinning threads cost ~30% per frame) and hand them to the model
classes, so insightface never picks providers, never downloads anything, and
never creates extra sessions per input size.

Everything returned is our own type (:mod:`edge.types`); insightface's
``Face`` dict does not leak out of this module.

One :class:`FaceEngine` is meant to be used from one thread at a time (the
detector keeps a small anchor cache); give each worker its own engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.boxes import nms
from edge.errors import EnrolmentError, ImageError, ModelPackError
from edge.models import ModelConfig, ModelPack, loadable_model, resolve_pack
from edge.quality import QualityConfig, assess, fuse_embeddings
from edge.reasons import LOW_QUALITY
from edge.sface import SFaceRecognizer
from edge.types import BBox, Detection, EnrolledFace, FaceQuality
from edge.yunet import YuNetDetector

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
"""A BGR uint8 image as the engine returns it."""
ImageLike = npt.NDArray[Any]
"""What the engine accepts: any ndarray (cv2's stubs type their results loosely);
the dtype and channels are checked at run time by :func:`as_bgr`."""

EMBED_CHUNK = 16
"""Aligned faces per recogniser call (batches give the same embeddings as singles)."""

PHOTO_PAD_RATIO = 0.5
"""Border added on every side of a still photo, as a share of its longer side.

SCRFD at det_size 640 misses about 30% of tight 250x250 face crops: a face that
fills the frame is larger than its biggest anchors. With the image padded to
twice its size the face fills a quarter of the detector input instead.
"""

NOTABLE_FACE_AREA = 0.25
"""A face counts for "several faces" only if its box area is at least this share of
the largest face's. News-style photos have small bystanders behind the subject;
a second face that big is a second subject (two people side by side)."""

NOTABLE_INSIDE = 0.9
"""A second face cut by the photo's edge (less than this share of its box inside
the image) is a bystander, not a second subject."""

CENTRED_SUBJECT = 0.12
"""A photo with several comparable faces still has one subject when exactly one face
is centred: its centre within this share of the photo's size from the middle
(normalised per axis) while every other notable face is at least
:data:`OFF_CENTRE` away. Portraits and news photos centre their subject (the
eval photos with a second comparable face: 29 of 30 are such); two people
posing side by side are both off-centre and stay refused."""

OFF_CENTRE = 0.25

_PHOTO_NMS_IOU = 0.4

UPRIGHT_MIN_DEG = 8.0
"""An enrolment face whose eye line is tilted more than this is turned upright and
detected again (:meth:`FaceEngine._upright`); below it the keypoints follow."""

UPRIGHT_PASSES = 3


CHIP_JPEG_QUALITY = 90
"""JPEG quality of an enrolment face chip: a 112x112 face at 90 is ~4-6 KB and shows
what a manager compares (eyes, brows, mouth) without visible blocks."""


def face_chip(aligned: Image) -> bytes | None:
    """The aligned face as a JPEG chip (what the server's desk check shows), or None."""
    ok, buf = cv2.imencode(".jpg", aligned, [cv2.IMWRITE_JPEG_QUALITY, CHIP_JPEG_QUALITY])
    return buf.tobytes() if ok else None


def read_image(source: ImageLike | bytes | Path | str, *, name: str | None = None) -> Image:
    """Decode a photo to a 3-channel BGR uint8 array.

    Accepts an array (grey, BGR or BGRA), encoded bytes or a file path. Raises
    :class:`ImageError` naming the file (or ``name``) when it cannot be decoded;
    OpenCV's own errors never escape.
    """
    label = name
    if isinstance(source, np.ndarray):
        return as_bgr(source, name=label or "<array>")
    if isinstance(source, (str, Path)):
        path = Path(source)
        label = label or str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{label}: cannot read file: {exc.strerror or exc}") from exc
    else:
        data = bytes(source)
        label = label or "<bytes>"
    if not data:
        raise ImageError(f"{label}: empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # some codecs raise instead of returning None
        raise ImageError(f"{label}: not a decodable image (OpenCV refused it)") from exc
    if img is None or img.size == 0:
        raise ImageError(f"{label}: not a decodable image (corrupt or unsupported format)")
    return np.ascontiguousarray(img, dtype=np.uint8)


def as_bgr(image: ImageLike, *, name: str = "<array>") -> Image:
    """Check an in-memory image and bring it to contiguous 3-channel BGR uint8."""
    if image.dtype != np.uint8:
        raise ImageError(f"{name}: expected a uint8 image, got {image.dtype}")
    arr = np.asarray(image, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if arr.ndim == 3 and arr.shape[2] == 4:
        return np.ascontiguousarray(arr[:, :, :3])  # drop alpha
    if arr.ndim == 3 and arr.shape[2] == 3:
        return np.ascontiguousarray(arr)
    raise ImageError(f"{name}: unsupported image shape {image.shape}")


def _session(path: Path, threads: int) -> object:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # Spinning threads busy-wait between ops; on a 2-core edge box that steals
    # the other session's core (75 ms vs 107 ms a frame measured).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types; name the file
        raise ModelPackError(f"cannot load ONNX model {path}: {exc}") from exc


class FaceEngine:
    """Detector + recogniser of one model pack. Create with :meth:`load`."""

    def __init__(
        self,
        pack: ModelPack,
        config: ModelConfig,
        quality_config: QualityConfig | None = None,
    ) -> None:
        self.pack = pack
        self.config = config
        self.quality_config = quality_config or QualityConfig()
        self.model_id: str = pack.model_id
        self.threshold: float = (
            pack.default_threshold if config.match_threshold is None else config.match_threshold
        )
        self._detector: Any
        self._recognizer: Any
        if pack.kind == "opencv_zoo":
            self._load_opencv_zoo(pack, config)
        else:
            self._load_insightface(pack, config)
        if not getattr(self._detector, "use_kps", False):
            raise ModelPackError(f"detector {pack.detector_path} has no keypoint outputs")
        # The pack's own detector threshold unless the config names one: a
        # default tuned for SCRFD would flood YuNet with clutter.
        explicit = "det_thresh" in config.model_fields_set
        self.det_thresh: float = config.det_thresh if explicit else pack.det_thresh
        self._detector.det_thresh = self.det_thresh
        self._rec_size = int(self._recognizer.input_size[0])
        dim = self._recognizer.output_shape[-1]
        if not isinstance(dim, int):
            raise ModelPackError(f"recogniser {pack.recognizer_path} has no fixed output size")
        self.embedding_dim: int = dim

    def _load_insightface(self, pack: ModelPack, config: ModelConfig) -> None:
        # Imported here: importing insightface pulls in skimage/onnx (~1 s).
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX
        from insightface.model_zoo.scrfd import SCRFD

        # static_shape_sessions=False: one dynamic session for every det_size.
        # insightface would otherwise build (and keep) a new session for each
        # input size, which with motion ROIs of varying size grows without bound;
        # measured speed is the same (640: 22 vs 20 ms, 320: 5.2 vs 5.5 ms).
        self._detector = SCRFD(
            model_file=str(pack.detector_path),
            session=_session(pack.detector_path, config.threads),
            static_shape_sessions=False,
        )
        self._recognizer = ArcFaceONNX(
            model_file=str(pack.recognizer_path),
            session=_session(pack.recognizer_path, config.threads),
        )

    def _load_opencv_zoo(self, pack: ModelPack, config: ModelConfig) -> None:
        # The shipped int8 graphs do not load in ONNX Runtime; a repaired copy is
        # made once and cached (edge.models.fix_graph).
        det_path = loadable_model(pack.detector_path, dynamic_input=True)
        rec_path = loadable_model(pack.recognizer_path, dynamic_batch=True)
        self._detector = YuNetDetector(_session(det_path, config.threads))
        self._recognizer = SFaceRecognizer(_session(rec_path, config.threads))

    @classmethod
    def load(
        cls, config: ModelConfig | None = None, *, quality: QualityConfig | None = None
    ) -> FaceEngine:
        """Resolve the configured pack and build both ONNX sessions (~1 s)."""
        config = config or ModelConfig()
        t0 = time.perf_counter()
        engine = cls(resolve_pack(config.pack), config, quality)
        log.info(
            "face engine %s loaded in %.2f s (det %s, threads %d, threshold %.3f)",
            engine.model_id,
            time.perf_counter() - t0,
            engine.pack.detector_path.name,
            config.threads,
            engine.threshold,
        )
        return engine

    # ------------------------------------------------------------------ detection

    def detect(self, image_bgr: ImageLike, *, det_size: int | None = None) -> list[Detection]:
        """Faces in a frame, best score first. ``det_size`` overrides the config's.

        The image is letterboxed into a ``det_size`` square (rounded up to a
        multiple of 32); small sizes (320) are fast for small frames or motion ROIs.
        """
        img = as_bgr(image_bgr)
        size = self.config.det_size if det_size is None else int(det_size)
        if size < 32:
            raise ValueError(f"det_size must be at least 32, got {size}")
        size = -(-size // 32) * 32
        boxes, kpss = self._detector.detect(img, input_size=(size, size))
        return _to_detections(boxes, kpss)

    def detect_photo(self, image_bgr: ImageLike) -> list[Detection]:
        """Faces in a still photo, tight crops included; coordinates of the original.

        Pads the photo (:data:`PHOTO_PAD_RATIO`) so a face that fills the frame is
        found. A large photo is first shrunk so the padded result is ``det_size``
        (no 8000 px padded copies of phone photos); as the padded pass then sees
        the photo at reduced resolution, such photos also get a pass on the
        unpadded photo so small faces are not lost, and both are merged with
        non-maximum suppression.
        """
        img = as_bgr(image_bgr)
        h, w = img.shape[:2]
        det_size = self.config.det_size
        scale = min(1.0, det_size / (max(h, w) * (1 + 2 * PHOTO_PAD_RATIO)))
        small = img
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), np.uint8)
        pad = round(max(small.shape[:2]) * PHOTO_PAD_RATIO)
        padded = np.pad(small, ((pad, pad), (pad, pad), (0, 0)))  # black border
        sx = w / small.shape[1]
        sy = h / small.shape[0]
        dets = [_shift(d, -pad, -pad, sx, sy) for d in self.detect(padded)]
        if scale < 1.0:
            dets = nms(dets + self.detect(img), _PHOTO_NMS_IOU)
        return dets

    # ------------------------------------------------------------ quality, embed

    def align(self, image_bgr: ImageLike, det: Detection) -> Image:
        """The recogniser's input: a 112x112 BGR crop aligned on the 5 keypoints."""
        from insightface.utils import face_align

        kps = np.asarray(det.landmarks, dtype=np.float32)
        if kps.shape != (5, 2):
            raise ValueError(f"alignment needs 5 landmarks, got shape {kps.shape}")
        crop = face_align.norm_crop(as_bgr(image_bgr), landmark=kps, image_size=self._rec_size)
        return np.ascontiguousarray(crop, dtype=np.uint8)

    def quality(
        self, image_bgr: ImageLike, det: Detection, *, aligned: ImageLike | None = None
    ) -> FaceQuality:
        """Quality of one detected face under the engine's :class:`QualityConfig`."""
        crop = self.align(image_bgr, det) if aligned is None else aligned
        return assess(det, crop, self.quality_config)

    def embed_aligned(self, crops: Sequence[ImageLike]) -> npt.NDArray[np.float32]:
        """Embeddings of aligned crops: shape (n, dim), float32, L2-normalised."""
        return self._embed_with_norms(crops)[0]

    def _embed_with_norms(
        self, crops: Sequence[ImageLike]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(L2-normalised embeddings, their norms before normalisation)."""
        out = np.empty((len(crops), self.embedding_dim), dtype=np.float32)
        for start in range(0, len(crops), EMBED_CHUNK):
            chunk = [as_bgr(c) for c in crops[start : start + EMBED_CHUNK]]
            for c in chunk:
                if c.shape[:2] != (self._rec_size, self._rec_size):
                    raise ValueError(
                        f"aligned crops must be {self._rec_size}x{self._rec_size}, got {c.shape}"
                    )
            feats = np.asarray(self._recognizer.get_feat(chunk), dtype=np.float32)
            out[start : start + len(chunk)] = feats
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        raw = norms[:, 0].copy()
        np.maximum(norms, 1e-12, out=norms)
        out /= norms
        return out, raw

    def embed(self, image_bgr: ImageLike, dets: Sequence[Detection]) -> npt.NDArray[np.float32]:
        """Align every detection and embed them: shape (len(dets), dim)."""
        img = as_bgr(image_bgr)
        return self.embed_aligned([self.align(img, d) for d in dets])

    # ------------------------------------------------------------------ enrolment

    def enrol(self, image: ImageLike | bytes | Path, *, name: str | None = None) -> EnrolledFace:
        """The one usable face of an enrolment photo, or :class:`EnrolmentError`.

        Rule for "several faces" (:func:`notable_faces`): a second face counts only
        if its box area is at least :data:`NOTABLE_FACE_AREA` of the largest face's
        and it is not cut by the photo's edge; a small or half-visible bystander
        does not make the photo ambiguous, and neither does a comparable face far
        off-centre when the other is centred (:func:`centred_subject`). Reason codes:
        unreadable, no_face, several_faces, too_small, too_blurry, bad_pose,
        low_score, low_quality (the first failing gate; the message lists all of
        them). A usable but poor face is enrolled with ``quality.warnings`` set.
        """
        label = name or (str(image) if isinstance(image, (str, Path)) else "photo")
        try:
            img = read_image(image, name=label)
        except ImageError as exc:
            raise EnrolmentError("unreadable", str(exc)) from exc
        faces = notable_faces(self.detect_photo(img), img.shape)
        if not faces:
            raise EnrolmentError("no_face", f"{label}: no face found")
        if len(faces) > 1:
            faces = centred_subject(faces, img.shape)
        if len(faces) > 1:
            raise EnrolmentError(
                "several_faces",
                f"{label}: {len(faces)} faces of comparable size; enrolment needs exactly one",
            )
        img, det = self._upright(img, faces[0])
        crop = self.align(img, det)
        quality = assess(det, crop, self.quality_config)
        qc = self.quality_config
        if quality.reasons:
            detail = {
                "too_small": f"face {quality.size_px:.0f} px < {qc.min_face_px:.0f} px",
                "too_blurry": (
                    f"sharpness {quality.relative_sharpness:.4f} < {qc.min_sharpness:.4f}"
                ),
                "bad_pose": f"head turned {quality.yaw_deg:.0f} deg >= {qc.max_yaw_deg:.0f} deg",
                "low_score": f"detector score {quality.det_score:.2f} < {qc.min_det_score:.2f}",
            }
            raise EnrolmentError(
                quality.reasons[0],
                f"{label}: face not usable: " + "; ".join(detail[r] for r in quality.reasons),
            )
        embedding, norm = self._embed_with_norms([crop])
        quality = _with_norm(quality, float(norm[0]), self.pack)
        if quality.reasons:
            raise EnrolmentError(
                quality.reasons[0],
                f"{label}: face not usable: the recogniser rates it {norm[0]:.1f} "
                f"< {self.pack.min_embedding_norm:.1f} (embedding norm; blurred, tiny or "
                "hidden face)",
            )
        embedding = embedding[0]
        return EnrolledFace(
            embedding=embedding,
            quality=quality,
            detection=det,
            model_id=self.model_id,
            chip=face_chip(crop),
        )

    def _upright(self, img: Image, det: Detection) -> tuple[Image, Detection]:
        """The photo turned so the face's eye line is level, and the face found there.

        In-plane roll must not count against a face, and alignment only removes
        it if the keypoints follow the roll: YuNet's do not (a face rolled 45 deg
        reads as ~21 deg, and SFace then matches 21% of the person's other photos
        instead of 94%). So an enrolment photo whose eye line is tilted more than
        :data:`UPRIGHT_MIN_DEG` is rotated about the face and detected again (up to
        :data:`UPRIGHT_PASSES` times, each pass removing most of what is left); the
        face nearest the old one's centre is kept. Stills only: never on the
        video hot path.
        """
        for _ in range(UPRIGHT_PASSES):
            (lx, ly), (rx, ry) = det.landmarks[0], det.landmarks[1]
            angle = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
            if abs(angle) < UPRIGHT_MIN_DEG:
                break
            b = det.bbox
            centre = ((b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2)
            h, w = img.shape[:2]
            m = cv2.getRotationMatrix2D(centre, angle, 1.0)
            turned = np.asarray(
                cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE), np.uint8
            )
            found = [
                d
                for d in self.detect_photo(turned)
                if d.bbox.x1 <= centre[0] <= d.bbox.x2 and d.bbox.y1 <= centre[1] <= d.bbox.y2
            ]
            if not found:
                break
            img, det = turned, max(found, key=lambda d: _area(d.bbox))
        return img, det

    def enrol_many(
        self,
        images: Sequence[ImageLike | bytes | Path],
        *,
        names: Sequence[str] | None = None,
    ) -> MultiEnrolment:
        """Enrol several photos of ONE person and fuse them, weighted by quality.

        Each photo goes through :meth:`enrol` (exactly one usable face); photos
        that fail are reported in ``failures``, not fatal, as long as one photo
        is usable. Raises :class:`EnrolmentError` (the first photo's reason, every
        photo's message) when none is. The photos are trusted to show the same
        person: checking that is the caller's job (the registry importer refuses
        one face filed under two people).
        """
        if not images:
            raise EnrolmentError("no_face", "no enrolment photos given")
        labels = (
            list(names)
            if names is not None
            else [
                str(img) if isinstance(img, (str, Path)) else f"photo {k + 1}"
                for k, img in enumerate(images)
            ]
        )
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} photos but {len(labels)} names")
        faces: list[EnrolledFace] = []
        used: list[str] = []
        failures: list[tuple[str, EnrolmentError]] = []
        for image, label in zip(images, labels, strict=True):
            try:
                faces.append(self.enrol(image, name=label))
                used.append(label)
            except EnrolmentError as exc:
                failures.append((label, exc))
        if not faces:
            raise EnrolmentError(
                failures[0][1].reason,
                f"none of {len(images)} photos is usable: "
                + "; ".join(str(exc) for _, exc in failures),
            )
        fused = fuse_embeddings(
            np.stack([f.embedding for f in faces]), [f.quality.score for f in faces]
        )
        best = max(faces, key=lambda f: f.quality.score)
        face = EnrolledFace(
            embedding=fused, quality=best.quality, detection=best.detection, model_id=self.model_id
        )
        return MultiEnrolment(face, tuple(faces), tuple(used), tuple(failures))


@dataclass(frozen=True, slots=True)
class MultiEnrolment:
    """Several enrolment photos of one person, fused into one template."""

    face: EnrolledFace
    """The fused template: ``embedding`` is the quality-weighted mean of the usable
    photos' embeddings; ``quality`` and ``detection`` are the best photo's."""
    faces: tuple[EnrolledFace, ...]
    """Each usable photo's own face, in input order (for keeping every template)."""
    used: tuple[str, ...]
    """Names of the photos that went into the template, in input order."""
    failures: tuple[tuple[str, EnrolmentError], ...]
    """(name, error) of every photo that could not be used."""


# ---------------------------------------------------------------------- helpers


def _with_norm(quality: FaceQuality, norm: float, pack: ModelPack) -> FaceQuality:
    """``quality`` with the recogniser's embedding norm and its gate / warning applied.

    For ArcFace-family recognisers the norm before normalisation tracks how much
    identity the network found in the crop: blurred, tiny or hidden faces come
    out short (measured gates per pack: :class:`edge.models.ModelPack`).
    """
    reasons, warnings = quality.reasons, quality.warnings
    if norm < pack.min_embedding_norm:
        reasons = (*reasons, LOW_QUALITY)
    elif norm < pack.warn_embedding_norm and LOW_QUALITY not in warnings:
        warnings = (*warnings, LOW_QUALITY)
    return replace(quality, embedding_norm=norm, reasons=reasons, warnings=warnings)


def notable_faces(
    dets: Sequence[Detection], shape: tuple[int, ...] | None = None
) -> list[Detection]:
    """The faces that make a photo ambiguous for enrolment, largest first.

    A face is of note when its box area is at least :data:`NOTABLE_FACE_AREA` of
    the largest face's and, given the image ``shape``, at least
    :data:`NOTABLE_INSIDE` of its box lies inside the image: news photos have
    bystanders behind the subject or cut by the frame edge, which are not a
    second subject. The largest face is always kept.
    """
    if not dets:
        return []
    ranked = sorted(dets, key=lambda d: -_area(d.bbox))
    biggest = _area(ranked[0].bbox)
    keep = [ranked[0]]
    for d in ranked[1:]:
        if _area(d.bbox) < NOTABLE_FACE_AREA * biggest:
            continue
        if shape is not None and _inside_share(d.bbox, shape) < NOTABLE_INSIDE:
            continue
        keep.append(d)
    return keep


def _centre_offset(d: Detection, shape: tuple[int, ...]) -> float:
    h, w = shape[:2]
    cx = (d.bbox.x1 + d.bbox.x2) / 2 / max(w, 1) - 0.5
    cy = (d.bbox.y1 + d.bbox.y2) / 2 / max(h, 1) - 0.5
    return float(np.hypot(cx, cy))


def centred_subject(faces: Sequence[Detection], shape: tuple[int, ...]) -> list[Detection]:
    """``[subject]`` when exactly one of several comparable faces is centred, else ``faces``.

    See :data:`CENTRED_SUBJECT`: the subject sits within that offset of the
    middle and every other face at least :data:`OFF_CENTRE` away.
    """
    ranked = sorted(faces, key=lambda d: _centre_offset(d, shape))
    if len(ranked) < 2:
        return list(faces)
    if _centre_offset(ranked[0], shape) <= CENTRED_SUBJECT and all(
        _centre_offset(d, shape) >= OFF_CENTRE for d in ranked[1:]
    ):
        return [ranked[0]]
    return list(faces)


def _area(b: BBox) -> float:
    return max(b.width, 0.0) * max(b.height, 0.0)


def _inside_share(b: BBox, shape: tuple[int, ...]) -> float:
    h, w = shape[:2]
    clipped = BBox(max(b.x1, 0.0), max(b.y1, 0.0), min(b.x2, float(w)), min(b.y2, float(h)))
    total = _area(b)
    return _area(clipped) / total if total > 0 else 0.0


def main_face(dets: Sequence[Detection], shape: tuple[int, ...]) -> Detection | None:
    """The subject of a photo: the largest face, discounted by distance from centre.

    LFW-style photos label the central face and have bystanders; web photos
    label the largest. Score = area x (1 - normalised centre distance / 2), so a
    central face wins over a slightly larger off-centre one, never over a much
    larger one.
    """
    if not dets:
        return None
    h, w = shape[:2]
    diag = float(np.hypot(w, h)) / 2 or 1.0

    def score(d: Detection) -> float:
        cx = (d.bbox.x1 + d.bbox.x2) / 2
        cy = (d.bbox.y1 + d.bbox.y2) / 2
        off = min(1.0, float(np.hypot(cx - w / 2, cy - h / 2)) / diag)
        return max(d.bbox.width, 0.0) * max(d.bbox.height, 0.0) * (1.0 - off / 2)

    return max(dets, key=score)


def _to_detections(
    boxes: npt.NDArray[np.float32], kpss: npt.NDArray[np.float32] | None
) -> list[Detection]:
    out: list[Detection] = []
    if kpss is None:
        raise ModelPackError("detector returned no keypoints")
    for row, kps in zip(boxes, kpss, strict=True):
        x1, y1, x2, y2, score = (float(v) for v in row[:5])
        out.append(
            Detection(
                bbox=BBox(x1, y1, x2, y2),
                det_score=score,
                landmarks=tuple((float(x), float(y)) for x, y in kps),
            )
        )
    out.sort(key=lambda d: -d.det_score)
    return out


def _shift(det: Detection, dx: float, dy: float, sx: float = 1.0, sy: float = 1.0) -> Detection:
    """Translate by (dx, dy), then scale by (sx, sy): padded/resized -> original pixels."""
    b = det.bbox
    return Detection(
        bbox=BBox((b.x1 + dx) * sx, (b.y1 + dy) * sy, (b.x2 + dx) * sx, (b.y2 + dy) * sy),
        det_score=det.det_score,
        landmarks=tuple(((x + dx) * sx, (y + dy) * sy) for x, y in det.landmarks),
    )
