"""People with face templates per site, the filing-threshold warning, the worker's purge hook."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import date

import httpx
import pytest
from sqlalchemy import Engine, select

from edge.wire import API_PREFIX
from server.cli import main
from server.clusters.worker import run_forever
from server.db import make_session_factory
from server.occupants.models import FaceTemplate
from server.occupants.service import add_template, upsert_occupant
from server.privacy import counts as counts_module
from server.privacy import purge as purge_module
from server.privacy.counts import FILING_THRESHOLD, WARN_AT, people_with_templates, warning_for
from tests.server.clusters.support import MODEL, new_session, person
from tests.server.conftest import DeviceCreds
from tests.server.privacy.support import user_token, web_login


@pytest.mark.parametrize(
    ("people", "expected"),
    [(0, None), (WARN_AT - 1, None), (WARN_AT, "nearing"), (FILING_THRESHOLD, "at or above")],
)
def test_warning_from_90000(people: int, expected: str | None) -> None:
    warning = warning_for(people)
    assert (warning is None) if expected is None else (expected in (warning or ""))


def _enrol(engine: Engine, site_id: int, name: str, templates: int, seed: int = 0) -> int:
    with new_session(engine) as s:
        occ = upsert_occupant(session=s, site_id=site_id, name=name)
        for n in range(templates):
            add_template(
                session=s,
                occupant_id=occ.id,
                embedding=person(hash(name) % 999 + n),
                model_id=MODEL,
            )
        s.commit()
        return occ.id


def test_people_are_counted_once_per_site_however_many_templates(
    engine: Engine,
    client: httpx.Client,
    device: DeviceCreds,
    make_device: Callable[..., DeviceCreds],
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = make_device(site="Other Court", name="g")
    _enrol(engine, device.site_id, "a", 3, seed=1)
    _enrol(engine, device.site_id, "b", 1, seed=2)
    _enrol(engine, device.site_id, "no face", 0)
    _enrol(engine, other.site_id, "c", 2, seed=3)
    with new_session(engine) as s:
        counts = {c.site_id: c.people_with_templates for c in people_with_templates(session=s)}
    assert counts == {device.site_id: 2, other.site_id: 1}
    admin = user_token(engine, "root", "admin", [])
    r = client.get(f"{API_PREFIX}/privacy/enrolment-counts", headers=admin)
    assert r.status_code == 200
    assert [(c["site_id"], c["people_with_templates"], c["warning"]) for c in r.json()] == [
        (device.site_id, 2, None),
        (other.site_id, 1, None),
    ]
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "dev")
    monkeypatch.setenv("LINTEL_CROP_KEY", "E" * 43 + "=")
    assert main(["stats", "--site", str(device.site_id), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["people_with_templates"], stats["filing_warnings"]) == (2, [])


def test_worker_loop_runs_the_purge(
    engine: Engine, device: DeviceCreds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lintel-server worker`` purges on schedule: a moved-out occupant's templates go."""
    occupant = _enrol(engine, device.site_id, "leaving", 2)
    with new_session(engine) as s:
        upsert_occupant(
            session=s,
            site_id=device.site_id,
            name="leaving",
            status="moved_out",
            move_out=date(2026, 1, 31),
        )
        s.commit()
    stop = threading.Event()
    calls: list[int] = []
    real_tick = purge_module.PurgeSchedule.tick

    def tick(self: purge_module.PurgeSchedule, factory: object) -> object:
        self._due = 0.0  # due at once, not a minute after start
        out = real_tick(self, factory)  # type: ignore[arg-type]
        calls.append(1)
        stop.set()
        return out

    monkeypatch.setattr(purge_module.PurgeSchedule, "tick", tick)
    run_forever(make_session_factory(engine), stop, poll_s=0.01)
    assert calls
    with new_session(engine) as s:
        left = s.scalars(select(FaceTemplate).where(FaceTemplate.occupant_id == occupant)).all()
    assert left == []


def test_web_dashboard_shows_the_count_and_the_warning(
    engine: Engine, client: httpx.Client, device: DeviceCreds, monkeypatch: pytest.MonkeyPatch
) -> None:
    _enrol(engine, device.site_id, "a", 1, seed=4)
    _enrol(engine, device.site_id, "b", 2, seed=5)
    with httpx.Client(transport=client._transport, base_url=str(client.base_url)) as web:
        web_login(web, engine, "boss", "admin", [])
        page = web.get("/web/dashboard", params={"site": device.site_id}).text
        assert re.search(r'id="dash-enrolled">2<', page)
        assert 'id="dash-filing"' not in page
        monkeypatch.setattr(counts_module, "WARN_AT", 2)  # as if 90,000 were enrolled
        page = web.get("/web/dashboard", params={"site": device.site_id}).text
        assert 'id="dash-filing"' in page and "100,000" in page
