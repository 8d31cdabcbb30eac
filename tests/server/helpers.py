"""Small builders shared by the server tests."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np

from edge.wire import encode_embedding

T0 = datetime(2026, 11, 28, 18, 30, tzinfo=UTC)


def unit_vector(seed: int, dim: int = 512) -> np.ndarray:
    vec = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vec / np.linalg.norm(vec)


def jpeg_bytes(seed: int = 0, size: int = 64) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def known_item(occupant_id: int, *, n: int = 0, camera: str = "cam-1") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "camera": camera,
        "started_at": (T0 + timedelta(minutes=n)).isoformat(),
        "ended_at": (T0 + timedelta(minutes=n, seconds=4)).isoformat(),
        "quality": 0.8,
        "kind": "known",
        "occupant_id": occupant_id,
        "similarity": 0.61,
        "model_id": "buffalo_s",
    }


def unknown_item(
    *, n: int = 0, camera: str = "cam-1", crop: bytes | None = None, model_id: str = "buffalo_s"
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "camera": camera,
        "started_at": (T0 + timedelta(minutes=n)).isoformat(),
        "ended_at": (T0 + timedelta(minutes=n, seconds=3)).isoformat(),
        "quality": 0.7,
        "kind": "unknown",
        "model_id": model_id,
        "embedding_b64": encode_embedding(unit_vector(n)),
    }
    if crop is not None:
        item["crop_jpeg_b64"] = base64.b64encode(crop).decode()
    return item
