"""Fixtures of the multi-process tests: a short entrance video, a server, cleanup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lintel_demo.videogen import GeneratedVideo, WalkIn, make_video
from tests.integration.harness import FFMPEG, DaemonProcess, LiveStream, ServerProcess

FPS = 25.0


def walkins() -> list[WalkIn]:
    """Three strangers in ~6 s, one at a time (one track each, 0.8 s idle between)."""
    walk, gap = 40, 20
    left = ((0.25, 0.35), (0.3, 0.5))
    right = ((0.75, 0.35), (0.7, 0.5))
    out = []
    t = 10
    for i, name in enumerate(("t1_p1", "t1_p4", "yao_ming")):
        out.append(WalkIn(name, t, t + walk - 1, *(left if i % 2 == 0 else right)))
        t += walk + gap
    return out


@pytest.fixture(scope="session")
def entrance_video(tmp_path_factory: pytest.TempPathFactory) -> GeneratedVideo:
    folder = tmp_path_factory.mktemp("video")
    return make_video(folder / "entrance.mp4", walkins(), fps=FPS, tail_s=0.6)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "server")
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


@pytest.fixture
def processes() -> Iterator[list[DaemonProcess | LiveStream]]:
    """Daemons and streams a test starts; all are killed at teardown."""
    started: list[DaemonProcess | LiveStream] = []
    try:
        yield started
    finally:
        for p in started:
            if isinstance(p, LiveStream):
                p.stop()
            else:
                p.close()


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    if not Path(FFMPEG).exists():
        pytest.skip("ffmpeg (Debian package) is not installed")
    return FFMPEG
