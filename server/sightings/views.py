"""Device API: sighting upload."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from edge.wire import MAX_BATCH, SightingBatchResult
from server.deps import DeviceDep, SessionDep
from server.errors import InvalidInput
from server.metrics import Metrics
from server.settings import Settings
from server.sightings.service import ingest_batch

router = APIRouter(prefix="/device", tags=["device"])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SightingBatch"}}},
    }
}


@router.post(
    "/sightings",
    response_model=SightingBatchResult,
    summary="Upload a batch of sightings (idempotent by the device's sighting id)",
    responses={413: {"description": "Body larger than the server's limit"}},
    openapi_extra=_BODY_DOC,
)
def post_sightings(
    body: Annotated[dict[str, Any], Body()],
    request: Request,
    device: DeviceDep,
    session: SessionDep,
) -> SightingBatchResult:
    """Store a batch; bad items are reported one by one and do not sink the rest.

    The body is checked as an envelope here and item by item in the service,
    so one malformed sighting yields an ``errors`` entry, not a 422 for all.
    """
    if set(body) != {"sightings"} or not isinstance(body["sightings"], list):
        raise InvalidInput("body must be {'sightings': [...]} and nothing else")
    items = body["sightings"]
    if not 1 <= len(items) <= MAX_BATCH:
        raise InvalidInput(f"a batch holds 1 to {MAX_BATCH} sightings, not {len(items)}")
    settings: Settings = request.app.state.settings
    outcome = ingest_batch(
        session=session,
        device=device,
        items=items,
        max_ahead=timedelta(seconds=settings.max_clock_ahead_s),
    )
    session.commit()
    metrics: Metrics = request.app.state.metrics
    if outcome.future_refused:
        metrics.future_refused.labels(str(device.id)).inc(outcome.future_refused)
    metrics.sightings.labels("created_known").inc(outcome.created_known)
    metrics.sightings.labels("created_unknown").inc(outcome.created_unknown)
    metrics.sightings.labels("duplicate").inc(outcome.result.duplicates)
    metrics.sightings.labels("rejected").inc(len(outcome.result.errors))
    return outcome.result
