"""``lintel-edge eval`` on a tiny generated gallery and probe folder (real models)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main
from edge.face.engine import FaceEngine
from tests.edge.data_helpers import crop_box, gradient, write_corrupt, write_image

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def eval_dirs(
    tmp_path_factory: pytest.TempPathFactory,
    tom_image: np.ndarray,
    yao_image: np.ndarray,
    t1_image: np.ndarray,
    engine: FaceEngine,
) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    gallery, probes = root / "gallery", root / "probes"
    write_image(gallery / "tom" / "1.png", tom_image)
    write_image(gallery / "yao" / "1.jpg", yao_image)
    write_image(probes / "tom" / "flipped.png", cv2.flip(tom_image, 1))
    write_image(probes / "yao" / "bright.jpg", cv2.convertScaleAbs(yao_image, alpha=1.1, beta=20))
    # A stranger: one of the people in t1.jpg, as a loosely cropped photo.
    first = engine.detect(t1_image)[0]
    write_image(probes / "stranger" / "t1_face.jpg", crop_box(t1_image, first, margin=0.5))
    write_image(probes / "stranger" / "blank.png", gradient())
    write_corrupt(probes / "stranger" / "broken.jpg")
    return gallery, probes


def test_eval_json(eval_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    gallery, probes = eval_dirs
    rc = main(["eval", "--gallery", str(gallery), "--probes", str(probes), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"model", "threshold", "failed_to_enrol", "probes"}
    assert doc["failed_to_enrol"] == []
    assert doc["model"] == "buffalo_s/w600k_mbf"
    assert isinstance(doc["threshold"], float)
    by_path = {p["path"]: p for p in doc["probes"]}
    assert sorted(by_path) == [
        "stranger/blank.png",
        "stranger/broken.jpg",
        "stranger/t1_face.jpg",
        "tom/flipped.png",
        "yao/bright.jpg",
    ]
    for p in doc["probes"]:
        assert set(p) == {"path", "best", "similarity", "identity"}
    assert by_path["tom/flipped.png"]["identity"] == "tom"
    assert by_path["yao/bright.jpg"]["identity"] == "yao"
    assert by_path["tom/flipped.png"]["similarity"] >= doc["threshold"]
    stranger = by_path["stranger/t1_face.jpg"]
    assert stranger["identity"] is None and stranger["best"] in {"tom", "yao"}
    assert stranger["similarity"] < doc["threshold"]
    for faceless in ("stranger/blank.png", "stranger/broken.jpg"):
        assert by_path[faceless] == {
            "path": faceless,
            "best": None,
            "similarity": -1,
            "identity": None,
        }


def test_eval_threshold_override_and_table(
    eval_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    gallery, probes = eval_dirs
    rc = main(["eval", "--gallery", str(gallery), "--probes", str(probes), "--threshold", "0.99"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "threshold 0.990" in out
    tom_line = next(line for line in out.splitlines() if line.startswith("tom/flipped.png"))
    # Nothing reaches 0.99, so the closest identity is shown but the decision is unknown.
    assert "tom" in tom_line.split()[2] and tom_line.rstrip().endswith("unknown")
    assert "no face" in out


def test_eval_bad_gallery_is_a_clean_error(
    tmp_path: Path, eval_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, probes = eval_dirs
    bad = tmp_path / "gallery"
    write_image(bad / "nobody" / "1.png", gradient())
    rc = main(["eval", "--gallery", str(bad), "--probes", str(probes), "--json"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nobody/1.png: no_face" in err and "Traceback" not in err


def test_eval_reports_a_refused_gallery_photo_and_goes_on(
    tmp_path: Path,
    eval_dirs: tuple[Path, Path],
    tom_image: np.ndarray,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refused gallery photo is a result (failed_to_enrol), not the end of the run."""
    _, probes = eval_dirs
    gallery = tmp_path / "gallery"
    write_image(gallery / "tom" / "1.png", tom_image)
    write_image(gallery / "tom" / "2.png", gradient())  # no face: refused, tom still enrols
    write_image(gallery / "nobody" / "1.png", gradient())  # refused: identity left out
    rc = main(["eval", "--gallery", str(gallery), "--probes", str(probes), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["failed_to_enrol"] == [
        {"path": "nobody/1.png", "reason": "no_face", "detail": "no face found"},
        {"path": "tom/2.png", "reason": "no_face", "detail": "no face found"},
    ]
    by_path = {p["path"]: p for p in doc["probes"]}
    assert by_path["tom/flipped.png"]["identity"] == "tom"
    assert by_path["yao/bright.jpg"]["identity"] is None  # yao is not in this gallery

    rc = main(["eval", "--gallery", str(gallery), "--probes", str(probes)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "failed to enrol 2 gallery photo(s): nobody/1.png (no_face" in out


def test_eval_strict_stops_at_a_refused_gallery_photo(
    tmp_path: Path,
    eval_dirs: tuple[Path, Path],
    tom_image: np.ndarray,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, probes = eval_dirs
    gallery = tmp_path / "gallery"
    write_image(gallery / "tom" / "1.png", tom_image)
    write_image(gallery / "nobody" / "1.png", gradient())
    rc = main(["eval", "--gallery", str(gallery), "--probes", str(probes), "--json", "--strict"])
    assert rc == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "nobody/1.png: no_face" in captured.err and "Traceback" not in captured.err
