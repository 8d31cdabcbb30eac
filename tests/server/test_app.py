"""App-level endpoints: health, metrics, OpenAPI, settings."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from edge.wire import API_PREFIX
from server.settings import DEV_SECRET_KEY, Settings
from tests.server.conftest import DeviceCreds
from tests.server.helpers import unknown_item


def test_healthz(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok"}


def test_metrics_count_sightings(client: httpx.Client, device: DeviceCreds) -> None:
    item = unknown_item()
    for _ in range(2):
        r = client.post(
            f"{API_PREFIX}/device/sightings", json={"sightings": [item]}, headers=device.headers
        )
        assert r.status_code == 200
    text = client.get("/metrics").text
    assert 'lintel_sightings_total{outcome="created_unknown"} 1.0' in text
    assert 'lintel_sightings_total{outcome="duplicate"} 1.0' in text
    assert "lintel_http_request_seconds_bucket" in text
    assert (
        'lintel_http_requests_total{method="POST",route="/api/v1/device/sightings",status="200"}'
        " 2.0" in text
    )


def test_openapi_documents_the_device_api(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/device/gallery", "/device/sightings", "/device/heartbeat"):
        assert API_PREFIX + path in paths
    body = paths[f"{API_PREFIX}/device/sightings"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/SightingBatch"
    assert "SightingIn" in schema["components"]["schemas"]


def test_settings_default_sqlite_in_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.sqlalchemy_url == f"sqlite:///{tmp_path.resolve() / 'lintel.sqlite3'}"


def test_settings_refuse_default_secret_outside_dev() -> None:
    with pytest.raises(ValidationError, match="LINTEL_SECRET_KEY"):
        Settings(env="prod")
    Settings(env="dev")  # allowed for development
    assert Settings(env="prod", secret_key="x" * 32).secret_key.get_secret_value() != (  # type: ignore[arg-type]
        DEV_SECRET_KEY
    )


def test_default_site_model_is_the_edges_bundled_model() -> None:
    # A mismatch would make every edge refuse its gallery and every unknown
    # sighting fail; the two ids are defined in different packages.
    from edge.face.models import resolve_pack

    assert Settings().default_model_id == resolve_pack("buffalo_s").model_id
