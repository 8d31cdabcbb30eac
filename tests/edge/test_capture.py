"""Capture: files, a local HTTP stream, reconnects and drops (fake capture), errors."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.cli import main
from edge.errors import CaptureError
from edge.pipeline.capture import Frame, ReconnectPolicy, SourceSpec, VideoSource, parse_source
from edge.pipeline.motion import MotionGate
from lintel_demo.videogen import WalkIn, make_idle_video, make_video


@pytest.fixture(scope="module")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("capture") / "small.mp4"
    make_video(
        path,
        [WalkIn("t1_p3", 5, 20)],
        width=320,
        height=180,
        fps=10.0,
        tail_s=0.5,
    )
    return path


def test_parse_source_kinds(tmp_path: Path) -> None:
    assert parse_source("0") == SourceSpec("usb", 0, "usb:0")
    url = parse_source("rtsp://admin:secret@10.0.0.5:554/stream1")
    assert url.kind == "url" and url.is_live
    assert "secret" not in url.display
    f = tmp_path / "x.mp4"
    f.write_bytes(b"")
    assert parse_source(f).kind == "file"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="not found"):
        VideoSource(tmp_path / "nope.mp4")


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(CaptureError, match="cannot open video file"):
        VideoSource(bad).open()


def test_cli_replay_corrupt_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    assert main(["replay", str(bad), "--json"]) == 2
    err = capsys.readouterr().err
    assert "cannot open video file" in err and "Traceback" not in err
    assert main(["replay", str(tmp_path / "missing.mp4")]) == 2
    assert "not found" in capsys.readouterr().err


def test_file_frames_sampled_without_drops(small_video: Path) -> None:
    with VideoSource(small_video) as src:
        assert src.fps == pytest.approx(10.0)
        assert (src.width, src.height) == (320, 180)
        frames = list(src.frames(sample_every=3))
        stats = src.stats
    total = 21 + 5  # last walk-in frame 20, plus 0.5 s tail at 10 fps
    assert stats.frames_read == total
    assert [f.index for f in frames] == list(range(0, total, 3))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10.0 for i in range(0, total, 3)])
    assert stats.dropped_frames == 0
    assert frames[0].image.shape == (180, 320, 3)


def test_idle_video_moves_nothing(tmp_path: Path) -> None:
    video = make_idle_video(tmp_path / "idle.mp4", seconds=2.0, fps=10.0, width=320, height=180)
    gate = MotionGate()
    with VideoSource(video.path) as src:
        moved = [gate.update(f.image) for f in src.frames()]
    # Only the first frame (no background yet) counts as motion.
    assert moved[0] and not any(moved[1:])


def test_http_url_is_read_live(small_video: Path) -> None:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(small_video.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{small_video.name}"
        src = VideoSource(url, reconnect=ReconnectPolicy(max_attempts=0), queue_size=64)
        got: list[Frame] = []
        with pytest.raises(CaptureError, match="did not come back"):
            for frame in src.frames():
                got.append(frame)
        assert src.is_live
        assert len(got) == 26 and src.stats.dropped_frames == 0
        assert got[0].timestamp > 1e9  # wall clock for live sources
        assert src.stats.state == "stopped"
    finally:
        server.shutdown()
        server.server_close()


class FakeCapture:
    """A capture that yields ``n`` frames and then fails (or never opens)."""

    def __init__(self, n: int, start: int = 0, opened: bool = True) -> None:
        self.n, self.i, self.opened, self.start = n, 0, opened, start

    def isOpened(self) -> bool:
        return self.opened

    def grab(self) -> bool:
        if self.i >= self.n:
            return False
        self.i += 1
        return True

    def retrieve(self) -> tuple[bool, Any]:
        return True, np.full((4, 4, 3), (self.start + self.i) % 256, np.uint8)

    def get(self, prop_id: int) -> float:
        return 25.0

    def release(self) -> None:
        pass


def opener_of(caps: list[FakeCapture]) -> Any:
    it: Iterator[FakeCapture] = iter(caps)

    def opener(spec: SourceSpec) -> FakeCapture:
        return next(it, FakeCapture(0, opened=False))

    return opener


def test_live_source_reconnects_then_gives_up() -> None:
    caps = [FakeCapture(5), FakeCapture(5, start=100)]
    src = VideoSource(
        "rtsp://cam.invalid/stream",
        reconnect=ReconnectPolicy(initial_delay_s=0.01, max_delay_s=0.02, max_attempts=2),
        queue_size=32,
        opener=opener_of(caps),
    )
    got: list[Frame] = []
    with pytest.raises(CaptureError, match="after 2 reconnect attempt"):
        for frame in src.frames():
            got.append(frame)
    assert [f.index for f in got] == list(range(10))  # indices continue across reconnects
    assert [int(f.image[0, 0, 0]) for f in got] == [1, 2, 3, 4, 5, 101, 102, 103, 104, 105]
    assert src.stats.reconnects == 1


def test_unopenable_live_source_fails_at_once() -> None:
    src = VideoSource("rtsp://cam.invalid/x", opener=opener_of([]))
    with pytest.raises(CaptureError, match=r"cannot open video source rtsp://cam\.invalid/x"):
        src.open()


def test_slow_consumer_drops_oldest_and_counts() -> None:
    src = VideoSource(
        "rtsp://cam.invalid/fast",
        reconnect=ReconnectPolicy(max_attempts=0),
        queue_size=2,
        opener=opener_of([FakeCapture(300)]),
    )
    got: list[Frame] = []
    with pytest.raises(CaptureError):
        for frame in src.frames(sample_every=2):
            got.append(frame)
            time.sleep(0.05)  # a slow consumer: the reader outruns it
    stats = src.stats
    assert stats.frames_read == 300
    assert stats.dropped_frames > 0
    # Every retrieved frame (every 2nd of 300) is either delivered or counted as dropped.
    assert len(got) + stats.dropped_frames == 150
    indices = [f.index for f in got]
    assert indices == sorted(indices) and all(i % 2 == 0 for i in indices)


def test_stop_event_ends_live_iteration() -> None:
    src = VideoSource("rtsp://cam.invalid/x", opener=opener_of([FakeCapture(10**9)]))
    n = 0
    for _ in src.frames():
        n += 1
        if n == 3:
            src.stop_event.set()
    assert n >= 3
    assert src.stats.state == "stopped"


def test_a_sampler_decides_per_grabbed_frame(small_video: Path) -> None:
    # A consumer that changes its mind while iterating: every 4th frame, then (after it
    # has seen frame 8) every 2nd. For a file the decision applies to the very next
    # grabbed frame, since the sampler runs between two yields in the same thread.
    step = {"n": 4}
    asked: list[int] = []
    last: list[int] = []

    def sampler(index: int) -> bool:
        asked.append(index)
        if last and index - last[-1] < step["n"]:
            return False
        last.append(index)
        return True

    with VideoSource(small_video) as src:
        got = []
        for frame in src.frames(sampler):
            got.append(frame.index)
            if frame.index == 8:
                step["n"] = 2
        stats = src.stats
    assert got == [0, 4, 8, 10, 12, 14, 16, 18, 20, 22, 24]
    assert asked == list(range(26))  # asked once per grabbed frame, in order
    assert stats.frames_read == 26 and stats.frames_delivered == len(got)


def test_live_source_uses_the_sampler_in_its_reader() -> None:
    src = VideoSource(
        "rtsp://cam.invalid/x",
        reconnect=ReconnectPolicy(max_attempts=0),
        queue_size=64,
        opener=opener_of([FakeCapture(30)]),
    )
    got: list[int] = []
    with pytest.raises(CaptureError):
        for frame in src.frames(lambda index: index in (0, 7, 8, 29)):
            got.append(frame.index)
    assert got == [0, 7, 8, 29]
    assert src.stats.frames_read == 30


def test_sample_every_must_be_positive(small_video: Path) -> None:
    with VideoSource(small_video) as src, pytest.raises(ValueError, match="sample_every"):
        src.frames(0)
