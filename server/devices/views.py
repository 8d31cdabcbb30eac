"""Device API: gallery sync and heartbeat (device bearer token)."""

from __future__ import annotations

import base64
import binascii
import logging

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from edge.wire import (
    DeviceSettings,
    EnrolRequest,
    EnrolResult,
    Gallery,
    GalleryTemplate,
    Heartbeat,
    HeartbeatAck,
    SnapshotIn,
    config_etag,
    encode_embedding,
    gallery_etag,
)
from server.audit.service import record
from server.db import utcnow
from server.deps import DeviceDep, SessionDep
from server.devices.enrolment import redeem_enrolment_code
from server.devices.errors import TooManyAttempts
from server.devices.service import cameras_by_name, record_heartbeat
from server.devices.settings import device_settings
from server.devices.snapshots import store_snapshot
from server.errors import InvalidInput, LintelError
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


@router.post(
    "/heartbeat",
    response_model=HeartbeatAck,
    response_model_exclude_none=True,
    summary="Device liveness and stats",
)
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
    # Only a box that takes settings from the server hears their version (issue 17 D).
    config_version = device.config_version if heartbeat.config_version is not None else None
    session.commit()
    request.app.state.metrics.heartbeats.inc()
    return HeartbeatAck(
        server_time=utcnow(), gallery_version=version, config_version=config_version
    )


# -- issue 17 D: settings, snapshots, enrolment ----------------------------------------------
@router.get(
    "/config",
    response_model=DeviceSettings,
    responses={304: {"description": "Settings unchanged since the If-None-Match ETag"}},
    summary="The device's camera settings (entrance, analysed fps, region of interest, on/off)",
)
def get_config(request: Request, device: DeviceDep, session: SessionDep) -> Response:
    """Send the settings, or 304 when the client's ETag is current."""
    etag = config_etag(device.id, device.config_version)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    settings = device_settings(session=session, device=device)
    return Response(
        content=settings.model_dump_json(), media_type="application/json", headers=headers
    )


@router.post(
    "/snapshot",
    status_code=204,
    summary="A recent low-resolution frame of a camera (only when the site opted in)",
)
def post_snapshot(snapshot: SnapshotIn, device: DeviceDep, session: SessionDep) -> Response:
    """Keep the camera's latest snapshot (sealed); 409 when the site keeps none."""
    try:
        jpeg = base64.b64decode(snapshot.jpeg_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("jpeg_b64 is not base64") from exc
    camera = cameras_by_name(session=session, device_id=device.id, names=[snapshot.camera])
    store_snapshot(
        session=session,
        device=device,
        camera_id=camera[snapshot.camera].id,
        jpeg=jpeg,
        taken_at=snapshot.taken_at,
    )
    session.commit()
    return Response(status_code=204)


@router.post(
    "/enrol",
    response_model=EnrolResult,
    summary="Trade a one-time enrolment code for the device's token (no token needed)",
)
def post_enrol(body: EnrolRequest, request: Request, session: SessionDep) -> Response:
    """The device's new token for a live code; wrong codes are counted per address."""
    address = request.client.host if request.client else "unknown"
    try:
        device, token = redeem_enrolment_code(session=session, code=body.code, address=address)
    except TooManyAttempts as exc:
        return JSONResponse(
            {"detail": exc.detail, "code": exc.code},
            status_code=exc.status_code,
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    except LintelError:
        # The failed attempt and its audit are the rate limit's memory: keep them.
        session.commit()
        raise
    session.commit()
    result = EnrolResult(
        token=token, device_id=device.id, device=device.name, site_id=device.site_id
    )
    # A token in the body: no cache may keep it.
    return Response(
        content=result.model_dump_json(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
