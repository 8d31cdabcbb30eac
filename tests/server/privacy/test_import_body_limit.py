"""The registry import has its own, larger body limit; every other route keeps the small one.

A register file is imported in one request (all-or-nothing), ~3.1 KB a row with
a face, so the default 8 MiB would stop at ~2,600 rows. Here the general limit is
256 KiB (the test settings) and the import's 1 MiB.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from edge.wire import API_PREFIX
from server.app import create_app
from server.limits import BodySizeLimit, LimitOverride
from server.registry_api.views import IMPORT_PATH
from server.settings import Settings
from tests.server.asgi import SyncASGITransport
from tests.server.conftest import DeviceCreds
from tests.server.privacy.support import user_token

IMPORT_LIMIT = 1024 * 1024


@pytest.fixture
def app(settings: Settings, engine: Engine) -> FastAPI:
    return create_app(
        settings.model_copy(update={"max_import_body_bytes": IMPORT_LIMIT}), engine=engine
    )


@pytest.fixture
def client(app: FastAPI) -> Iterator[httpx.Client]:
    transport = SyncASGITransport(app)
    with httpx.Client(transport=transport, base_url="http://lintel.test") as c:
        yield c
    transport.close()


def test_the_override_matches_the_import_route_only() -> None:
    limit = BodySizeLimit(app=None, max_bytes=10, overrides=[LimitOverride(IMPORT_PATH, 99)])  # type: ignore[arg-type]
    assert limit.override_for(f"{API_PREFIX}/sites/7/registry/import") is not None
    assert limit.override_for(f"{API_PREFIX}/sites/东区/registry/import") is not None
    assert limit.override_for(f"{API_PREFIX}/sites/7/registry/photos") is None
    assert limit.override_for(f"{API_PREFIX}/sites/7/registry/import/x") is None
    assert limit.override_for(f"{API_PREFIX}/device/sightings") is None


def test_an_import_above_the_general_limit_reaches_the_route(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    admin = user_token(engine, "root", "admin", [])
    pad = {"pad": "x" * 600_000}  # > 256 KiB, < 1 MiB
    r = client.post(f"{API_PREFIX}/sites/{device.site_id}/registry/import", json=pad, headers=admin)
    assert r.status_code == 422, r.text  # read and validated (no such body shape), not 413
    r = client.put(f"{API_PREFIX}/sites/{device.site_id}/retention", json=pad, headers=admin)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


def test_an_import_above_its_own_limit_is_refused(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    admin = user_token(engine, "root", "admin", [])
    r = client.post(
        f"{API_PREFIX}/sites/{device.site_id}/registry/import",
        json={"pad": "x" * (IMPORT_LIMIT + 10)},
        headers=admin,
    )
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    assert str(IMPORT_LIMIT) in r.json()["detail"]


@pytest.mark.parametrize("who", ["anonymous", "bad token", "viewer"])
def test_only_a_manager_or_admin_token_gets_the_import_limit(
    engine: Engine, client: httpx.Client, device: DeviceCreds, who: str
) -> None:
    """The body is parsed before the route checks the token: nobody else may make the
    server read an import-sized body."""
    headers = {
        "anonymous": {},
        "bad token": {"Authorization": "Bearer not-a-token"},
        "viewer": user_token(engine, "watcher", "viewer", [device.site_id]),
    }[who]
    r = client.post(
        f"{API_PREFIX}/sites/{device.site_id}/registry/import",
        json={"pad": "x" * 600_000},
        headers=headers,
    )
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
