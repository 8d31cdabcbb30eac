"""FaceEngine with the real bundled models (buffalo_s) on the packages' sample photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.face.boxes import iou
from edge.face.engine import EMBED_CHUNK, FaceEngine, main_face, notable_faces, read_image
from edge.face.errors import EnrolmentError, ImageError, ModelPackError
from edge.face.models import BUFFALO_S_THRESHOLD, ModelConfig, ModelPack, resolve_pack
from edge.face.quality import QualityConfig
from edge.face.types import BBox, Detection
from tests.edge.conftest import TOM_HANKS, VECTRON_MODEL_DIR
from tests.edge.data_helpers import (
    crop_box,
    gradient,
    side_by_side,
    write_corrupt,
    write_image,
)

pytestmark = pytest.mark.models


# ---------------------------------------------------------------- model packs


def test_bundled_pack_resolves_without_network() -> None:
    pack = resolve_pack("buffalo_s")
    assert pack.detector_path.is_file() and pack.recognizer_path.is_file()
    assert pack.model_id == "buffalo_s/w600k_mbf"
    assert pack.default_threshold == BUFFALO_S_THRESHOLD
    assert "non-commercial" in pack.licence


def test_directory_pack_finds_detector_and_recogniser(tmp_path: Path) -> None:
    pack_dir = tmp_path / "mypack"
    pack_dir.mkdir()
    # Standard insightface pack names, plus a landmark model that must be skipped.
    (pack_dir / "det_500m.onnx").symlink_to(VECTRON_MODEL_DIR / "scrfd_500m_bnkps.onnx")
    (pack_dir / "2d106det.onnx").symlink_to(VECTRON_MODEL_DIR / "2d106det.onnx")
    (pack_dir / "w600k_mbf.onnx").symlink_to(VECTRON_MODEL_DIR / "w600k_mbf.onnx")
    pack = resolve_pack(str(pack_dir))
    assert pack.detector_path.name == "det_500m.onnx"
    assert pack.recognizer_path.name == "w600k_mbf.onnx"
    assert pack.model_id == "mypack/w600k_mbf"


def test_missing_pack_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-pack"
    with pytest.raises(ModelPackError, match="no-such-pack"):
        resolve_pack(str(missing))


def test_pack_without_recogniser_is_refused(tmp_path: Path) -> None:
    (tmp_path / "det_500m.onnx").symlink_to(VECTRON_MODEL_DIR / "scrfd_500m_bnkps.onnx")
    with pytest.raises(ModelPackError, match="no ArcFace recogniser"):
        resolve_pack(str(tmp_path))


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    bundled = resolve_pack("buffalo_s")
    gone = tmp_path / "w600k_gone.onnx"
    pack = ModelPack("broken", bundled.detector_path, gone, "test", 0.4)
    with pytest.raises(ModelPackError, match=r"w600k_gone\.onnx"):
        FaceEngine(pack, ModelConfig())


def test_corrupt_model_file_is_named(tmp_path: Path) -> None:
    bundled = resolve_pack("buffalo_s")
    bad = tmp_path / "det_bad.onnx"
    bad.write_bytes(b"not an onnx graph")
    pack = ModelPack("broken", bad, bundled.recognizer_path, "test", 0.4)
    with pytest.raises(ModelPackError, match=r"det_bad\.onnx"):
        FaceEngine(pack, ModelConfig())


def test_model_config_rejects_unknown_and_out_of_range_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        ModelConfig.model_validate({"pack": "buffalo_s", "det_szie": 640})
    with pytest.raises(ValueError):
        ModelConfig(det_size=650)  # not a multiple of 32
    with pytest.raises(ValueError):
        ModelConfig(threads=0)


def test_engine_attributes(engine: FaceEngine) -> None:
    assert engine.model_id == "buffalo_s/w600k_mbf"
    assert engine.embedding_dim == 512
    assert engine.threshold == engine.pack.default_threshold
    custom = FaceEngine.load(ModelConfig(match_threshold=0.5, threads=2))
    assert custom.threshold == 0.5


# ------------------------------------------------------------------ detection


def test_group_photo_detects_six_faces(engine: FaceEngine, t1_image: np.ndarray) -> None:
    dets = engine.detect(t1_image)
    assert len(dets) == 6
    scores = [d.det_score for d in dets]
    assert scores == sorted(scores, reverse=True)
    for d in dets:
        assert len(d.landmarks) == 5
        lx, ly = d.landmarks[0]
        assert d.bbox.x1 <= lx <= d.bbox.x2 and d.bbox.y1 <= ly <= d.bbox.y2
    # The photo path finds the same six faces, in the same place.
    photo = engine.detect_photo(t1_image)
    assert len(photo) == 6
    for d in dets:
        assert max(iou(d.bbox, p.bbox) for p in photo) > 0.8


def test_smaller_det_size_still_finds_the_group(engine: FaceEngine, t1_image: np.ndarray) -> None:
    small = engine.detect(t1_image, det_size=320)
    assert len(small) == 6
    odd = engine.detect(t1_image, det_size=300)  # rounded up to 320
    assert len(odd) == 6


def test_tight_crop_needs_padding(engine: FaceEngine, t1_image: np.ndarray) -> None:
    for det in engine.detect(t1_image):
        crop = crop_box(t1_image, det)
        # SCRFD cannot see a face that fills its whole input...
        assert engine.detect(crop) == []
        # ...but the padded photo path finds it, in the crop's own coordinates.
        found = engine.detect_photo(crop)
        assert len(found) == 1
        b = found[0].bbox
        h, w = crop.shape[:2]
        assert -0.25 * w < b.x1 < 0.25 * w and 0.75 * w < b.x2 < 1.25 * w
        assert -0.35 * h < b.y1 < 0.35 * h and 0.65 * h < b.y2 < 1.35 * h


def test_large_photos_keep_original_coordinates(
    engine: FaceEngine, t1_image: np.ndarray, tom_image: np.ndarray
) -> None:
    # A phone-sized photo is shrunk before padding; boxes still come back in its pixels.
    big = cv2.resize(t1_image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    ref = engine.detect(t1_image)
    found = engine.detect_photo(big)
    assert len(found) == 6
    for d in ref:
        scaled = BBox(d.bbox.x1 * 3, d.bbox.y1 * 3, d.bbox.x2 * 3, d.bbox.y2 * 3)
        assert max(iou(scaled, f.bbox) for f in found) > 0.7
    # A huge tight chip: the face fills 1500x1500 px and still needs the padding.
    huge_chip = cv2.resize(tom_image, (1500, 1500), interpolation=cv2.INTER_CUBIC)
    assert engine.detect(huge_chip) == []
    (face,) = engine.detect_photo(huge_chip)
    assert 0.4 * 1500 < face.bbox.width < 1.1 * 1500


def test_package_face_chip_needs_padding(engine: FaceEngine, tom_image: np.ndarray) -> None:
    assert tom_image.shape[:2] == (112, 112)
    assert engine.detect(tom_image) == []
    assert len(engine.detect_photo(tom_image)) == 1


def test_read_image_handles_grey_and_alpha(tmp_path: Path, tom_image: np.ndarray) -> None:
    grey = cv2.cvtColor(tom_image, cv2.COLOR_BGR2GRAY)
    assert read_image(grey).shape == (112, 112, 3)
    bgra = cv2.cvtColor(tom_image, cv2.COLOR_BGR2BGRA)
    assert read_image(bgra).shape == (112, 112, 3)
    path = write_image(tmp_path / "grey.png", grey)
    assert read_image(path).shape == (112, 112, 3)
    with pytest.raises(ImageError, match="float32"):
        read_image(tom_image.astype(np.float32))


# ---------------------------------------------------------- align and embed


def test_align_gives_recogniser_crop(engine: FaceEngine, t1_image: np.ndarray) -> None:
    det = engine.detect(t1_image)[0]
    crop = engine.align(t1_image, det)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert crop.std() > 10  # a face, not a black warp


def test_embeddings_normalised_and_batch_equals_single(
    engine: FaceEngine, t1_image: np.ndarray
) -> None:
    dets = engine.detect(t1_image)
    crops = [engine.align(t1_image, d) for d in dets]
    # More crops than one recogniser chunk, so chunking is exercised too.
    many = (crops * 4)[: EMBED_CHUNK + 3]
    batch = engine.embed_aligned(many)
    assert batch.shape == (len(many), 512) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for crop, row in zip(many, batch, strict=True):
        single = engine.embed_aligned([crop])[0]
        np.testing.assert_allclose(single, row, atol=1e-4)
    assert engine.embed_aligned([]).shape == (0, 512)
    np.testing.assert_allclose(engine.embed(t1_image, dets), batch[: len(dets)], atol=1e-4)


def test_same_person_matches_different_people_do_not(
    engine: FaceEngine, tom_image: np.ndarray, t1_image: np.ndarray
) -> None:
    ref = engine.enrol(tom_image).embedding
    variants = {
        "flipped": cv2.flip(tom_image, 1),
        "upscaled": cv2.resize(tom_image, (200, 200), interpolation=cv2.INTER_CUBIC),
        "brighter": cv2.convertScaleAbs(tom_image, alpha=1.2, beta=25),
        "darker": cv2.convertScaleAbs(tom_image, alpha=0.7, beta=0),
    }
    for name, img in variants.items():
        face = main_face(engine.detect_photo(img), img.shape)
        assert face is not None, name
        sim = float(engine.embed(img, [face])[0] @ ref)
        assert sim >= engine.threshold, (name, sim)

    emb = engine.embed(t1_image, engine.detect(t1_image))
    sims = emb @ emb.T
    off_diagonal = sims[~np.eye(len(emb), dtype=bool)]
    assert off_diagonal.max() < engine.threshold
    # And none of the six is Tom Hanks.
    assert float((emb @ ref).max()) < engine.threshold


# ---------------------------------------------------------------- quality


def test_quality_flags_turned_face(engine: FaceEngine, t1_image: np.ndarray) -> None:
    dets = engine.detect(t1_image)
    qualities = [engine.quality(t1_image, d) for d in dets]
    for q in qualities:
        assert 0.0 <= q.score <= 1.0 and 0.0 <= q.frontal <= 1.0 and 0.0 <= q.blur <= 1.0
    # One man in t1.jpg has his head turned ~55 degrees to the side: faces turned
    # that far still match (docs/model-packs.md), so he is usable but poor (a
    # warning) and ranks last; the old keypoint gate refused him.
    worst = min(qualities, key=lambda q: q.frontal)
    assert worst.reasons == () and worst.warnings == ("bad_pose",)
    assert sum(q.usable for q in qualities) == 6
    assert sum(bool(q.warnings) for q in qualities) == 1
    assert worst.score < min(q.score for q in qualities if q is not worst)


def test_quality_gates_can_be_configured(engine: FaceEngine, yao_image: np.ndarray) -> None:
    det = engine.detect_photo(yao_image)[0]
    assert engine.quality(yao_image, det).usable
    strict = FaceEngine(engine.pack, engine.config, QualityConfig(min_face_px=500))
    assert strict.quality(yao_image, det).reasons == ("too_small",)


# ---------------------------------------------------------------- enrolment


def test_enrol_one_face(engine: FaceEngine, yao_image: np.ndarray) -> None:
    face = engine.enrol(yao_image)
    assert face.model_id == engine.model_id
    assert face.quality.usable
    assert face.embedding.shape == (512,)
    assert abs(float(np.linalg.norm(face.embedding)) - 1.0) < 1e-5


def test_enrol_accepts_path_and_bytes(engine: FaceEngine) -> None:
    by_path = engine.enrol(TOM_HANKS).embedding
    by_bytes = engine.enrol(TOM_HANKS.read_bytes()).embedding
    np.testing.assert_allclose(by_path, by_bytes, atol=1e-5)


def test_enrol_no_face(engine: FaceEngine) -> None:
    with pytest.raises(EnrolmentError) as err:
        engine.enrol(gradient(), name="gradient.png")
    assert err.value.reason == "no_face"
    assert "gradient.png" in str(err.value)


def test_enrol_two_comparable_faces(
    engine: FaceEngine, tom_image: np.ndarray, yao_image: np.ndarray
) -> None:
    with pytest.raises(EnrolmentError) as err:
        engine.enrol(side_by_side(tom_image, yao_image))
    assert err.value.reason == "several_faces"


def test_small_bystander_does_not_block_enrolment(
    engine: FaceEngine, tom_image: np.ndarray
) -> None:
    canvas = np.full((600, 600, 3), 128, np.uint8)
    canvas[150:450, 150:450] = cv2.resize(tom_image, (300, 300))
    canvas[20:90, 500:570] = cv2.resize(tom_image, (70, 70))  # ~5% of the area
    dets = engine.detect_photo(canvas)
    assert len(dets) == 2  # the detector does see the bystander...
    assert len(notable_faces(dets, canvas.shape)) == 1  # ...but it is not of note
    face = engine.enrol(canvas)
    assert face.detection.bbox.width > 150


def test_enrol_refuses_blurred_and_tiny_faces(
    engine: FaceEngine, yao_image: np.ndarray, tom_image: np.ndarray
) -> None:
    # Blurred past the sharpness gate (relative sharpness ~0.0018 < 0.002).
    padded_tom = np.pad(tom_image, ((56, 56), (56, 56), (0, 0)), mode="edge")
    with pytest.raises(EnrolmentError) as err:
        engine.enrol(cv2.GaussianBlur(padded_tom, (0, 0), 4))
    assert err.value.reason == "too_blurry"
    # Blurred so far that the recogniser itself finds little identity: the
    # embedding-norm gate (the sharpness gate alone would let it through).
    with pytest.raises(EnrolmentError) as err:
        engine.enrol(cv2.GaussianBlur(yao_image, (0, 0), 12))
    assert err.value.reason == "low_quality" and "embedding norm" in str(err.value)
    # A ~12 px face.
    tiny = cv2.resize(yao_image, None, fx=0.12, fy=0.12, interpolation=cv2.INTER_AREA)
    with pytest.raises(EnrolmentError) as err:
        engine.enrol(tiny)
    assert err.value.reason == "too_small"


def test_enrol_corrupt_file_names_it(engine: FaceEngine, tmp_path: Path) -> None:
    bad = write_corrupt(tmp_path / "broken.jpg")
    with pytest.raises(EnrolmentError) as err:
        engine.enrol(bad)
    assert err.value.reason == "unreadable"
    assert "broken.jpg" in str(err.value)
    with pytest.raises(EnrolmentError, match=r"upload-7\.jpg") as err:
        engine.enrol(bad.read_bytes(), name="upload-7.jpg")
    assert err.value.reason == "unreadable"
    with pytest.raises(EnrolmentError) as err:
        engine.enrol(tmp_path / "missing.jpg")
    assert err.value.reason == "unreadable" and "missing.jpg" in str(err.value)


def test_truncated_jpeg_is_unreadable_or_enrols(engine: FaceEngine, tmp_path: Path) -> None:
    """Half a JPEG decodes partially or not at all; either way no cv2 traceback."""
    src = tmp_path / "yao.jpg"
    shutil.copy(VECTRON_MODEL_DIR / "yaoming.jpg", src)
    data = src.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    try:
        engine.enrol(cut)
    except EnrolmentError as exc:
        assert exc.reason in {
            "unreadable",
            "no_face",
            "too_blurry",
            "bad_pose",
            "low_score",
            "low_quality",
        }
        assert "cut.jpg" in str(exc)


def test_main_face_prefers_central_face() -> None:
    def det(x: float, y: float, size: float) -> Detection:
        return Detection(BBox(x, y, x + size, y + size), 0.9, ((0.0, 0.0),) * 5)

    central = det(100, 100, 50)
    corner = det(0, 0, 55)  # slightly larger but in the corner
    huge = det(150, 0, 100)
    assert main_face([corner, central], (250, 250, 3)) is central
    assert main_face([corner, central, huge], (250, 250, 3)) is huge
    assert main_face([], (250, 250, 3)) is None


def test_enrol_takes_the_centred_subject_over_an_off_centre_face(
    engine: FaceEngine, tom_image: np.ndarray, yao_image: np.ndarray
) -> None:
    """News-style photo: the subject centred, a comparable face at the far edge."""
    import cv2

    def face_height(img: np.ndarray) -> float:
        return engine.detect_photo(img)[0].bbox.height

    # Scale both photos so their faces are about 90 px: comparable faces.
    tom = cv2.resize(
        tom_image, None, fx=90 / face_height(tom_image), fy=90 / face_height(tom_image)
    )
    yao = cv2.resize(
        yao_image, None, fx=85 / face_height(yao_image), fy=85 / face_height(yao_image)
    )
    h = max(tom.shape[0], yao.shape[0]) + 40
    width = 3 * tom.shape[1] + 2 * yao.shape[1]
    canvas = np.full((h, width, 3), 128, np.uint8)
    x0 = (width - tom.shape[1]) // 2
    y0 = (h - tom.shape[0]) // 2
    canvas[y0 : y0 + tom.shape[0], x0 : x0 + tom.shape[1]] = tom
    canvas[20 : 20 + yao.shape[0], width - yao.shape[1] - 10 : width - 10] = yao
    assert len(notable_faces(engine.detect_photo(canvas), canvas.shape)) == 2

    face = engine.enrol(canvas)
    alone = engine.enrol(tom_image)
    assert float(face.embedding @ alone.embedding) > 0.6  # Tom, not Yao
    with pytest.raises(EnrolmentError) as err:  # side by side: nobody is the subject
        engine.enrol(side_by_side(tom_image, yao_image))
    assert err.value.reason == "several_faces"
