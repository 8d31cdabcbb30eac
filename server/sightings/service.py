"""Sighting ingest: validate a batch item by item, then store it in bulk.

The hot path avoids per-row ORM work: items are validated with the wire
schema, checked against the site with one query per kind of reference
(cameras, occupants), and written with one multi-row
``INSERT ... ON CONFLICT (device_id, uuid) DO NOTHING RETURNING`` -- the
conflict clause is what makes a re-sent batch create nothing twice, even when
two workers receive the same batch at once. Ids are the device's own: the
same id from another device is another sighting, stored as such.

Times are checked against the server's clock: a sighting that starts or
ends more than ``max_ahead`` in the future is refused item by item (and
counted on the device row), because the purge could never age it out and
the recurrence rule would count days that have not happened.
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from edge.wire import (
    MAX_CROP_BYTES,
    ItemError,
    SightingBatchResult,
    SightingIn,
    decode_embedding,
)
from server.db import utcnow
from server.devices.models import Device
from server.devices.service import cameras_by_name
from server.dialect import insert_ignore
from server.embeddings import check_embedding, model_dimension
from server.occupants.models import Occupant
from server.sightings import crops
from server.sightings.models import Sighting
from server.sites.models import Site

log = logging.getLogger(__name__)

_EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_MAX_ID = 2**31 - 1  # occupants.id is a 32-bit INTEGER on PostgreSQL
DEFAULT_MAX_AHEAD = timedelta(minutes=5)
"""How far in the future a sighting's times may lie (clock skew of a healthy edge)."""


@dataclass(slots=True)
class _Row:
    index: int
    item: SightingIn
    values: dict[str, Any]
    crop: bytes | None = None


@dataclass(slots=True)
class IngestOutcome:
    """Result of one batch: the wire result plus counts for metrics."""

    result: SightingBatchResult
    created_known: int = 0
    created_unknown: int = 0
    future_refused: int = 0
    """Items refused because their times lie in the future (a wrong edge clock)."""


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    return "; ".join(parts)[:500]


def _decode_crop(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("crop_jpeg_b64 is not valid base64") from exc
    if len(raw) > MAX_CROP_BYTES:
        raise ValueError(f"crop is {len(raw)} bytes, more than {MAX_CROP_BYTES}")
    if not raw.startswith(crops.JPEG_MAGIC):
        raise ValueError("crop is not a JPEG")
    return raw


def ingest_batch(
    *,
    session: Session,
    device: Device,
    items: Sequence[Any],
    max_ahead: timedelta = DEFAULT_MAX_AHEAD,
    now: datetime | None = None,
) -> IngestOutcome:
    """Store a batch of raw sighting items from ``device`` (flush only; caller commits).

    Each bad item becomes an :class:`ItemError` and the rest are stored;
    items whose id this device already stored (or repeated in the batch)
    count as duplicates. Items dated more than ``max_ahead`` after ``now``
    (default: the server's clock) are errors, counted in
    ``Device.future_refused``.
    """
    site = session.get(Site, device.site_id)
    if site is None:  # the device's site was deleted under it
        raise RuntimeError(f"device {device.id} has no site")
    now = now or utcnow()
    latest_ok = now + max_ahead
    future_refused = 0
    errors: list[ItemError] = []
    rows: list[_Row] = []
    seen: set[uuid.UUID] = set()
    in_batch_duplicates = 0
    dim: int | None = None  # the site model's embedding size, looked up at the first face

    def reject(index: int, sid: uuid.UUID | None, message: str) -> None:
        errors.append(ItemError(index=index, id=sid, error=message))

    for index, raw in enumerate(items):
        try:
            item = SightingIn.model_validate(raw)
        except ValidationError as exc:
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            try:
                sid = uuid.UUID(str(raw_id)) if raw_id is not None else None
            except ValueError:
                sid = None
            reject(index, sid, _format_validation_error(exc))
            continue
        if item.id in seen:
            in_batch_duplicates += 1
            continue
        if not (item.started_at >= _EARLIEST and item.ended_at <= _LATEST):
            # Also keeps far-off offsets from overflowing the UTC conversion.
            reject(index, item.id, "times must lie between 1970 and 2200")
            continue
        if item.ended_at > latest_ok:
            # ended_at >= started_at (wire check), so this covers both times.
            ahead = (item.ended_at - now).total_seconds()
            reject(
                index,
                item.id,
                f"ended_at {item.ended_at.isoformat()} is {ahead:.0f} s ahead of the server's "
                f"clock (at most {max_ahead.total_seconds():.0f} s allowed): "
                "check the device's clock (NTP)",
            )
            future_refused += 1
            continue
        if item.occupant_id is not None and not 1 <= item.occupant_id <= _MAX_ID:
            reject(index, item.id, f"occupant {item.occupant_id} is not on this site")
            continue
        embedding: bytes | None = None
        crop: bytes | None = None
        if item.kind == "unknown":
            if item.model_id != site.model_id:
                reject(
                    index,
                    item.id,
                    f"model_id {item.model_id!r} does not match the site's model {site.model_id!r}",
                )
                continue
            try:
                if dim is None:
                    dim = model_dimension(session, site.model_id)
                vec = check_embedding(
                    decode_embedding(item.embedding_b64 or ""), dim=dim, what="embedding_b64"
                )
                dim = vec.size  # a model new to the server: its first face sets the size
                embedding = vec.astype("<f4").tobytes()
                if item.crop_jpeg_b64 is not None:
                    crop = _decode_crop(item.crop_jpeg_b64)
            except (ValueError, binascii.Error) as exc:
                reject(index, item.id, str(exc))
                continue
        seen.add(item.id)
        rows.append(
            _Row(
                index=index,
                item=item,
                crop=crop,
                values={
                    "uuid": item.id,
                    "site_id": site.id,
                    "device_id": device.id,
                    "started_at": item.started_at,
                    "ended_at": item.ended_at,
                    "kind": item.kind,
                    "occupant_id": item.occupant_id,
                    "similarity": item.similarity,
                    "quality": item.quality,
                    "model_id": item.model_id,
                    "embedding": embedding,
                    "has_crop": crop is not None,
                },
            )
        )

    # Known sightings may only name occupants of the device's own site.
    occupant_ids = {r.item.occupant_id for r in rows if r.item.occupant_id is not None}
    if occupant_ids:
        valid = set(
            session.scalars(
                select(Occupant.id).where(
                    Occupant.site_id == site.id, Occupant.id.in_(occupant_ids)
                )
            )
        )
        kept = []
        for r in rows:
            if r.item.occupant_id is not None and r.item.occupant_id not in valid:
                reject(r.index, r.item.id, f"occupant {r.item.occupant_id} is not on this site")
            else:
                kept.append(r)
        rows = kept

    created_ids: dict[uuid.UUID, int] = {}
    if rows:
        cameras = cameras_by_name(
            session=session, device_id=device.id, names=(r.item.camera for r in rows)
        )
        values = []
        for r in rows:
            cam = cameras[r.item.camera]
            r.values.update(
                camera_id=cam.id,
                entrance_id=cam.entrance_id,
                received_at=now,
                # Known sightings have nothing to cluster: born processed, so the
                # clustering worker never rewrites them (most of the traffic).
                processed=r.item.kind == "known",
                cluster_id=None,
            )
            values.append(r.values)
        table = cast(Table, Sighting.__table__)
        # Every row is this device's, so uuid alone keys what RETURNING gives back.
        stmt = insert_ignore(session, table, ["device_id", "uuid"]).returning(
            table.c.id, table.c.uuid
        )
        for row in session.execute(stmt, values):
            created_ids[row.uuid] = row.id
        expires = now + timedelta(days=site.crop_retention_days)
        crops.put_many(
            session=session,
            crops=[
                (created_ids[r.item.id], r.crop)
                for r in rows
                if r.crop and r.item.id in created_ids
            ],
            expires_at=expires,
        )
    if future_refused:
        # Counted in SQL, so two workers refusing at once both count.
        session.execute(
            update(Device)
            .where(Device.id == device.id)
            .values(future_refused=Device.future_refused + future_refused)
            .execution_options(synchronize_session=False)
        )
    session.flush()
    created_known = sum(1 for r in rows if r.item.id in created_ids and r.item.kind == "known")
    created = len(created_ids)
    duplicates = len(rows) - created + in_batch_duplicates
    errors.sort(key=lambda e: e.index)
    return IngestOutcome(
        result=SightingBatchResult(created=created, duplicates=duplicates, errors=errors),
        created_known=created_known,
        created_unknown=created - created_known,
        future_refused=future_refused,
    )


def count_sightings(*, session: Session, site_id: int | None = None) -> dict[str, int]:
    """Stored sightings by kind (``known``, ``unknown``)."""
    query = select(Sighting.kind, func.count()).group_by(Sighting.kind)
    if site_id is not None:
        query = query.where(Sighting.site_id == site_id)
    counts = {"known": 0, "unknown": 0}
    for kind, n in session.execute(query):
        counts[str(kind)] = int(n)
    return counts
