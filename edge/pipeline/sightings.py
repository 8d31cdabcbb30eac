"""One finished track as the wire's sighting: what the daemon uploads and ``replay --server`` sends.

Below both the daemon and the ``replay`` command so that neither imports the
other; the mapping (known: occupant id only, unknown: embedding and crop) is
written once.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.face.errors import LintelEdgeError
from edge.pipeline.results import TrackResult
from edge.wire import SightingIn, encode_embedding, sighting_id


def track_to_sighting(
    result: TrackResult,
    *,
    device: str,
    source: str,
    camera: str,
    origin: datetime | None = None,
    occupant_ids: Mapping[str, int] | None = None,
) -> SightingIn:
    """Convert one :class:`TrackResult` to the wire's :class:`SightingIn`.

    ``origin``: the wall-clock time of frame 0 for a file (its timestamps are
    seconds from the start); None for live sources, whose timestamps are Unix
    time. A known identity becomes ``occupant_id`` via ``occupant_ids`` or, for
    server-synced galleries whose identities are occupant ids, ``int(identity)``.
    Known sightings carry no embedding and no crop.
    """

    def at(ts: float) -> datetime:
        if origin is not None:
            return origin + timedelta(seconds=ts)
        return datetime.fromtimestamp(ts, UTC)

    common: dict[str, Any] = {
        "id": sighting_id(
            device, source, result.start_frame, result.end_frame, track_id=result.track_id
        ),
        "camera": camera,
        "started_at": at(result.started_at),
        "ended_at": at(result.ended_at),
        "quality": min(1.0, max(0.0, result.quality)),
        "model_id": result.model_id,
    }
    similarity = max(-1.0, min(1.0, result.similarity))
    if result.identity is not None:
        if occupant_ids is not None and result.identity in occupant_ids:
            occupant_id = occupant_ids[result.identity]
        elif result.identity.isdigit():
            occupant_id = int(result.identity)
        else:
            raise LintelEdgeError(
                f"gallery identity {result.identity!r} is not an occupant id; "
                "upload needs a server-synced gallery or an identity -> occupant id map"
            )
        return SightingIn(kind="known", occupant_id=occupant_id, similarity=similarity, **common)
    crop = None
    if result.crop_jpeg is not None:
        crop = base64.b64encode(result.crop_jpeg).decode("ascii")
    return SightingIn(
        kind="unknown",
        similarity=similarity if result.best_candidate is not None else None,
        embedding_b64=encode_embedding(result.embedding),
        crop_jpeg_b64=crop,
        **common,
    )
