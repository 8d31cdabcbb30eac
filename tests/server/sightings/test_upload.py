"""Sighting upload: idempotency, per-item errors, site binding, size limits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from edge.wire import API_PREFIX, MAX_BATCH, SightingBatchResult
from server.app import create_app
from server.db import make_session_factory
from server.devices.models import Device
from server.occupants.service import upsert_occupant
from server.settings import Settings
from server.sightings import crops
from server.sightings.models import Sighting
from tests.server.asgi import SyncASGITransport
from tests.server.conftest import DeviceCreds
from tests.server.helpers import jpeg_bytes, known_item, unit_vector, unknown_item

URL = f"{API_PREFIX}/device/sightings"


def _occupant(engine: Engine, site_id: int, name: str = "wang") -> int:
    with make_session_factory(engine)() as s:
        occ = upsert_occupant(session=s, site_id=site_id, name=name)
        s.commit()
        return occ.id


def _post(client: httpx.Client, creds: DeviceCreds, items: list[Any]) -> SightingBatchResult:
    r = client.post(URL, json={"sightings": items}, headers=creds.headers)
    assert r.status_code == 200, r.text
    return SightingBatchResult.model_validate_json(r.content)


def _count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Sighting)) or 0)


def test_resent_batch_creates_nothing_twice(
    client: httpx.Client, device: DeviceCreds, engine: Engine, session: Session
) -> None:
    occ = _occupant(engine, device.site_id)
    items = [known_item(occ, n=i) for i in range(5)] + [unknown_item(n=i) for i in range(5)]
    first = _post(client, device, items)
    assert (first.created, first.duplicates, first.errors) == (10, 0, [])
    again = _post(client, device, items)
    assert (again.created, again.duplicates, again.errors) == (0, 10, [])
    # Partly new: only the new ones are created.
    mixed = _post(client, device, [*items[:3], unknown_item(n=99)])
    assert (mixed.created, mixed.duplicates) == (1, 3)
    assert _count(session) == 11


def test_duplicate_ids_inside_one_batch(
    client: httpx.Client, device: DeviceCreds, session: Session
) -> None:
    item = unknown_item()
    result = _post(client, device, [item, item])
    assert (result.created, result.duplicates) == (1, 1)
    assert _count(session) == 1


def test_stored_fields_embedding_and_crop(
    client: httpx.Client, device: DeviceCreds, engine: Engine, session: Session
) -> None:
    occ = _occupant(engine, device.site_id)
    jpeg = jpeg_bytes(seed=3)
    unk = unknown_item(n=7, crop=jpeg, camera="door-b")
    kn = known_item(occ, n=8)
    assert _post(client, device, [unk, kn]).created == 2
    rows = {r.kind: r for r in session.scalars(select(Sighting))}
    u, k = rows["unknown"], rows["known"]
    assert u.uuid == uuid.UUID(unk["id"])
    assert u.site_id == device.site_id and u.device_id == device.device_id
    assert u.embedding is not None
    np.testing.assert_allclose(np.frombuffer(u.embedding, dtype="<f4"), unit_vector(7))
    assert u.has_crop and crops.get(session=session, sighting_id=u.id) == jpeg
    assert not u.processed and u.cluster_id is None
    assert k.occupant_id == occ and k.similarity == 0.61
    assert k.embedding is None and not k.has_crop
    assert crops.get(session=session, sighting_id=k.id) is None
    assert k.started_at.isoformat() == kn["started_at"]


def test_per_item_errors_do_not_sink_the_batch(
    client: httpx.Client, device: DeviceCreds, session: Session
) -> None:
    good = unknown_item(n=1)
    bad_embedding = {**unknown_item(n=2), "embedding_b64": "!!not base64!!"}
    not_jpeg = unknown_item(n=3, crop=b"GIF89a" + b"\0" * 20)
    wrong_model = unknown_item(n=4, model_id="antelopev2")
    known_with_face = {**unknown_item(n=5), "kind": "known", "occupant_id": 1}
    reversed_times = {**unknown_item(n=6), "ended_at": "2020-01-01T00:00:00+00:00"}
    not_an_object = "hello"
    result = _post(
        client,
        device,
        [
            good,
            bad_embedding,
            not_jpeg,
            wrong_model,
            known_with_face,
            reversed_times,
            not_an_object,
        ],
    )
    assert result.created == 1
    assert [e.index for e in result.errors] == [1, 2, 3, 4, 5, 6]
    assert result.errors[0].id == uuid.UUID(bad_embedding["id"])
    assert "JPEG" in result.errors[1].error
    assert "antelopev2" in result.errors[2].error
    assert "must not carry a face" in result.errors[3].error
    assert "before started_at" in result.errors[4].error
    assert result.errors[5].id is None
    assert _count(session) == 1


def test_oversized_crop_is_an_item_error(client: httpx.Client, device: DeviceCreds) -> None:
    big = b"\xff\xd8\xff" + b"\0" * (96 * 1024 + 10)
    result = _post(client, device, [unknown_item(crop=big), unknown_item(n=1)])
    assert result.created == 1
    assert len(result.errors) == 1 and result.errors[0].index == 0


def test_occupant_of_another_site_is_refused(
    client: httpx.Client, make_device: Callable[..., DeviceCreds], engine: Engine
) -> None:
    a = make_device(site="A", name="gate")
    b = make_device(site="B", name="gate")
    occ_b = _occupant(engine, b.site_id)
    result = _post(client, a, [known_item(occ_b), known_item(10_000)])
    assert result.created == 0
    assert [e.index for e in result.errors] == [0, 1]
    assert "not on this site" in result.errors[0].error
    # B's own device may report its occupant.
    assert _post(client, b, [known_item(occ_b)]).created == 1


def test_sightings_land_in_the_device_site(
    client: httpx.Client,
    make_device: Callable[..., DeviceCreds],
    session: Session,
) -> None:
    a = make_device(site="A", name="gate")
    b = make_device(site="B", name="gate")
    _post(client, a, [unknown_item(n=1)])
    _post(client, b, [unknown_item(n=2), unknown_item(n=3)])
    by_site = dict(
        session.execute(select(Sighting.site_id, func.count()).group_by(Sighting.site_id)).all()
    )
    assert by_site == {a.site_id: 1, b.site_id: 2}


def test_malformed_bodies_are_422(client: httpx.Client, device: DeviceCreds) -> None:
    h = {**device.headers, "Content-Type": "application/json"}
    assert client.post(URL, content=b"{not json", headers=h).status_code == 422
    assert client.post(URL, content=b"[]", headers=h).status_code == 422
    assert client.post(URL, json={"sightings": []}, headers=device.headers).status_code == 422
    assert client.post(URL, json={"sightings": {}}, headers=device.headers).status_code == 422
    extra = {"sightings": [unknown_item()], "more": 1}
    assert client.post(URL, json=extra, headers=device.headers).status_code == 422
    too_many = {"sightings": [{"id": "x"}] * (MAX_BATCH + 1)}
    r = client.post(URL, json=too_many, headers=device.headers)
    assert r.status_code == 422
    assert str(MAX_BATCH) in r.json()["detail"]


def test_bad_token_uploads_nothing(
    client: httpx.Client, device: DeviceCreds, session: Session
) -> None:
    r = client.post(
        URL, json={"sightings": [unknown_item()]}, headers={"Authorization": "Bearer nope"}
    )
    assert r.status_code == 401
    assert _count(session) == 0


def test_oversized_body_is_413(client: httpx.Client, device: DeviceCreds) -> None:
    # The test app's limit is 256 KiB; 4 crops of ~90 KiB exceed it.
    crop = b"\xff\xd8\xff" + bytes(90 * 1024)
    body = json.dumps({"sightings": [unknown_item(n=i, crop=crop) for i in range(4)]}).encode()
    r = client.post(
        URL, content=body, headers={**device.headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"


def test_oversized_chunked_body_is_413(client: httpx.Client, device: DeviceCreds) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"sightings": ["'
        for _ in range(300):
            yield b"x" * 1024
        yield b'"]}'

    r = client.post(
        URL, content=chunks(), headers={**device.headers, "Content-Type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413


def test_same_batch_sent_concurrently_is_stored_once(
    client: httpx.Client, device: DeviceCreds, session: Session
) -> None:
    # The edge retries on timeout while the first request may still be running:
    # the unique id + ON CONFLICT must hold across concurrent transactions.
    items = [unknown_item(n=i) for i in range(20)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _post(client, device, items), range(4)))
    assert sum(r.created for r in results) == 20
    assert sum(r.duplicates for r in results) == 60
    assert _count(session) == 20


def test_nul_characters_are_item_errors_not_500(
    client: httpx.Client, device: DeviceCreds, session: Session
) -> None:
    # PostgreSQL text cannot hold NUL; found by the schemathesis run.
    result = _post(client, device, [unknown_item(camera="door\x00a"), unknown_item(n=1)])
    assert result.created == 1
    assert [e.index for e in result.errors] == [0]
    assert "NUL" in result.errors[0].error
    r = client.post(
        f"{API_PREFIX}/device/heartbeat", json={"version": "1\x00"}, headers=device.headers
    )
    assert r.status_code == 422


def test_out_of_range_values_are_item_errors_not_500(
    client: httpx.Client, device: DeviceCreds
) -> None:
    # An occupant id beyond PostgreSQL's INTEGER, and times whose UTC
    # conversion overflows, once made the whole request fail.
    early = "0001-01-01T00:00:00+05:00"
    late = "9999-12-31T23:59:00-05:00"
    items = [
        known_item(2**40),
        {**unknown_item(n=1), "started_at": early, "ended_at": early},
        {**unknown_item(n=2), "started_at": late, "ended_at": late},
        unknown_item(n=3),
    ]
    result = _post(client, device, items)
    assert result.created == 1
    assert [e.index for e in result.errors] == [0, 1, 2]
    assert "between 1970 and 2200" in result.errors[1].error


def test_same_id_from_another_device_is_that_devices_own_sighting(
    client: httpx.Client, make_device: Callable[..., DeviceCreds], session: Session
) -> None:
    # Two boxes replaying the same video make the same ids; so could any
    # client id. Site B's walk-in must be stored, not dropped as A's duplicate.
    a = make_device(site="A", name="gate")
    b = make_device(site="B", name="gate")
    a2 = make_device(site="A", name="garage")
    item = unknown_item(n=1, crop=jpeg_bytes(seed=5))
    assert _post(client, a, [item]) == SightingBatchResult(created=1, duplicates=0)
    # Nothing in B's answer says the id exists elsewhere: it is simply created.
    assert _post(client, b, [item]) == SightingBatchResult(created=1, duplicates=0)
    assert _post(client, a2, [item]) == SightingBatchResult(created=1, duplicates=0)
    # Each device's own resend is still an idempotent duplicate.
    assert _post(client, b, [item]) == SightingBatchResult(created=0, duplicates=1)
    rows = session.execute(
        select(Sighting.id, Sighting.device_id, Sighting.site_id).where(
            Sighting.uuid == uuid.UUID(item["id"])
        )
    ).all()
    assert sorted((r.device_id, r.site_id) for r in rows) == sorted(
        [(a.device_id, a.site_id), (b.device_id, b.site_id), (a2.device_id, a2.site_id)]
    )
    # Every one has its own crop (crops are keyed by the stored sighting, not the client id).
    for r in rows:
        assert crops.get(session=session, sighting_id=r.id) == jpeg_bytes(seed=5)


def _at(item: dict[str, Any], start: datetime) -> dict[str, Any]:
    return {
        **item,
        "started_at": start.isoformat(),
        "ended_at": (start + timedelta(seconds=3)).isoformat(),
    }


def test_future_dated_sightings_are_refused_and_counted_per_device(
    client: httpx.Client,
    make_device: Callable[..., DeviceCreds],
    engine: Engine,
    session: Session,
) -> None:
    fast = make_device(site="A", name="fast-clock")
    good = make_device(site="A", name="good-clock")
    now = datetime.now(UTC)
    far = _at(unknown_item(n=1), datetime(2199, 1, 1, tzinfo=UTC))
    hour = _at(unknown_item(n=2), now + timedelta(hours=1))
    skew = _at(unknown_item(n=3), now + timedelta(minutes=1))  # within the 5 min allowed
    result = _post(client, fast, [far, hour, skew])
    assert result.created == 1 and result.duplicates == 0
    assert [(e.index, str(e.id)) for e in result.errors] == [(0, far["id"]), (1, hour["id"])]
    assert all("ahead of the server's clock" in e.error for e in result.errors)
    assert "check the device's clock" in result.errors[0].error
    assert _post(client, good, [_at(unknown_item(n=4), now)]).created == 1
    with make_session_factory(engine)() as s:
        counted = {r[0]: r[1] for r in s.execute(select(Device.id, Device.future_refused))}
    assert counted == {fast.device_id: 2, good.device_id: 0}
    metrics = client.get("/metrics").text
    assert f'lintel_sightings_future_refused_total{{device="{fast.device_id}"}} 2.0' in metrics
    assert f'device="{good.device_id}"' not in metrics
    assert _count(session) == 2


def test_future_tolerance_is_a_setting(
    settings: Settings, engine: Engine, device: DeviceCreds
) -> None:
    app = create_app(settings.model_copy(update={"max_clock_ahead_s": 7200}), engine=engine)
    with httpx.Client(transport=SyncASGITransport(app), base_url="http://lintel.test") as c:
        hour = _at(unknown_item(n=2), datetime.now(UTC) + timedelta(hours=1))
        assert _post(c, device, [hour]).created == 1
