"""Odd input on the admin routes: NUL characters, oversize pages, bad dates -> 4xx, not 5xx."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import Engine

from edge.wire import API_PREFIX
from tests.server.conftest import DeviceCreds
from tests.server.privacy.support import user_token


@pytest.mark.parametrize(
    "params",
    [
        {"actor": "a\x00b"},
        {"site": "a\x00b"},
        {"object_id": "\x00"},
        {"limit": "100000"},
        {"limit": "0"},
        {"since": "yesterday"},
        {"after_id": "-1"},
    ],
)
def test_bad_audit_filters_are_refused(
    engine: Engine, client: httpx.Client, params: dict[str, str]
) -> None:
    admin = user_token(engine, "root", "admin", [])
    r = client.get(f"{API_PREFIX}/audit", params=params, headers=admin)
    assert r.status_code in (404, 422), r.text


def test_retention_out_of_bounds_is_refused(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    admin = user_token(engine, "root", "admin", [])
    url = f"{API_PREFIX}/sites/{device.site_id}/retention"
    for body in ({"crop_retention_days": 0}, {"moved_out_template_days": -1}, {"bogus": 1}):
        assert client.put(url, json=body, headers=admin).status_code == 422, body
    r = client.put(url, json={"crop_retention_days": 7}, headers=admin)
    assert r.status_code == 200 and r.json()["crop_retention_days"] == 7


def test_oversized_bodies_are_refused_before_any_work(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    """The body limit (LINTEL_MAX_BODY_BYTES; 256 KiB in tests) holds on the admin routes."""
    admin = user_token(engine, "root", "admin", [])
    big = {"crop_retention_days": 7, "pad": "x" * 300_000}
    r = client.put(f"{API_PREFIX}/sites/{device.site_id}/retention", json=big, headers=admin)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
