"""Edge <-> server wire schemas: defined once, imported by both sides.

The bottom floor (docs/architecture.md): it imports nothing of ours, only
pydantic and numpy, so the edge box, the office PC's registry tool and the
server all import it downward, and an edge install needs no SQLAlchemy or
FastAPI for it.

Embeddings travel as base64 of little-endian float32 (``embedding_b64``);
crops as base64 JPEG (``crop_jpeg_b64``). Registered occupants' faces never
travel edge -> server: a ``known`` sighting carries only the occupant id, the
similarity and the time.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

API_PREFIX = "/api/v1"
MAX_BATCH = 500
MAX_CROP_BYTES = 96 * 1024
MAX_EMBEDDING_DIM = 1024

# Namespace for client-made sighting ids: uuid5(NS, f"{device}/{source}/{start}-{end}/t{track}")
SIGHTING_NAMESPACE = uuid.UUID("6f1c1a52-3c0b-4d59-9a47-4c2f0e0d7e11")


def encode_embedding(vec: npt.NDArray[np.float32]) -> str:
    """Base64 of the little-endian float32 bytes of a 1-D vector."""
    return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")


def decode_embedding(text: str) -> npt.NDArray[np.float32]:
    """Inverse of :func:`encode_embedding`; raises ValueError on bad input."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 4 or not raw:
        raise ValueError("embedding is not a whole number of float32 values")
    vec = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if vec.size > MAX_EMBEDDING_DIM:
        raise ValueError(f"embedding has {vec.size} values, more than {MAX_EMBEDDING_DIM}")
    if not np.all(np.isfinite(vec)):
        raise ValueError("embedding holds NaN or infinite values")
    return vec


def sighting_id(
    device: str, source: str, start_frame: int, end_frame: int, *, track_id: int
) -> uuid.UUID:
    """Deterministic client id: replaying the same source gives the same ids.

    The track id is part of it: two people walking in together are two tracks
    over the same frames, and without it they would share one id (the server
    would keep one and count the other a duplicate).
    """
    return uuid.uuid5(
        SIGHTING_NAMESPACE, f"{device}/{source}/{start_frame}-{end_frame}/t{track_id}"
    )


def gallery_etag(site_id: int, version: int) -> str:
    """The HTTP ETag of a site's gallery at ``version`` (quoted, strong)."""
    return f'"{site_id}.{version}"'


def _reject_nul(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key)
            _reject_nul(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _reject_nul(item)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL text cannot hold NUL; refuse it here, on both sides of
        # the wire, rather than fail with a 500 at INSERT time.
        _reject_nul(data)
        return data


class SightingIn(_Wire):
    """One face track at one entrance, as the edge reports it."""

    id: uuid.UUID = Field(
        description="Client-made id, unique per device: the same device re-sending it "
        "stores nothing twice; another device's sighting of the same id is its own."
    )
    camera: Annotated[str, Field(min_length=1, max_length=64)]
    started_at: AwareDatetime
    ended_at: AwareDatetime
    quality: Annotated[float, Field(ge=0.0, le=1.0)]
    kind: Literal["known", "unknown"]
    occupant_id: int | None = None
    similarity: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    model_id: Annotated[str, Field(max_length=128)] | None = None
    embedding_b64: Annotated[str, Field(max_length=8192)] | None = None
    crop_jpeg_b64: Annotated[str, Field(max_length=(MAX_CROP_BYTES * 4) // 3 + 4)] | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> SightingIn:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        if self.kind == "known":
            if self.occupant_id is None:
                raise ValueError("a known sighting needs occupant_id")
            if self.embedding_b64 is not None or self.crop_jpeg_b64 is not None:
                raise ValueError("a known sighting must not carry a face (embedding or crop)")
        else:
            if self.occupant_id is not None:
                raise ValueError("an unknown sighting has no occupant_id")
            if self.embedding_b64 is None or self.model_id is None:
                raise ValueError("an unknown sighting needs embedding_b64 and model_id")
        return self


class SightingBatch(_Wire):
    sightings: Annotated[list[SightingIn], Field(min_length=1, max_length=MAX_BATCH)]


class ItemError(_Wire):
    index: int
    id: uuid.UUID | None
    error: str


class SightingBatchResult(_Wire):
    created: int
    duplicates: int
    errors: list[ItemError] = []


class GalleryTemplate(_Wire):
    template_id: int
    occupant_id: int
    embedding_b64: str
    # Which recogniser made the embedding; an edge refuses templates of another model.
    model_id: str | None = None


class Gallery(_Wire):
    """A site's gallery for its edges; ``version`` is also the ETag."""

    site_id: int
    version: int
    model_id: str
    templates: list[GalleryTemplate]

    @property
    def etag(self) -> str:
        """What to send back as ``If-None-Match`` on the next sync."""
        return gallery_etag(self.site_id, self.version)


class Heartbeat(_Wire):
    version: str
    model_id: str | None = None
    uptime_s: float = 0.0
    cameras: dict[str, CameraStats] = {}
    outbox_depth: int = 0
    # Sightings the edge's full outbox dropped (oldest first) and ones the
    # server refused (kept in the edge's dead table); both should stay 0.
    outbox_dropped: int = 0
    outbox_dead: int = 0
    # issue 17 D (optional): the camera settings version the box runs (None: a box that
    # does not take settings from the server) and, per camera, the settings its own
    # edge.yaml pins (those win over the server's).
    config_version: int | None = None
    config_pinned: dict[str, list[str]] | None = None
    gallery_version: int | None = None


class CameraStats(_Wire):
    state: Literal["starting", "running", "reconnecting", "stalled", "stopped"] = "running"
    fps: float = 0.0
    frames: int = 0
    dropped_frames: int = 0
    reconnects: int = 0
    # issue 17 D (optional): frames analysed per second, whether the camera is on, and
    # when its last track was recorded (the devices page's "last sighting").
    analysed_fps: float | None = None
    enabled: bool | None = None
    last_track_at: AwareDatetime | None = None


class HeartbeatAck(_Wire):
    server_time: datetime
    gallery_version: int
    # issue 17 D: only sent to a box whose heartbeat carried config_version (an older
    # box's strict model would refuse an unknown field).
    config_version: int | None = None


Heartbeat.model_rebuild()


# -- issue 17 D: camera settings from the server, enrolment codes, snapshots ------------
# Additive: every new field above is optional, and these models are used only by
# boxes that know them. The box fetches its settings with GET /device/config
# (ETag: config_etag) when the heartbeat ack names a version it does not run.

SETTING_KEYS = ("enabled", "analyse_fps", "roi")
"""The per-camera settings the server manages; a box's edge.yaml may pin each."""

MAX_SNAPSHOT_BYTES = 64 * 1024
SNAPSHOT_WIDTH = 320
"""Snapshots are for checking the angle and drawing the region of interest: 320 px
wide is enough for that and too small to recognise anyone far from the camera."""


def config_etag(device_id: int, version: int) -> str:
    """The HTTP ETag of a device's settings at ``version`` (quoted, strong)."""
    return f'"cfg.{device_id}.{version}"'


Roi = tuple[float, float, float, float]
"""A region of interest (x1, y1, x2, y2), normalised 0..1 of the frame."""


def check_roi(roi: Roi | None) -> Roi | None:
    """``roi`` when it is a real rectangle inside the frame; ValueError otherwise."""
    if roi is None:
        return None
    x1, y1, x2, y2 = roi
    if not all(0.0 <= v <= 1.0 for v in roi):
        raise ValueError("region of interest coordinates must be between 0 and 1")
    if x2 - x1 < 0.05 or y2 - y1 < 0.05:
        raise ValueError("region of interest must be at least 5% of the frame each way")
    return roi


class CameraSettings(_Wire):
    """One camera's settings as the server holds them (None: the box's own default)."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    enabled: bool = True
    analyse_fps: Annotated[float, Field(gt=0, le=120)] | None = None
    roi: Roi | None = None
    entrance: str | None = None

    @model_validator(mode="after")
    def _check(self) -> CameraSettings:
        check_roi(self.roi)
        return self


class DeviceSettings(_Wire):
    """A device's settings at one version; ``snapshots``: the site opted in."""

    device_id: int
    version: int
    snapshots: bool = False
    snapshot_interval_s: Annotated[float, Field(ge=10, le=86400)] = 300.0
    cameras: list[CameraSettings] = []

    @property
    def etag(self) -> str:
        """What to send back as ``If-None-Match``."""
        return config_etag(self.device_id, self.version)


class SnapshotIn(_Wire):
    """A recent low-resolution frame of one camera (only when the site opted in)."""

    camera: Annotated[str, Field(min_length=1, max_length=64)]
    taken_at: AwareDatetime
    jpeg_b64: Annotated[str, Field(max_length=(MAX_SNAPSHOT_BYTES * 4) // 3 + 4)]


class EnrolRequest(_Wire):
    """A box trading a one-time enrolment code for its token."""

    code: Annotated[str, Field(min_length=1, max_length=32)]


class EnrolResult(_Wire):
    """The device's token (the only time it travels) and who the box is."""

    token: str
    device_id: int
    device: str
    site_id: int
