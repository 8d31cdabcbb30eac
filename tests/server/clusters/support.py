"""Builders for clustering and case tests: people as vectors, sightings through ingest."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from edge.wire import encode_embedding
from server.clusters.worker import PassStats, drain
from server.db import make_session_factory
from server.devices.models import Device
from server.sightings.service import ingest_batch

MODEL = "buffalo_s"
DIM = 512
# 19:00 in Shanghai (UTC+8) on day 0: people coming home.
DAY0 = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)


def person(seed: int) -> npt.NDArray[np.float32]:
    """A random identity direction (different seeds: cosine ~0)."""
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def look(base: npt.NDArray[np.float32], seed: int, noise: float = 0.03) -> npt.NDArray[np.float32]:
    """One sighting of ``base``: noise 0.03/dim gives cosine ~0.7 with the identity."""
    v = base + np.random.default_rng(seed).standard_normal(DIM) * noise
    return (v / np.linalg.norm(v)).astype(np.float32)


def at_cos(a: npt.NDArray[np.float32], cos: float, seed: int) -> npt.NDArray[np.float32]:
    """A unit vector at exactly cosine ``cos`` from unit vector ``a``."""
    b = np.random.default_rng(seed).standard_normal(DIM)
    b -= (b @ a) * a
    b /= np.linalg.norm(b)
    v = cos * a + np.sqrt(1 - cos**2) * b
    return (v / np.linalg.norm(v)).astype(np.float32)


def item(
    vec: npt.NDArray[np.float32],
    at: datetime,
    *,
    camera: str = "gate",
    quality: float = 0.7,
) -> dict[str, Any]:
    """A wire ``SightingIn`` dict of an unknown face."""
    return {
        "id": str(uuid.uuid4()),
        "camera": camera,
        "started_at": at.isoformat(),
        "ended_at": (at + timedelta(seconds=3)).isoformat(),
        "quality": quality,
        "kind": "unknown",
        "model_id": MODEL,
        "embedding_b64": encode_embedding(vec),
    }


def ingest(engine: Engine, device_id: int, items: list[dict[str, Any]]) -> None:
    """Store sightings through the real ingest service and commit."""
    with make_session_factory(engine)() as s:
        device = s.get(Device, device_id)
        assert device is not None
        out = ingest_batch(session=s, device=device, items=items)
        assert not out.result.errors, out.result.errors
        s.commit()


def seen_on(
    engine: Engine, device_id: int, vec_seed: tuple[npt.NDArray[np.float32], int], days: list[int]
) -> None:
    """One sighting of a person on each of ``days`` (19:00 local), then nothing else."""
    base, seed = vec_seed
    ingest(
        engine,
        device_id,
        [item(look(base, seed * 1000 + d), DAY0 + timedelta(days=d)) for d in days],
    )


def work(engine: Engine, batch_size: int = 1000) -> PassStats:
    """Run the worker until no work is left."""
    return drain(make_session_factory(engine), batch_size=batch_size)


def new_session(engine: Engine) -> Session:
    return make_session_factory(engine)()
