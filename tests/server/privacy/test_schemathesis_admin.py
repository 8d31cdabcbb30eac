"""The privacy/admin routes under schemathesis with an admin token: no request causes a 5xx.

``tests/server/test_schemathesis.py`` sends device tokens, which these routes
turn away at the door (401); here the requests get past authentication.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine

from edge.wire import API_PREFIX
from server.audit.service import record
from server.occupants.service import add_template, upsert_occupant
from tests.server.clusters.support import new_session
from tests.server.conftest import DeviceCreds
from tests.server.helpers import unit_vector
from tests.server.privacy.support import user_token

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # as in C's schemathesis test

ADMIN_PATHS = ("/audit", "/subjects", "/privacy", "/sites")


def test_admin_routes_never_answer_5xx(app: FastAPI, device: DeviceCreds, engine: Engine) -> None:
    with new_session(engine) as s:
        occ = upsert_occupant(session=s, site_id=device.site_id, name="Z", consent_ref="=1+1")
        add_template(session=s, occupant_id=occ.id, embedding=unit_vector(2), model_id="buffalo_s")
        record(session=s, actor="=cmd", action="x", object_type="y", detail={"k": "@v"})
        s.commit()
    admin = user_token(engine, "root", "admin", [])
    api_schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [
        op
        for op in (result.ok() for result in api_schema.get_all_operations())  # type: ignore[union-attr]
        if op.path.startswith(tuple(API_PREFIX + p for p in ADMIN_PATHS))
    ]
    assert len(operations) >= 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            response = case.call(headers=admin)
            assert response.status_code < 500, (
                case.method,
                case.path,
                response.status_code,
                response.text[:500],
            )

        run()
