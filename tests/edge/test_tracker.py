"""Tracker logic on synthetic boxes (no models)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge.face.boxes import iou
from edge.face.types import BBox, Detection, FaceQuality
from edge.pipeline.tracker import FaceSample, IoUTracker, Track, TrackerConfig


def box(cx: float, cy: float, size: float) -> BBox:
    return BBox(cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)


def run(tracker: IoUTracker, frames: list[list[BBox]], step: int = 5) -> list[Track]:
    """Feed one list of boxes per analysed frame; return every ended track."""
    ended: list[Track] = []
    for i, boxes in enumerate(frames):
        _, done = tracker.update(boxes, frame_index=i * step, timestamp=i * step / 25)
        ended.extend(done)
    ended.extend(tracker.flush())
    return ended


def test_iou_basics() -> None:
    assert iou(box(0, 0, 10), box(0, 0, 10)) == pytest.approx(1.0)
    assert iou(box(0, 0, 10), box(100, 0, 10)) == 0.0
    assert iou(box(0, 0, 10), box(5, 0, 10)) == pytest.approx(50 / 150)


def test_one_walk_in_is_one_track() -> None:
    # A face walking towards the camera: moves 40 px and grows 8 px per analysed frame,
    # so consecutive boxes barely overlap; the velocity prediction keeps it one track.
    frames = [[box(100 + 40 * i, 150 + 5 * i, 50 + 8 * i)] for i in range(12)]
    tracks = run(IoUTracker(), frames)
    assert len(tracks) == 1
    assert tracks[0].hits == 12
    assert tracks[0].start_frame == 0 and tracks[0].end_frame == 55


def test_two_people_crossing_are_two_tracks() -> None:
    # Two faces walking in opposite directions at the same height cross (their boxes
    # coincide mid-way); only the velocity prediction tells them apart after that.
    frames = [[box(100 + 30 * i, 200, 80), box(460 - 30 * i, 200, 80)] for i in range(13)]
    # The detector's output order is by score, not by person: alternate it.
    frames = [f if i % 2 else f[::-1] for i, f in enumerate(frames)]
    tracks = run(IoUTracker(), frames)
    assert len(tracks) == 2
    for t in tracks:
        xs = [(b.x1 + b.x2) / 2 for _, b in t.boxes]
        assert len(xs) == 13
        steps = np.diff(xs)
        # Each track keeps moving one way: no identity swap at the crossing.
        assert np.all(steps > 0) or np.all(steps < 0)


def test_gap_ends_a_track() -> None:
    # Expiry is time-based: 1 analysed frame a second, max_gap_s 2.5.
    cfg = TrackerConfig(max_gap_s=2.5)
    still = box(300, 200, 80)
    frames = [[still]] * 4 + [[]] * 3 + [[still]] * 4
    tracker = IoUTracker(cfg)
    ended_during: list[int] = []
    for i, boxes in enumerate(frames):
        _, done = tracker.update(boxes, frame_index=i, timestamp=float(i))
        ended_during.extend(i for _ in done)
    # Last match at t=3; at t=6 the gap is 3 s > 2.5 s.
    assert ended_during == [6]
    rest = tracker.flush()
    assert len(rest) == 1 and rest[0].start_frame == 7


def test_short_gap_does_not_split() -> None:
    still = box(300, 200, 80)
    frames = [[still]] * 4 + [[]] * 2 + [[still]] * 4
    # Last match at t=3, next at t=6: a 3 s gap is not more than max_gap_s.
    assert len(run(IoUTracker(TrackerConfig(max_gap_s=3.0)), frames, step=25)) == 1


def test_expiry_counts_seconds_not_analysed_frames() -> None:
    # Misses spanning 0.8 s are bridged whether they are 2 or 10 detector calls
    # (burst sampling changes the rate); misses spanning 1.2 s end the track at any rate.
    still = box(300, 200, 80)
    for fps in (2.5, 12.5):
        for gap_s, tracks in ((0.8, 1), (1.2, 2)):
            n_gap = round(gap_s * fps)
            frames = [[still]] * 3 + [[]] * n_gap + [[still]] * 3
            tracker = IoUTracker(TrackerConfig(max_gap_s=1.0))
            ended: list[Track] = []
            for i, boxes in enumerate(frames):
                _, done = tracker.update(boxes, frame_index=i, timestamp=i / fps)
                ended.extend(done)
            ended.extend(tracker.flush())
            assert len(ended) == tracks, (fps, gap_s)


def test_long_stay_is_cut_into_pieces() -> None:
    # A poster seen once a second for 70 s, max_track_s 30: pieces of 30, 30, 10 s.
    cfg = TrackerConfig(max_track_s=30.0)
    tracker = IoUTracker(cfg)
    poster = box(300, 200, 80)
    ended_at: list[tuple[int, Track]] = []
    for t in range(71):
        tracks, done = tracker.update([poster], frame_index=t * 25, timestamp=float(t))
        ended_at.extend((t, d) for d in done)
        assert len(tracks) == 1
    rest = tracker.flush()
    pieces = [d for _, d in ended_at] + rest
    assert [t for t, _ in ended_at] == [30, 60]  # reported while the stay goes on
    assert [(p.started_at, p.ended_at) for p in pieces] == [(0, 29), (30, 59), (60, 70)]
    assert pieces[0].continued_from is None
    assert pieces[1].continued_from == pieces[0].track_id
    assert pieces[2].continued_from == pieces[1].track_id
    assert len({p.track_id for p in pieces}) == 3


def test_no_max_track_length() -> None:
    tracker = IoUTracker(TrackerConfig(max_track_s=None))
    for t in range(100):
        _, done = tracker.update([box(300, 200, 80)], frame_index=t, timestamp=float(t))
        assert done == []
    assert len(tracker.flush()) == 1


def test_far_jump_and_size_jump_start_new_tracks() -> None:
    frames = [[box(100, 100, 60)], [box(500, 300, 60)], [box(500, 300, 200)]]
    assert len(run(IoUTracker(), frames)) == 3


def _sample(score: float) -> FaceSample:
    det = Detection(box(50, 50, 80), 0.9, ((0.0, 0.0),) * 5)
    q = FaceQuality(score=score, size_px=80, blur=0.5, det_score=0.9, frontal=0.9)
    return FaceSample(0, 0.0, det, q, np.zeros((112, 112, 3), np.uint8))


def test_track_keeps_best_k_by_quality() -> None:
    track = Track(1, box(0, 0, 10), 0, 0, 0.0, 0.0)
    for s in (0.3, 0.9, 0.1, 0.7, 0.5):
        track.offer(_sample(s), k=3)
    assert [s.quality.score for s in track.best] == [0.9, 0.7, 0.5]
    assert track.best_quality == 0.9
    assert track.faces_offered == 5


def test_config_refuses_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        TrackerConfig(max_mises=3)  # type: ignore[call-arg]


def test_follow_touches_only_the_tracks_it_looked_for() -> None:
    # A burst frame searched around track A only: B is not missed, nothing new starts.
    tracker = IoUTracker(TrackerConfig(max_gap_s=0.5))
    (a, b), _ = tracker.update([box(100, 100, 60), box(400, 100, 60)], frame_index=0, timestamp=0.0)
    owners, ended = tracker.follow(
        [box(104, 100, 60), box(250, 250, 60)], tracks=[a.track_id], frame_index=1, timestamp=1.0
    )
    assert owners == [a, None] and ended == []
    assert a.hits == 2 and b.misses == 0 and len(tracker.active) == 2
    # Looked for A again and did not see it: A's gap (0.5 s) is over; B is untouched.
    owners, ended = tracker.follow([], tracks=[a.track_id], frame_index=2, timestamp=1.6)
    assert ended == [a] and tracker.active == [b]
