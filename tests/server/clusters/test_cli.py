"""``lintel-server worker --once`` drains the queue and opens cases."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from server.cases.models import Case
from server.cli import main
from tests.server.clusters.support import new_session, person, seen_on
from tests.server.conftest import DeviceCreds


def test_worker_once(
    engine: Engine, db_url: str, device: DeviceCreds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "dev")
    seen_on(engine, device.device_id, (person(41), 41), [0, 1, 2])
    assert main(["worker", "--once", "--batch", "2"]) == 0
    with new_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 1
