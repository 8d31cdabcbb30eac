"""Stream pipeline: motion gating (fake engine, counts) and real models on a generated video."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge.face.engine import FaceEngine
from edge.face.quality import fuse_embeddings as fuse
from edge.face.types import BBox, Detection, FaceQuality
from edge.gallery import Gallery
from edge.pipeline.capture import Frame
from edge.pipeline.config import PipelineConfig
from edge.pipeline.motion import MotionConfig
from edge.pipeline.results import TrackResult
from edge.pipeline.stream import Pipeline
from edge.pipeline.tracker import TrackerConfig
from lintel_demo.videogen import GeneratedVideo, WalkIn, make_idle_video, make_video, write_gallery
from tests.edge.pipeline_fixtures import (
    DISTRACTOR,
    KNOWN,
    make_scenario_video,
    overlaps,
    shared_engine,
)


class CountingEngine:
    """A fake engine that finds no face and counts detector calls."""

    model_id = "fake/none"

    def __init__(self) -> None:
        self.detect_calls = 0

    def detect(
        self, image_bgr: npt.NDArray[np.uint8], *, det_size: int | None = None
    ) -> list[Detection]:
        self.detect_calls += 1
        return []

    def quality(
        self,
        image_bgr: npt.NDArray[np.uint8],
        det: Detection,
        *,
        aligned: npt.NDArray[np.uint8] | None = None,
    ) -> FaceQuality:
        raise AssertionError("no face, no quality")

    def align(self, image_bgr: npt.NDArray[np.uint8], det: Detection) -> npt.NDArray[np.uint8]:
        raise AssertionError("no face, no alignment")

    def embed_aligned(self, crops: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        raise AssertionError("no face, no embedding")


def test_idle_video_skips_the_detector(tmp_path: Path) -> None:
    video = make_idle_video(tmp_path / "idle.mp4", seconds=6.0, fps=25.0)
    gated = CountingEngine()
    pipe = Pipeline(gated)
    assert list(pipe.run(video.path)) == []
    assert pipe.stats.frames_read == 150
    assert pipe.stats.sample_every == 5 and pipe.stats.frames_analysed == 30
    # Only the very first frame (no background yet) reaches the detector.
    assert gated.detect_calls == pipe.stats.detector_calls == 1

    ungated = CountingEngine()
    pipe = Pipeline(ungated, config=PipelineConfig(motion=MotionConfig(enabled=False)))
    list(pipe.run(video.path))
    assert ungated.detect_calls == 30


def test_motion_wakes_the_detector(tmp_path: Path) -> None:
    video = make_video(tmp_path / "one.mp4", [WalkIn("t1_p3", 50, 99)], fps=25.0, tail_s=2.0)
    engine = CountingEngine()
    pipe = Pipeline(engine)
    list(pipe.run(video.path))
    # The first frame, the walk-in's 10 analysed frames, and up to 3 frames while the
    # background forgets the walker (leaving is a change too); the rest stays gated.
    assert 11 <= pipe.stats.detector_calls <= 14
    # A search may be several detector calls (one per moving region's crop).
    assert engine.detect_calls == pipe.stats.roi_detector_calls + (
        pipe.stats.detector_calls - pipe.stats.roi_searches
    )
    assert pipe.stats.frames_analysed == 30  # 150 frames, every 5th: no face, no burst


def test_fuse_is_quality_weighted_and_unit_length() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    f = fuse(a, [3.0, 1.0])
    assert np.linalg.norm(f) == pytest.approx(1.0)
    assert f[0] == pytest.approx(3 / np.sqrt(10))


# ----------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return shared_engine()


@pytest.fixture(scope="module")
def scenario_run(
    tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine
) -> tuple[GeneratedVideo, list[TrackResult], Pipeline]:
    folder = tmp_path_factory.mktemp("pipeline")
    video = make_scenario_video(folder)
    gallery = Gallery.from_folder(write_gallery(folder / "gallery", [*KNOWN, DISTRACTOR]), engine)
    pipe = Pipeline(engine, gallery)
    return video, list(pipe.run(video.path)), pipe


@pytest.mark.models
def test_each_walk_in_is_one_track_with_the_right_identity(
    scenario_run: tuple[GeneratedVideo, list[TrackResult], Pipeline],
) -> None:
    video, results, pipe = scenario_run
    assert len(results) == len(video.walkins) == 4
    for wi in video.walkins:
        mine = [
            r
            for r in results
            if overlaps((r.start_frame, r.end_frame), (wi.start_frame, wi.end_frame))
        ]
        # Two walk-ins share a time range (side by side): keep the one on the same side.
        left = wi.to_xy[0] < 0.5
        mine = [r for r in mine if ((r.bbox.x1 + r.bbox.x2) / 2 < video.width / 2) == left]
        assert len(mine) == 1, (wi, results)
        r = mine[0]
        expected = wi.identity if wi.identity in KNOWN else None
        assert r.identity == expected, (wi, r)
        if expected is not None:
            assert r.similarity >= 0.5
            assert r.crop_jpeg is None  # known faces never leave the box
            # The best face alone matched decisively: the other crops were not embedded.
            assert r.faces_used == 1
        else:
            assert r.similarity < 0.35
            assert r.crop_jpeg is not None
            crop = cv2.imdecode(np.frombuffer(r.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert crop is not None and max(crop.shape[:2]) <= 160
        assert np.linalg.norm(r.embedding) == pytest.approx(1.0, abs=1e-4)
        assert r.embedding.shape == (512,)
        assert 0.0 < r.quality <= 1.0
        assert 1 <= r.faces_used <= 3
    stats = pipe.stats
    # At most two recogniser batches per track (best face, then the rest), never per
    # frame; every embedded face is one a result used.
    assert stats.embed_calls <= 8
    assert stats.faces_embedded == sum(r.faces_used for r in results) < 12
    assert stats.detector_calls < stats.frames_analysed


@pytest.mark.models
def test_two_people_at_once_get_two_tracks(
    scenario_run: tuple[GeneratedVideo, list[TrackResult], Pipeline],
) -> None:
    video, results, _ = scenario_run
    together = video.walkins[2]
    same_time = [
        r
        for r in results
        if overlaps((r.start_frame, r.end_frame), (together.start_frame, together.end_frame))
    ]
    assert sorted(str(r.identity) for r in same_time) == sorted([KNOWN[1], "None"])


@pytest.mark.models
def test_small_faces_are_tracked_but_never_embedded(tmp_path: Path, engine: FaceEngine) -> None:
    video = make_video(
        tmp_path / "far.mp4",
        [WalkIn("t1_p3", 10, 59, size_from=26, size_to=32)],
        fps=25.0,
        tail_s=1.5,
    )
    # Native scale (full_min_scale 1): by default a 640x360 frame is searched at 320,
    # where a 26 px face is 13 px and not found at all (it could never be used anyway).
    pipe = Pipeline(engine, None, PipelineConfig(full_min_scale=1.0))
    assert list(pipe.run(video.path)) == []
    assert pipe.stats.detections >= 5  # the faces were seen...
    assert pipe.stats.tracks_without_usable_face == 1  # ...as one track, not usable
    assert pipe.stats.faces_embedded == 0 and pipe.stats.embed_calls == 0


@pytest.mark.models
def test_a_motionless_face_does_not_keep_the_detector_busy(
    tmp_path: Path, engine: FaceEngine
) -> None:
    # A face that never moves (a poster, someone waiting) for the whole 6 s.
    poster = WalkIn("t1_p3", 0, 149, (0.5, 0.5), (0.5, 0.5), 100, 100)
    video = make_video(tmp_path / "poster.mp4", [poster], fps=25.0, tail_s=0.0)
    pipe = Pipeline(engine, None)
    results = list(pipe.run(video.path))
    # The first frame counts as motion and its new track has no face yet: a burst
    # (frame 2) until the track has hungry_faces = 2 usable faces; then every 5th
    # frame (7, 12, ..., 147), and nothing moves, so no further burst.
    assert pipe.stats.burst_frames == 1
    assert pipe.stats.frames_analysed == 2 + len(range(7, 150, 5))
    # Frames 0 and 2, then one check a second (still_detect_s): frames 27, 52, ..., 127.
    assert pipe.stats.detector_calls == 2 + 5
    # Full-frame searches at frames 0, 52 and 102 (at least every full_detect_s = 2 s);
    # the others (2, 27, 77, 127) searched a crop around the face only.
    assert pipe.stats.roi_searches == pipe.stats.roi_detector_calls == 4
    assert len(results) == 1 and results[0].identity is None
    assert results[0].start_frame == 0 and results[0].end_frame >= 125

    # The same stay with max_track_s 2: reported in pieces while it goes on.
    config = PipelineConfig(tracker=TrackerConfig(max_track_s=2.0))
    pipe = Pipeline(engine, None, config)
    pieces = list(pipe.run(video.path))
    # Detector calls at frames 0, 2, 27, 52, 77, 102, 127; a piece is cut when a match
    # comes 2 s or more after its start.
    assert [(r.start_frame, r.end_frame) for r in pieces] == [(0, 27), (52, 77), (102, 127)]
    assert pieces[0].continued_from is None
    assert [r.continued_from for r in pieces[1:]] == [r.track_id for r in pieces[:-1]]


# ------------------------------------------------------------ burst sampling (fake)


class SquareEngine:
    """A fake engine whose "face" is the bright square of a generated frame.

    It finds the square in whatever image it is given (the whole frame or a
    crop), and the square's brightness says whether the face is usable: 255
    usable, 200 not (a profile, say). Counting, not timing.
    """

    model_id = "fake/square"

    def detect(
        self, image_bgr: npt.NDArray[np.uint8], *, det_size: int | None = None
    ) -> list[Detection]:
        ys, xs = np.nonzero(image_bgr[..., 0] > 150)
        if len(xs) == 0:
            return []
        x1, y1, x2, y2 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        marks = (
            (cx - 10, cy - 5),
            (cx + 10, cy - 5),
            (cx, cy),
            (cx - 8, cy + 10),
            (cx + 8, cy + 10),
        )
        return [Detection(BBox(x1, y1, x2, y2), 0.9, marks)]

    def quality(
        self,
        image_bgr: npt.NDArray[np.uint8],
        det: Detection,
        *,
        aligned: npt.NDArray[np.uint8] | None = None,
    ) -> FaceQuality:
        b = det.bbox
        bright = int(image_bgr[int((b.y1 + b.y2) / 2), int((b.x1 + b.x2) / 2), 0])
        reasons = () if bright > 230 else ("bad_pose",)
        return FaceQuality(0.8, b.width, 0.5, 0.9, 0.9, reasons)

    def align(self, image_bgr: npt.NDArray[np.uint8], det: Detection) -> npt.NDArray[np.uint8]:
        return np.zeros((112, 112, 3), np.uint8)

    def embed_aligned(self, crops: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(crops), 8), np.float32)
        out[:, 0] = 1.0
        return out


def square_video(path: Path, usable: range) -> Path:
    """640x360 at 25 fps, 100 frames: a 60 px square moves right over frames 10-69,
    usable (bright) only on the frames in ``usable``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (640, 360))
    for i in range(100):
        frame = np.full((360, 640, 3), 60, np.uint8)
        if 10 <= i < 70:
            x = 60 + 7 * (i - 10)
            frame[150:210, x : x + 60] = 255 if i in usable else 200
        writer.write(frame)
    writer.release()
    return path


class TracingPipeline(Pipeline):
    """Records the index of every analysed frame."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.analysed: list[int] = []

    def process(self, frame: Frame) -> list[TrackResult]:
        self.analysed.append(frame.index)
        return super().process(frame)


def test_burst_sampling_catches_a_briefly_usable_face(tmp_path: Path) -> None:
    # Usable on frames 31-34 only: between the base-rate samples 30 and 35.
    video = square_video(tmp_path / "square.avi", range(31, 35))

    steady = TracingPipeline(SquareEngine(), None, PipelineConfig(burst_fps=5.0))
    assert list(steady.run(video)) == []  # every 5th frame: the usable face is never seen
    assert steady.analysed == list(range(0, 100, 5)) and steady.stats.burst_frames == 0
    assert steady.stats.tracks_without_usable_face == 1

    burst = TracingPipeline(SquareEngine(), None, PipelineConfig())
    results = list(burst.run(video))
    assert len(results) == 1 and results[0].faces_used >= 1
    # Every 5th frame until the square appears (frame 10, a new track with no usable
    # face: hungry); every 2nd frame while it stays hungry; its second usable face
    # (frame 34) ends the burst and the rate is back to every 5th frame.
    assert burst.analysed == [0, 5, 10, *range(12, 35, 2), *range(39, 100, 5)]
    # Base frames stay >= 5 frames apart (10, 16, 22, 28, 34): the others are bursts.
    assert burst.stats.burst_frames == len([12, 14, 18, 20, 24, 26, 30, 32])
    assert burst.stats.frames_analysed > steady.stats.frames_analysed


@pytest.mark.models
def test_crops_find_the_same_faces_as_full_frames(tmp_path: Path, engine: FaceEngine) -> None:
    # 1280x720: one walker fills a small part of the frame, so the pipeline searches
    # crops around the moving area and the track instead of the whole frame.
    walkins = [
        WalkIn("t1_p3", 10, 59, (0.3, 0.4), (0.4, 0.5), 60, 110),
        WalkIn("yao_ming", 85, 134, (0.8, 0.4), (0.7, 0.5), 60, 110, mirror=False),
    ]
    video = make_video(tmp_path / "hd.mp4", walkins, width=1280, height=720, fps=25.0)
    gallery = Gallery.from_folder(write_gallery(tmp_path / "g", ["t1_p3", "yao_ming"]), engine)

    def tracks(config: PipelineConfig) -> tuple[list[TrackResult], Pipeline]:
        pipe = Pipeline(engine, gallery, config)
        return list(pipe.run(video.path)), pipe

    cropped, pipe = tracks(PipelineConfig())
    full, full_pipe = tracks(PipelineConfig(roi=False))
    assert pipe.stats.roi_searches >= pipe.stats.detector_calls // 2
    assert full_pipe.stats.roi_searches == 0
    assert pipe.stats.detector_pixels < full_pipe.stats.detector_pixels / 2
    for results in (cropped, full):
        assert [r.identity for r in results] == ["t1_p3", "yao_ming"]
    for a, b in zip(cropped, full, strict=True):
        assert overlaps((a.start_frame, a.end_frame), (b.start_frame, b.end_frame))
        assert abs(a.similarity - b.similarity) < 0.1
