"""``lintel-edge calibrate``: threshold at a target FPIR from a site's own labelled photos."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.calibrate import calibrate, min_strangers, threshold_at_fpir
from edge.cli import main
from edge.errors import CalibrationError
from edge.evaluate import ProbeResult
from edge.face.engine import FaceEngine
from tests.edge.data_helpers import crop_box, gradient, write_image

JSON_KEYS = {
    "model",
    "threshold",
    "target_fpir",
    "fpir",
    "fnir",
    "probes",
    "strangers",
    "failed_to_enrol",
}


# ------------------------------------------------------------ arithmetic only


def test_threshold_at_fpir_lets_through_at_most_the_target() -> None:
    scores = np.linspace(0.0, 0.99, 100)  # 100 strangers
    t = threshold_at_fpir(scores, 0.05)
    assert int(np.sum(scores >= t)) == 5
    assert t == pytest.approx(0.94, abs=1e-6)
    # Zero allowed: just above the highest stranger.
    t0 = threshold_at_fpir(scores, 0.001)
    assert t0 > scores.max() and int(np.sum(scores >= t0)) == 0
    with pytest.raises(CalibrationError):
        threshold_at_fpir([], 0.01)


def test_min_strangers() -> None:
    assert min_strangers(0.01) == 100
    assert min_strangers(0.001) == 1000
    assert min_strangers(0.3) == 4


def _probe(path: str, best: str | None, sim: float) -> ProbeResult:
    return ProbeResult(path, best, sim, None)


def test_calibrate_counts_genuine_misses_and_strangers() -> None:
    rng = np.random.default_rng(7)
    strangers = [_probe(f"s{k}/1.jpg", "alice", float(s)) for k, s in enumerate(rng.random(200))]
    genuine = [
        _probe("alice/1.jpg", "alice", 0.999),  # matched at any threshold below 1
        _probe("alice/2.jpg", "bob", 0.999),  # closer to someone else: a miss
        _probe("bob/1.jpg", None, -1.0),  # no face: a miss
        _probe("bob/2.jpg", "bob", 0.2),  # below the threshold: a miss
    ]
    cal = calibrate(strangers + genuine, {"alice", "bob"}, target_fpir=0.01, model="m/1")
    assert cal.strangers == 200 and cal.probes == 204
    assert cal.fpir <= 0.01
    assert sum(p.similarity >= cal.threshold for p in strangers) == 2
    assert cal.fnir == pytest.approx(0.75)


def test_calibrate_refuses_too_few_strangers() -> None:
    probes = [_probe(f"s{k}/1.jpg", "a", 0.1) for k in range(99)] + [_probe("a/1.jpg", "a", 0.9)]
    with pytest.raises(CalibrationError, match=r"99 stranger.*at least 100"):
        calibrate(probes, {"a"}, target_fpir=0.01, model="m/1")
    with pytest.raises(CalibrationError, match="between 0 and 1"):
        calibrate(probes, {"a"}, target_fpir=0.0, model="m/1")
    with pytest.raises(CalibrationError, match="identity folder"):
        calibrate([_probe("loose.jpg", None, -1.0)], {"a"}, target_fpir=0.5, model="m/1")


# --------------------------------------------------- CLI on generated photos


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    tom_image: np.ndarray,
    yao_image: np.ndarray,
    t1_image: np.ndarray,
    engine: FaceEngine,
) -> tuple[Path, Path]:
    """Gallery: Tom and Yao. Probes: each of them once more, six strangers from t1.jpg."""
    root = tmp_path_factory.mktemp("site")
    gallery, probes = root / "gallery", root / "probes"
    write_image(gallery / "tom" / "1.png", tom_image)
    write_image(gallery / "yao" / "1.jpg", yao_image)
    write_image(gallery / "nobody" / "1.png", gradient())  # fails to enrol: left out
    write_image(probes / "tom" / "flipped.png", cv2.flip(tom_image, 1))
    write_image(probes / "yao" / "bright.jpg", cv2.convertScaleAbs(yao_image, alpha=1.1, beta=20))
    write_image(probes / "nobody" / "2.png", gradient())  # not a stranger, not genuine
    for k, det in enumerate(engine.detect(t1_image)):
        write_image(probes / f"stranger{k}" / "1.jpg", crop_box(t1_image, det, margin=0.5))
    return gallery, probes


@pytest.mark.models
def test_cli_calibrate_prints_and_writes_json(
    site: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery, probes = site
    out = tmp_path / "calib" / "site.json"
    rc = main(
        [
            "calibrate",
            "--gallery",
            str(gallery),
            "--probes",
            str(probes),
            "--target-fpir",
            "0.2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "target FPIR 0.2" in printed and "pack default" in printed
    doc = json.loads(out.read_text())
    assert set(doc) == JSON_KEYS
    assert doc["model"] == "buffalo_s/w600k_mbf"
    assert doc["target_fpir"] == 0.2
    assert doc["strangers"] == 6 and doc["probes"] == 8
    assert doc["fpir"] <= 0.2
    assert doc["failed_to_enrol"] == [
        {"path": "nobody/1.png", "reason": "no_face", "detail": "no face found"}
    ]
    assert "failed to enrol 1 gallery photo(s): nobody/1.png (no_face" in printed
    # Six strangers at 20%: one may reach the threshold, so it sits above the
    # second-highest stranger score, well below the same-person scores.
    assert doc["fnir"] == 0.0
    assert -1.0 < doc["threshold"] < 0.5 and math.isfinite(doc["threshold"])
    # The same JSON is printed (last line) when no --out is given.
    assert json.loads(printed.strip().splitlines()[-1]) == doc


@pytest.mark.models
def test_cli_calibrate_strict_stops_at_a_refused_gallery_photo(
    site: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    gallery, probes = site
    argv = ["calibrate", "--gallery", str(gallery), "--probes", str(probes), "--strict"]
    rc = main([*argv, "--target-fpir", "0.2"])
    assert rc == 2
    captured = capsys.readouterr()
    assert "nobody/1.png: no_face" in captured.err and "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.models
def test_cli_calibrate_refuses_too_few_strangers(
    site: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    gallery, probes = site
    rc = main(["calibrate", "--gallery", str(gallery), "--probes", str(probes)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "6 stranger probe(s)" in err and "at least 100" in err


def test_cli_calibrate_missing_probes_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["calibrate", "--gallery", str(tmp_path), "--probes", str(tmp_path / "none")])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
