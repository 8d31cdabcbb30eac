"""Small generated test images: faceless gradients, corrupt files, padded crops."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.face.types import Detection


def gradient(h: int = 240, w: int = 320) -> np.ndarray:
    """A smooth colour gradient: an image with certainly no face in it."""
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    img = np.stack([np.broadcast_to(x, (h, w)), np.broadcast_to(y, (h, w)), (x + y) / 2], axis=2)
    return img.astype(np.uint8)


def write_image(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", img)
    assert ok, path
    path.write_bytes(buf.tobytes())
    return path


def write_corrupt(path: Path) -> Path:
    """A file named like a JPEG whose bytes are not an image (a JPEG header, then junk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    return path


def crop_box(img: np.ndarray, det: Detection, margin: float = 0.0) -> np.ndarray:
    """The detector box of ``det`` (plus ``margin`` of its size on each side), clipped."""
    b = det.bbox
    mx, my = b.width * margin, b.height * margin
    x1, y1 = max(int(b.x1 - mx), 0), max(int(b.y1 - my), 0)
    x2, y2 = min(int(b.x2 + mx), img.shape[1]), min(int(b.y2 + my), img.shape[0])
    return np.ascontiguousarray(img[y1:y2, x1:x2])


def side_by_side(a: np.ndarray, b: np.ndarray, height: int = 200, gap: int = 40) -> np.ndarray:
    """Two photos scaled to one height on a grey canvas: two comparable faces."""

    def scaled(img: np.ndarray) -> np.ndarray:
        w = round(img.shape[1] * height / img.shape[0])
        return cv2.resize(img, (w, height))

    a2, b2 = scaled(a), scaled(b)
    canvas = np.full((height + 2 * gap, a2.shape[1] + b2.shape[1] + 3 * gap, 3), 128, np.uint8)
    canvas[gap : gap + height, gap : gap + a2.shape[1]] = a2
    canvas[gap : gap + height, 2 * gap + a2.shape[1] : 2 * gap + a2.shape[1] + b2.shape[1]] = b2
    return canvas
