"""Property-based run of the OpenAPI schema: no request the schema allows may cause a 5xx.

SQLite only (the PostgreSQL half of the suite covers the same code paths) and
a bounded number of examples per operation so the suite stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine

from server.app import create_app
from server.db import make_engine, make_session_factory
from server.devices.service import create_device
from server.occupants.service import add_template, upsert_occupant
from server.settings import Settings
from server.sites.service import create_site
from tests.server.conftest import TEST_SECRET
from tests.server.helpers import unit_vector

# schemathesis drives ASGI apps through Starlette's TestClient, which warns
# about this httpx version on import; that warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

_TOKEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    s = Settings(env="test", secret_key=TEST_SECRET, data_dir=tmp, max_body_bytes=512 * 1024)  # type: ignore[arg-type]
    engine: Engine = make_engine(s.sqlalchemy_url)
    app = create_app(s, engine=engine)
    with make_session_factory(engine)() as session:
        site = create_site(session=session, name="S", model_id="buffalo_s")
        occ = upsert_occupant(session=session, site_id=site.id, name="W")
        add_template(
            session=session, occupant_id=occ.id, embedding=unit_vector(1), model_id="buffalo_s"
        )
        _dev, _TOKEN["device"] = create_device(session=session, site_id=site.id, name="gate")
        session.commit()
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    engine.dispose()


def test_no_server_errors(api_schema: Any) -> None:
    # schemathesis' pytest plugin does not support this pytest; drive Hypothesis directly.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/api/v1/device/gallery",
        "/api/v1/device/sightings",
        "/api/v1/device/heartbeat",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            for headers in ({"Authorization": f"Bearer {_TOKEN['device']}"}, {}):
                response = case.call(headers=headers)
                assert response.status_code < 500, (
                    case.method,
                    case.path,
                    response.status_code,
                    response.text[:500],
                )

        run()
