"""Secrets at rest: no device token, API token, password or crop is stored in clear."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine, MetaData, select

from edge.wire import API_PREFIX
from server.users.service import create_api_token, create_user
from tests.server.clusters.support import new_session
from tests.server.conftest import DeviceCreds
from tests.server.helpers import jpeg_bytes, unknown_item

PASSWORD = "a password only this test knows"


def _every_stored_value(engine: Engine) -> bytes:
    """Every cell of every table, as bytes (text and binary alike)."""
    meta = MetaData()
    meta.reflect(engine)
    out = bytearray()
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        out += bytes(value)
                    elif value is not None:
                        out += str(value).encode()
                    out += b"\x00"
    return bytes(out)


def test_tokens_passwords_and_crops_are_not_stored_in_clear(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    with new_session(engine) as s:
        user = create_user(
            session=s, username="u", role="admin", password=PASSWORD, site_ids=[device.site_id]
        )
        _row, api_token = create_api_token(session=s, user_id=user.id)
        s.commit()
    crop = jpeg_bytes(9)
    r = client.post(
        f"{API_PREFIX}/device/sightings",
        json={"sightings": [unknown_item(crop=crop)]},
        headers=device.headers,
    )
    assert r.status_code == 200 and r.json()["created"] == 1
    # The same client, authenticated, still works (the hashes are used, not lost).
    assert client.get(
        f"{API_PREFIX}/audit", headers={"Authorization": f"Bearer {api_token}"}
    ).is_success
    stored = _every_stored_value(engine)
    assert b"sighting" in stored or len(stored) > 1000  # the dump is not empty
    for secret in (device.token, api_token, PASSWORD):
        assert secret.encode() not in stored, secret[:6]
    assert crop[200:264] not in stored
