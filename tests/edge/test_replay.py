"""``lintel-edge replay``: JSON shape, errors, and the TrackResult -> SightingIn conversion."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.cli import main
from edge.face.errors import LintelEdgeError
from edge.face.types import BBox
from edge.pipeline.results import TrackResult
from edge.pipeline.sightings import track_to_sighting
from edge.wire import decode_embedding, sighting_id
from lintel_demo.videogen import write_gallery
from tests.edge.data_helpers import gradient, write_image
from tests.edge.pipeline_fixtures import DISTRACTOR, KNOWN, make_scenario_video


@pytest.fixture(scope="module")
def replay_doc(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("replay")
    video = make_scenario_video(folder)
    gallery = write_gallery(folder / "gallery", [*KNOWN, DISTRACTOR])
    write_image(gallery / "nobody" / "1.png", gradient())  # refused: reported, not fatal
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["replay", str(video.path), "--gallery", str(gallery), "--json"])
    assert rc == 0
    doc: dict[str, Any] = json.loads(out.getvalue())
    doc["_truth"] = video.walkins
    return doc


@pytest.mark.models
def test_replay_json_shape(replay_doc: dict[str, Any]) -> None:
    assert replay_doc["frames"] == 25 + 3 * 45 + 2 * 30 + 25
    assert replay_doc["fps"] == pytest.approx(25.0)
    assert replay_doc["cpu_s"] > 0
    assert replay_doc["failed_to_enrol"] == [
        {"path": "nobody/1.png", "reason": "no_face", "detail": "no face found"}
    ]
    tracks = replay_doc["tracks"]
    assert len(tracks) == 4
    for t in tracks:
        assert set(t) == {"start_frame", "end_frame", "identity", "similarity", "quality"}
        assert isinstance(t["start_frame"], int) and t["end_frame"] >= t["start_frame"]
        assert t["identity"] is None or isinstance(t["identity"], str)
    names = sorted(str(t["identity"]) for t in tracks)
    assert names == sorted([*KNOWN, "None", "None"])


@pytest.mark.models
def test_replay_strict_stops_at_a_refused_gallery_photo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = make_scenario_video(tmp_path)
    gallery = write_gallery(tmp_path / "gallery", list(KNOWN))
    write_image(gallery / "nobody" / "1.png", gradient())
    argv = ["replay", str(video.path), "--gallery", str(gallery), "--json", "--strict"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "nobody/1.png: no_face" in captured.err and "Traceback" not in captured.err
    assert captured.out == ""


def test_replay_missing_video_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "nope.mp4"), "--json"]) == 2
    err = capsys.readouterr().err
    assert "video file not found" in err and "Traceback" not in err


def test_replay_server_without_token_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LINTEL_DEVICE_TOKEN", raising=False)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    assert main(["replay", str(video), "--server", "http://127.0.0.1:9"]) == 2
    assert "--token" in capsys.readouterr().err


def _result(identity: str | None, crop: bytes | None = None) -> TrackResult:
    emb = np.zeros(512, np.float32)
    emb[3] = 1.0
    return TrackResult(
        track_id=1,
        start_frame=10,
        end_frame=40,
        started_at=0.4,
        ended_at=1.6,
        identity=identity,
        best_candidate=identity or "17",
        similarity=0.81 if identity else 0.12,
        quality=0.7,
        embedding=emb,
        faces_used=3,
        hits=7,
        model_id="buffalo_s/w600k_mbf",
        bbox=BBox(1, 2, 3, 4),
        best_frame=20,
        crop_jpeg=crop,
    )


def test_unknown_track_becomes_an_unknown_sighting() -> None:
    origin = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    s = track_to_sighting(
        _result(None, b"\xff\xd8jpeg"),
        device="dev1",
        source="cam.mp4",
        camera="door",
        origin=origin,
    )
    assert s.kind == "unknown" and s.occupant_id is None
    assert s.id == sighting_id("dev1", "cam.mp4", 10, 40, track_id=1)
    assert (s.ended_at - s.started_at).total_seconds() == pytest.approx(1.2)
    assert s.started_at == origin.replace(microsecond=400000)
    assert s.embedding_b64 is not None and decode_embedding(s.embedding_b64)[3] == 1.0
    assert s.crop_jpeg_b64 is not None and base64.b64decode(s.crop_jpeg_b64) == b"\xff\xd8jpeg"
    assert s.model_id == "buffalo_s/w600k_mbf"


def test_tracks_over_the_same_frames_get_their_own_ids() -> None:
    # Two people walking in side by side: two tracks over the same frames.
    # Without the track id in the id they were one sighting on the server.
    first = _result(None)
    second = dataclasses.replace(first, track_id=2)
    ids = {
        track_to_sighting(r, device="dev1", source="cam.mp4", camera="door").id
        for r in (first, second)
    }
    assert len(ids) == 2
    again = track_to_sighting(first, device="dev1", source="cam.mp4", camera="door")
    assert again.id in ids  # still deterministic: a replay re-sends the same ids


def test_known_track_carries_no_face() -> None:
    s = track_to_sighting(_result("17"), device="d", source="s", camera="door")
    assert s.kind == "known" and s.occupant_id == 17 and s.similarity == pytest.approx(0.81)
    assert s.embedding_b64 is None and s.crop_jpeg_b64 is None
    # Live timestamps are Unix time.
    assert s.started_at == datetime.fromtimestamp(0.4, UTC)
    mapped = track_to_sighting(
        _result("alice"), device="d", source="s", camera="door", occupant_ids={"alice": 5}
    )
    assert mapped.occupant_id == 5
    with pytest.raises(LintelEdgeError, match="not an occupant id"):
        track_to_sighting(_result("alice"), device="d", source="s", camera="door")
