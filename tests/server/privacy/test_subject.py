"""Subject requests: export everything held on one occupant, erase it everywhere; audited."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from edge.wire import API_PREFIX
from server.audit.models import AuditEvent
from server.cases import outcomes
from server.cases.models import Case
from server.cli import main
from server.clusters.models import UnknownCluster
from server.occupants.models import FaceTemplate, Occupant
from server.sightings.models import Sighting, SightingCrop
from server.sites.models import Site
from server.sites.service import get_or_create_unit
from tests.server.clusters.support import new_session
from tests.server.conftest import DeviceCreds
from tests.server.helpers import known_item
from tests.server.privacy.support import World, build, user_token


@pytest.fixture
def enrolled(engine: Engine, device: DeviceCreds, client: httpx.Client) -> tuple[World, int]:
    """The open case's person enrolled into a unit, then seen twice as known."""
    world = build(engine, device.site_id, device.device_id)
    with new_session(engine) as s:
        unit = get_or_create_unit(session=s, site_id=device.site_id, address_key="1-101")
        occ = outcomes.enrol_from_case(
            session=s, case_id=world.open_case, unit_id=unit.id, name="王五", actor="test"
        )
        occ.consent_ref = "signed form 2026-11"
        s.commit()
        occupant_id = occ.id
    items = [known_item(occupant_id, n=n) for n in range(2)]
    r = client.post(
        f"{API_PREFIX}/device/sightings", json={"sightings": items}, headers=device.headers
    )
    assert r.status_code == 200 and r.json()["created"] == 2, r.text
    return world, occupant_id


def test_export_holds_everything_and_biometrics_only_on_request(
    engine: Engine, client: httpx.Client, enrolled: tuple[World, int]
) -> None:
    world, occupant_id = enrolled
    admin = user_token(engine, "root", "admin", [])
    r = client.get(f"{API_PREFIX}/subjects/{occupant_id}", headers=admin)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["occupant"]["name"] == "王五"
    assert data["occupant"]["consent_ref"] == "signed form 2026-11"
    assert data["unit"]["address"]
    assert len(data["templates"]) >= 1
    assert all("embedding_f32le_b64" not in t for t in data["templates"])
    assert len(data["sightings"]) == 2
    assert [c["id"] for c in data["cases"]] == [world.open_case]
    assert data["cases"][0]["outcome"] == "enrolled"

    r = client.get(
        f"{API_PREFIX}/subjects/{occupant_id}",
        params={"include_biometrics": "true"},
        headers=admin,
    )
    templates = r.json()["templates"]
    with new_session(engine) as s:
        stored = {
            t.id: t.embedding
            for t in s.scalars(select(FaceTemplate).where(FaceTemplate.occupant_id == occupant_id))
        }
        exports = s.scalars(
            select(AuditEvent.detail)
            .where(AuditEvent.action == "subject.export")
            .order_by(AuditEvent.id)
        ).all()
    for t in templates:
        raw = base64.b64decode(t["embedding_f32le_b64"])
        assert raw == stored[t["id"]]
        assert np.frombuffer(raw, "<f4").shape == (t["dimensions"],)
    assert [d["biometrics"] for d in exports if d] == [False, True]
    # The second export lists the first one among the audit events about this person.
    assert "subject.export" in [e["action"] for e in r.json()["audit_events"]]


def test_erase_removes_face_data_everywhere_and_edges_drop_the_templates(
    engine: Engine, client: httpx.Client, device: DeviceCreds, enrolled: tuple[World, int]
) -> None:
    world, occupant_id = enrolled
    admin = user_token(engine, "root", "admin", [])
    gallery = client.get(f"{API_PREFIX}/device/gallery", headers=device.headers)
    etag = gallery.headers["etag"]
    assert occupant_id in {e["occupant_id"] for e in gallery.json()["templates"]}

    r = client.post(f"{API_PREFIX}/subjects/{occupant_id}/erase", headers=admin)
    assert r.status_code == 200, r.text
    counts = r.json()
    assert counts["templates"] >= 1 and counts["known_sightings_unlinked"] == 2
    assert counts["crops"] == len(world.open_sightings)

    # The edge's next sync sees a new version without the person.
    r = client.get(
        f"{API_PREFIX}/device/gallery", headers={**device.headers, "If-None-Match": etag}
    )
    assert r.status_code == 200 and r.headers["etag"] != etag
    assert occupant_id not in {e["occupant_id"] for e in r.json()["templates"]}
    with new_session(engine) as s:
        assert s.get(Occupant, occupant_id) is None
        assert not s.scalars(
            select(FaceTemplate).where(FaceTemplate.occupant_id == occupant_id)
        ).all()
        assert not s.scalars(select(Sighting).where(Sighting.occupant_id == occupant_id)).all()
        assert not set(s.scalars(select(SightingCrop.sighting_id))) & world.open_sightings
        assert not s.scalars(
            select(Sighting.id).where(
                Sighting.id.in_(world.open_sightings), Sighting.embedding.is_not(None)
            )
        ).all()
        case = s.get(Case, world.open_case)
        assert case is not None and case.outcome == "enrolled" and case.occupant_id is None
        cluster = s.get(UnknownCluster, case.cluster_id)
        assert cluster is not None and cluster.total == b"" and cluster.occupant_id is None
        erase = s.scalars(select(AuditEvent).where(AuditEvent.action == "subject.erase")).one()
        assert erase.object_id == str(occupant_id) and erase.detail == counts
        assert "王五" not in json.dumps(erase.detail, ensure_ascii=False)
    assert (
        client.post(f"{API_PREFIX}/subjects/{occupant_id}/erase", headers=admin).status_code == 404
    )


@pytest.mark.parametrize("role", ["manager", "viewer"])
def test_subject_requests_are_for_admins(
    engine: Engine, client: httpx.Client, device: DeviceCreds, role: str
) -> None:
    headers = user_token(engine, role, role, [device.site_id])
    with new_session(engine) as s:
        occ = Occupant(site_id=device.site_id, name="X")
        s.add(occ)
        s.commit()
        occupant_id = occ.id
    assert client.get(f"{API_PREFIX}/subjects/{occupant_id}", headers=headers).status_code == 403
    r = client.post(f"{API_PREFIX}/subjects/{occupant_id}/erase", headers=headers)
    assert r.status_code == 403
    with new_session(engine) as s:
        assert s.get(Occupant, occupant_id) is not None


def test_cli_export_then_erase(
    engine: Engine,
    enrolled: tuple[World, int],
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _world, occupant_id = enrolled
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "dev")
    monkeypatch.setenv("LINTEL_CROP_KEY", "D" * 43 + "=")
    out = tmp_path / "subject.json"
    assert main(["subject", "export", "--occupant", str(occupant_id), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["occupant"]["id"] == occupant_id
    with new_session(engine) as s:
        version = s.scalar(select(Site.gallery_version))
    assert main(["subject", "erase", "--occupant", str(occupant_id), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["known_sightings_unlinked"] == 2
    assert main(["subject", "erase", "--occupant", str(occupant_id)]) == 1  # gone: not found
    with new_session(engine) as s:
        assert s.scalar(select(Site.gallery_version)) > version  # type: ignore[operator]
        actions = s.scalars(
            select(AuditEvent.action).where(AuditEvent.actor == "cli").order_by(AuditEvent.id)
        ).all()
        assert actions == ["subject.export", "subject.erase"]
        assert s.scalar(select(func.count()).select_from(Occupant)) == 2  # the other two
