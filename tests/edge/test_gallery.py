"""Gallery: building from folders (real models) and from templates, 1:N matching."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import GalleryError
from edge.face.engine import FaceEngine, main_face
from edge.gallery import Gallery, Match, Template
from tests.edge.data_helpers import gradient, write_corrupt, write_image


def _unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


# ------------------------------------------------------ from_templates (no model)


def test_similarity_is_max_over_an_identitys_templates() -> None:
    gallery = Gallery.from_templates(
        [
            Template("alice", _unit(1, 0, 0), "m/1"),
            Template("bob", _unit(0, 1, 0), "m/1"),
            Template("alice", _unit(0, 0, 1), "m/1"),  # a second, different photo
        ],
        model_id="m/1",
        threshold=0.5,
    )
    assert gallery.identities == ("alice", "bob")
    probes = np.stack([_unit(0, 0.1, 1), _unit(0.2, 1, 0), _unit(1, 1, 1)])
    m = gallery.match(probes)
    assert m[0].identity == "alice" and m[0].best == "alice"
    assert m[0].similarity == pytest.approx(float(_unit(0, 0.1, 1) @ _unit(0, 0, 1)), abs=1e-6)
    assert m[1].identity == "bob"
    # (1,1,1)/sqrt3 is 0.577 from every axis: best is reported, decision only above 0.6.
    strict = gallery.match(probes[2], threshold=0.6)[0]
    assert strict.identity is None and strict.best in {"alice", "bob"}
    assert strict.similarity == pytest.approx(1 / np.sqrt(3), abs=1e-6)
    sims = gallery.similarities(probes)
    assert sims.shape == (3, 2)


def test_templates_of_another_model_are_refused() -> None:
    with pytest.raises(GalleryError, match="other/model"):
        Gallery.from_templates(
            [Template("a", _unit(1, 0), "m/1"), Template("b", _unit(0, 1), "other/model")],
            model_id="m/1",
            threshold=0.4,
        )


def test_match_refuses_other_model_and_dimension() -> None:
    gallery = Gallery.from_templates(
        [Template("a", _unit(1, 0, 0), "m/1")], model_id="m/1", threshold=0.4
    )
    with pytest.raises(GalleryError, match="sface"):
        gallery.match(_unit(1, 0, 0)[None, :], model_id="opencv/sface")
    with pytest.raises(GalleryError, match="4 values"):
        gallery.match(_unit(1, 0, 0, 0)[None, :])
    assert gallery.match(_unit(1, 0, 0), model_id="m/1")[0].identity == "a"


def test_empty_gallery_matches_nobody() -> None:
    gallery = Gallery.from_templates([], model_id="m/1", threshold=0.4)
    assert gallery.match(np.zeros((2, 8), np.float32)) == [Match(None, None, -1.0)] * 2


# ----------------------------------------------------- from_folder (real models)


@pytest.mark.models
def test_gallery_from_folder_matches_people(
    engine: FaceEngine,
    tmp_path: Path,
    tom_image: np.ndarray,
    yao_image: np.ndarray,
    t1_image: np.ndarray,
) -> None:
    write_image(tmp_path / "g" / "tom" / "1.png", tom_image)
    write_image(tmp_path / "g" / "yao" / "1.jpg", yao_image)
    (tmp_path / "g" / "tom" / "notes.txt").write_text("not a photo, ignored")
    gallery = Gallery.from_folder(tmp_path / "g", engine)
    assert gallery.identities == ("tom", "yao")
    assert gallery.model_id == engine.model_id and gallery.threshold == engine.threshold

    flipped = cv2.flip(tom_image, 1)
    face = main_face(engine.detect_photo(flipped), flipped.shape)
    assert face is not None
    m = gallery.match(engine.embed(flipped, [face]), model_id=engine.model_id)[0]
    assert (m.identity, m.best) == ("tom", "tom") and m.similarity >= engine.threshold

    strangers = gallery.match(engine.embed(t1_image, engine.detect(t1_image)))
    assert len(strangers) == 6
    assert all(s.identity is None and s.best is not None for s in strangers)


@pytest.mark.models
def test_gallery_names_every_bad_photo(
    engine: FaceEngine, tmp_path: Path, tom_image: np.ndarray
) -> None:
    root = tmp_path / "g"
    write_image(root / "tom" / "1.png", tom_image)
    write_image(root / "tom" / "2.png", gradient())
    write_corrupt(root / "ann" / "scan.jpg")
    (root / "empty").mkdir()
    with pytest.raises(GalleryError) as err:
        Gallery.from_folder(root, engine)
    text = str(err.value)
    assert "3 unusable" in text
    assert "tom/2.png: no_face" in text
    assert "ann/scan.jpg: unreadable" in text
    assert "empty/: no photos" in text
    assert "tom/1.png" not in text


def test_gallery_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match="does not exist"):
        Gallery.from_folder(tmp_path / "nope", engine=None)  # type: ignore[arg-type]


@pytest.mark.models
def test_gallery_cache_skips_unchanged_photos(
    engine: FaceEngine,
    tmp_path: Path,
    tom_image: np.ndarray,
    yao_image: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "g"
    write_image(root / "tom" / "1.png", tom_image)
    write_image(root / "yao" / "1.jpg", yao_image)
    cache = tmp_path / "cache" / "gallery.npz"
    first = Gallery.from_folder(root, engine, cache=cache)
    assert cache.is_file()

    def no_enrol(*args: object, **kwargs: object) -> None:
        raise AssertionError("enrol called for a cached photo")

    with monkeypatch.context() as m:
        m.setattr(engine, "enrol", no_enrol)
        again = Gallery.from_folder(root, engine, cache=cache)
    np.testing.assert_array_equal(first.templates, again.templates)
    assert again.identities == first.identities

    # A changed photo is a cache miss and is enrolled again.
    calls: list[str] = []
    real_enrol = engine.enrol

    def counting_enrol(*args: object, **kwargs: object) -> object:
        calls.append(str(kwargs.get("name")))
        return real_enrol(*args, **kwargs)  # type: ignore[arg-type]

    write_image(root / "yao" / "1.jpg", cv2.flip(yao_image, 1))
    with monkeypatch.context() as m:
        m.setattr(engine, "enrol", counting_enrol)
        Gallery.from_folder(root, engine, cache=cache)
    assert calls == ["yao/1.jpg"]


@pytest.mark.models
def test_gallery_fuse_keeps_one_template_per_identity(
    engine: FaceEngine,
    tmp_path: Path,
    tom_image: np.ndarray,
    yao_image: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "g"
    write_image(root / "tom" / "1.png", tom_image)
    write_image(root / "tom" / "2.png", cv2.flip(tom_image, 1))
    write_image(root / "yao" / "1.jpg", yao_image)
    each = Gallery.from_folder(root, engine, fuse=False)
    assert each.templates.shape[0] == 3  # one template per photo, max over them
    fused = Gallery.from_folder(root, engine)  # the default
    assert fused.templates.shape[0] == 2 and fused.identities == ("tom", "yao")
    # The fused template is the quality-weighted mean of Tom's two photos.
    faces = engine.enrol_many([root / "tom" / "1.png", root / "tom" / "2.png"])
    np.testing.assert_allclose(fused.templates[0], faces.face.embedding, atol=1e-5)
    np.testing.assert_allclose(fused.templates[1], each.templates[2], atol=1e-6)
    # The cache keeps each photo's quality, so a cached fused gallery is the same.
    cache = tmp_path / "cache.npz"
    Gallery.from_folder(root, engine, cache=cache, fuse=True)

    def no_enrol(*args: object, **kwargs: object) -> None:
        raise AssertionError("enrol called for a cached photo")

    monkeypatch.setattr(engine, "enrol", no_enrol)
    again = Gallery.from_folder(root, engine, cache=cache, fuse=True)
    np.testing.assert_allclose(again.templates, fused.templates, atol=1e-6)


@pytest.mark.models
def test_gallery_skip_unusable_leaves_bad_photos_and_empty_identities_out(
    engine: FaceEngine, tmp_path: Path, tom_image: np.ndarray, yao_image: np.ndarray
) -> None:
    root = tmp_path / "g"
    write_image(root / "tom" / "1.png", tom_image)
    write_image(root / "tom" / "2.png", gradient())
    write_corrupt(root / "ann" / "scan.jpg")
    write_image(root / "yao" / "1.jpg", yao_image)
    gallery = Gallery.from_folder(root, engine, skip_unusable=True)
    assert gallery.identities == ("tom", "yao")
    assert gallery.templates.shape[0] == 2
    assert gallery.match(gallery.templates)[1].identity == "yao"
