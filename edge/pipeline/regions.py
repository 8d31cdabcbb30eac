"""Where the detector looks: square crops around motion and live tracks, in frame pixels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge.face.types import BBox, Detection
from edge.pipeline.seams import EngineLike
from edge.pipeline.tracker import FaceSample


def engine_det_size(engine: EngineLike) -> int:
    """The engine's configured detector size (640 when it does not say)."""
    config = getattr(engine, "config", None)
    return int(getattr(config, "det_size", 640))


def grow(b: BBox, by: float) -> BBox:
    """``b`` grown by ``by`` of its size on every side."""
    dx, dy = b.width * by, b.height * by
    return BBox(b.x1 - dx, b.y1 - dy, b.x2 + dx, b.y2 + dy)


Crop = tuple[int, int, int, int]
"""(x1, y1, x2, y2) in frame pixels."""

TRACK_GROW = 1.0
"""A track's region: its predicted box grown by one face size on every side (3x the
side): room for the motion since the last detection, and the face fills a third of
the crop (SCRFD misses faces that fill its input)."""

MAX_CROPS = 4
"""More separate regions than this: one full-frame call is cheaper than the calls'
fixed costs (each SCRFD call pays ~1-2 ms of pre/post-processing)."""


def square(b: BBox, w: int, h: int, min_side: float = 8.0) -> Crop:
    """The square around ``b`` (side = its longer side, at least ``min_side``), moved
    inside the frame where it crosses an edge and clipped only where it is larger."""
    side = min(max(b.width, b.height, min_side), float(max(w, h)))
    cx, cy = (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2
    x1 = int(min(max(0.0, cx - side / 2), max(0.0, w - side)))
    y1 = int(min(max(0.0, cy - side / 2), max(0.0, h - side)))
    return x1, y1, min(w, int(x1 + side) + 1), min(h, int(y1 + side) + 1)


def area(c: Crop) -> int:
    return max(0, c[2] - c[0]) * max(0, c[3] - c[1])


def crop_regions(
    regions: Sequence[BBox], w: int, h: int, max_cost: float, min_side: float
) -> list[Crop] | None:
    """Square crops covering ``regions`` (already grown by the caller), at least
    ``min_side`` pixels wide, or None for the full frame.

    Squares, because the detector letterboxes its input into a square: a square
    crop fills it with picture instead of padding. Crops are merged while a merge
    costs no extra area (overlapping or touching squares), and then the cheapest
    merges until at most ``MAX_CROPS`` remain. None when there is no region or
    the crops' detector inputs would add up to more than ``max_cost`` of the
    full frame's (a crop of side c costs c squared; the frame max(w, h) squared).
    """
    crops = [square(r, w, h, min_side) for r in regions]
    crops = [c for c in crops if c[2] - c[0] >= 8 and c[3] - c[1] >= 8]
    if not crops:
        return None
    while len(crops) > 1:
        best: tuple[int, int, int, Crop] | None = None
        for i in range(len(crops)):
            for j in range(i + 1, len(crops)):
                a, b = crops[i], crops[j]
                u = BBox(min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                merged = square(u, w, h, min_side)
                extra = area(merged) - area(a) - area(b)
                if best is None or extra < best[0]:
                    best = (extra, i, j, merged)
        assert best is not None
        extra, i, j, merged = best
        if extra > 0 and len(crops) <= MAX_CROPS:
            break
        crops = [c for k, c in enumerate(crops) if k not in (i, j)] + [merged]
    if sum(max(c[2] - c[0], c[3] - c[1]) ** 2 for c in crops) > max_cost * max(w, h) ** 2:
        return None
    return crops


def distinct(samples: Sequence[FaceSample], min_gap_s: float) -> list[FaceSample]:
    """``samples`` (best first) without those taken within ``min_gap_s`` of a better one."""
    kept: list[FaceSample] = []
    for s in samples:
        if all(abs(s.timestamp - k.timestamp) >= min_gap_s for k in kept):
            kept.append(s)
    return kept


def offset(det: Detection, dx: float, dy: float) -> Detection:
    """A detection in crop pixels moved to frame pixels."""
    b = det.bbox
    return Detection(
        bbox=BBox(b.x1 + dx, b.y1 + dy, b.x2 + dx, b.y2 + dy),
        det_score=det.det_score,
        landmarks=tuple((x + dx, y + dy) for x, y in det.landmarks),
    )


NormRect = tuple[float, float, float, float]
"""A region of interest set from the web: (x1, y1, x2, y2), normalised 0..1 of the frame."""


def mask_outside(image: npt.NDArray[np.uint8], roi: NormRect) -> npt.NDArray[np.uint8]:
    """A copy of ``image`` black outside ``roi``.

    Masked rather than cropped: frame coordinates (tracks, crops, the motion
    gate's reference) stay the same when the region changes on a running
    stream, and a black area neither moves nor holds a face, so the motion gate
    and the detector's crops ignore it by themselves.
    """
    h, w = image.shape[:2]
    x1, y1 = int(roi[0] * w), int(roi[1] * h)
    x2, y2 = max(x1 + 1, round(roi[2] * w)), max(y1 + 1, round(roi[3] * h))
    out = np.zeros_like(image)
    out[y1:y2, x1:x2] = image[y1:y2, x1:x2]
    return out
