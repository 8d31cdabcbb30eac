"""Helpers shared by the pipeline and replay tests (not a conftest: A1 owns that)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from edge.face.engine import FaceEngine
from lintel_demo.videogen import GeneratedVideo, WalkIn, make_video

FPS = 25.0
KNOWN = ("t1_p3", "yao_ming")
# Enrolled but never in the video: a distractor the strangers must not match.
DISTRACTOR = "t1_p6"
STRANGERS = ("t1_p1", "t1_p4")


@cache
def shared_engine() -> FaceEngine:
    """One engine for this test session's pipeline tests (loading costs ~1 s)."""
    return FaceEngine.load()


def scenario() -> list[WalkIn]:
    """Idle 1 s; a known person; a stranger; then a known person and a stranger
    side by side at the same time; 1.2 s idle gaps; ~8 s at 25 fps."""
    walk, gap = 45, 30
    t0 = 25
    t1 = t0 + walk + gap
    t2 = t1 + walk + gap
    left = ((0.25, 0.35), (0.3, 0.5))
    right = ((0.75, 0.35), (0.7, 0.5))
    return [
        WalkIn(KNOWN[0], t0, t0 + walk - 1, *left, mirror=True),
        WalkIn(STRANGERS[0], t1, t1 + walk - 1, *right, mirror=True),
        WalkIn(KNOWN[1], t2, t2 + walk - 1, *left, mirror=False),
        WalkIn(STRANGERS[1], t2, t2 + walk - 1, *right, mirror=False),
    ]


def make_scenario_video(folder: Path) -> GeneratedVideo:
    return make_video(folder / "entrance.mp4", scenario(), fps=FPS, tail_s=1.0)


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]
