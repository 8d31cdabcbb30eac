"""Consent and notice: recorded by managers of the site (API) or the CLI, audited, exported."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import Engine, select

from edge.wire import API_PREFIX
from server.audit.models import AuditEvent
from server.cli import main
from server.occupants.models import Occupant
from server.occupants.service import upsert_occupant
from tests.server.clusters.support import new_session
from tests.server.conftest import DeviceCreds
from tests.server.privacy.support import user_token


def _occupant(engine: Engine, site_id: int) -> int:
    with new_session(engine) as s:
        occ = upsert_occupant(session=s, site_id=site_id, name="李四")
        s.commit()
        return occ.id


def test_manager_records_consent_and_the_export_shows_it(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    occupant_id = _occupant(engine, device.site_id)
    manager = user_token(engine, "m", "manager", [device.site_id])
    url = f"{API_PREFIX}/occupants/{occupant_id}/consent"
    body = {
        "consent_at": "2026-11-01T09:30:00+08:00",
        "consent_ref": "form 17",
        "notice_given_at": "2026-10-31T18:00:00+08:00",
    }
    r = client.put(url, json=body, headers=manager)
    assert r.status_code == 200, r.text
    given = datetime(2026, 11, 1, 1, 30, tzinfo=UTC)
    assert datetime.fromisoformat(r.json()["consent_at"]) == given
    with new_session(engine) as s:
        stored = s.get(Occupant, occupant_id)
        assert stored is not None and stored.consent_at == given
    admin = user_token(engine, "root", "admin", [])
    exported = client.get(f"{API_PREFIX}/subjects/{occupant_id}", headers=admin).json()
    assert exported["occupant"]["consent_ref"] == "form 17"
    # Withdrawn: a PUT without the consent time clears it.
    r = client.put(url, json={"notice_given_at": body["notice_given_at"]}, headers=manager)
    assert r.json()["consent_at"] is None and r.json()["consent_ref"] is None
    with new_session(engine) as s:
        details = s.scalars(
            select(AuditEvent.detail)
            .where(AuditEvent.action == "occupant.consent")
            .order_by(AuditEvent.id)
        ).all()
    assert [d["consent"] for d in details if d] == [True, False]


def test_naive_times_and_other_sites_are_refused(
    engine: Engine,
    client: httpx.Client,
    device: DeviceCreds,
    make_device: Callable[..., DeviceCreds],
) -> None:
    occupant_id = _occupant(engine, device.site_id)
    other = make_device(site="Other Court", name="g")
    url = f"{API_PREFIX}/occupants/{occupant_id}/consent"
    manager = user_token(engine, "m", "manager", [device.site_id])
    r = client.put(url, json={"consent_at": "2026-11-01T09:30:00"}, headers=manager)
    assert r.status_code == 422
    stranger = user_token(engine, "s", "manager", [other.site_id])
    r = client.put(url, json={"consent_ref": "x"}, headers=stranger)
    assert r.status_code == 404
    with new_session(engine) as s:
        occ = s.get(Occupant, occupant_id)
        assert occ is not None and occ.consent_ref is None


def test_cli_consent(
    engine: Engine,
    device: DeviceCreds,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    occupant_id = _occupant(engine, device.site_id)
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "dev")
    monkeypatch.setenv("LINTEL_CROP_KEY", "F" * 43 + "=")
    args = ["consent", "--occupant", str(occupant_id), "--at", "2026-11-01T09:30:00+08:00"]
    assert main([*args, "--ref", "form 9", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["consent_ref"] == "form 9"
    with pytest.raises(SystemExit):  # argparse: a time without a zone
        main(["consent", "--occupant", str(occupant_id), "--at", "2026-11-01T09:30:00"])
