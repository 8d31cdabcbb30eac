"""Device API: gallery sync and heartbeat (device bearer token)."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request, Response

from edge.wire import (
    Gallery,
    GalleryTemplate,
    Heartbeat,
    HeartbeatAck,
    encode_embedding,
    gallery_etag,
)
from server.audit.service import record
from server.db import utcnow
from server.deps import DeviceDep, SessionDep
from server.devices.service import cameras_by_name, record_heartbeat
from server.metrics import Metrics
from server.occupants.service import gallery_entries
from server.sites.service import get_site

log = logging.getLogger(__name__)

router = APIRouter(prefix="/device", tags=["device"])


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get(
    "/gallery",
    response_model=Gallery,
    responses={304: {"description": "Gallery unchanged since the If-None-Match ETag"}},
    summary="The device's site gallery (templates of active occupants, site model only)",
)
def get_gallery(request: Request, device: DeviceDep, session: SessionDep) -> Response:
    """Send the gallery, or 304 when the client's ETag is current."""
    metrics: Metrics = request.app.state.metrics
    site = get_site(session=session, site_id=device.site_id)
    etag = gallery_etag(site.id, site.gallery_version)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _matches(request.headers.get("if-none-match"), etag):
        metrics.gallery.labels("not_modified").inc()
        return Response(status_code=304, headers=headers)
    # Version read before templates: a concurrent change can only make the
    # client see newer templates under the older ETag, so it fetches again.
    entries = gallery_entries(session=session, site=site)
    gallery = Gallery(
        site_id=site.id,
        version=site.gallery_version,
        model_id=site.model_id,
        templates=[
            GalleryTemplate(
                template_id=e.template_id,
                occupant_id=e.occupant_id,
                embedding_b64=encode_embedding(_as_vector(e.embedding)),
                model_id=site.model_id,
            )
            for e in entries
        ],
    )
    # Biometric templates left the server: that is audited.
    record(
        session=session,
        actor=f"device:{device.id}",
        action="gallery.download",
        object_type="gallery",
        object_id=site.gallery_version,
        site_id=site.id,
        detail={"templates": len(entries)},
    )
    session.commit()
    metrics.gallery.labels("full").inc()
    return Response(
        content=gallery.model_dump_json(), media_type="application/json", headers=headers
    )


def _as_vector(blob: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(blob, dtype="<f4")


@router.post("/heartbeat", response_model=HeartbeatAck, summary="Device liveness and stats")
def post_heartbeat(
    heartbeat: Heartbeat, request: Request, device: DeviceDep, session: SessionDep
) -> HeartbeatAck:
    """Store the device's stats; the reply tells it the current gallery version."""
    site = get_site(session=session, site_id=device.site_id)
    if heartbeat.model_id is not None and heartbeat.model_id != site.model_id:
        # The edge will refuse the gallery; say so where an operator looks.
        log.warning(
            "device %s runs model %r but site %s uses %r",
            device.id,
            heartbeat.model_id,
            site.id,
            site.model_id,
        )
    cameras_by_name(session=session, device_id=device.id, names=heartbeat.cameras.keys())
    record_heartbeat(
        session=session,
        device=device,
        software_version=heartbeat.version,
        stats=heartbeat.model_dump(mode="json"),
    )
    version = site.gallery_version
    session.commit()
    request.app.state.metrics.heartbeats.inc()
    return HeartbeatAck(server_time=utcnow(), gallery_version=version)
