"""Admin audit API: filters, CSV export with formula escaping, every read audited."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from edge.wire import API_PREFIX
from server.audit.export import safe_cell
from server.audit.models import AuditEvent
from server.audit.service import record
from server.cli import main
from tests.server.clusters.support import new_session
from tests.server.conftest import DeviceCreds
from tests.server.privacy.support import user_token

HOSTILE = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_starts_get_an_apostrophe(value: str) -> None:
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["plain", "a=b", "", None, 12, "名字", " =lead space"])
def test_other_cells_are_unchanged(value: object) -> None:
    assert safe_cell(value) == ("" if value is None else str(value))


def _events(engine: Engine, site_id: int) -> None:
    with new_session(engine) as s:
        for n, hostile in enumerate(HOSTILE):
            record(
                session=s,
                actor=hostile,
                action="web.note",
                object_type="case",
                object_id=hostile,
                site_id=site_id if n % 2 else None,
                detail={"note": hostile},
            )
        s.commit()


def test_csv_export_escapes_formulas_and_is_audited(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    _events(engine, device.site_id)
    admin = user_token(engine, "root", "admin", [])
    r = client.get(f"{API_PREFIX}/audit/export.csv", params={"action": "web.note"}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["actor"] for row in rows] == ["'" + h for h in HOSTILE]
    assert [row["object_id"] for row in rows] == ["'" + h for h in HOSTILE]
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    with new_session(engine) as s:
        export = s.scalars(select(AuditEvent).where(AuditEvent.action == "audit.export")).one()
        assert export.actor.startswith("user:")
        assert export.detail == {"action": "web.note", "rows": len(HOSTILE)}


def test_list_filters_and_pages(engine: Engine, client: httpx.Client, device: DeviceCreds) -> None:
    _events(engine, device.site_id)
    admin = user_token(engine, "root", "admin", [])
    url = f"{API_PREFIX}/audit"
    r = client.get(url, params={"site": "Sunny Court", "action": "web.note"}, headers=admin)
    assert r.status_code == 200, r.text
    assert [e["actor"] for e in r.json()] == HOSTILE[1::2]  # raw in JSON; escaping is for CSV
    first = client.get(url, params={"action": "web.note", "limit": 2}, headers=admin).json()
    rest = client.get(
        url, params={"action": "web.note", "after_id": first[-1]["id"]}, headers=admin
    ).json()
    assert [e["actor"] for e in first + rest] == HOSTILE
    assert all(e["hash"] and e["prev_hash"] for e in first)
    r = client.get(f"{API_PREFIX}/audit/verify", headers=admin)
    assert r.status_code == 200 and r.json()["ok"] is True
    with new_session(engine) as s:
        views = s.scalars(select(AuditEvent).where(AuditEvent.action == "audit.view")).all()
        assert len(views) == 3


@pytest.mark.parametrize("role", ["manager", "viewer"])
def test_only_admins_read_the_audit_log(
    engine: Engine, client: httpx.Client, device: DeviceCreds, role: str
) -> None:
    headers = user_token(engine, role, role, [device.site_id])
    for path in ("/audit", "/audit/export.csv", "/audit/verify"):
        assert client.get(API_PREFIX + path, headers=headers).status_code == 403
        assert client.get(API_PREFIX + path).status_code == 401


def test_cli_export_writes_escaped_csv_and_audits_it(
    engine: Engine,
    device: DeviceCreds,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "dev")
    monkeypatch.setenv("LINTEL_CROP_KEY", "C" * 43 + "=")
    _events(engine, device.site_id)
    out = tmp_path / "audit.csv"
    assert main(["audit", "export", "--site", str(device.site_id), "--out", str(out)]) == 0
    with out.open(newline="", encoding="utf-8") as fh:  # keep the \r inside a cell
        rows = list(csv.DictReader(fh))
    assert [r["actor"] for r in rows] == ["'" + h for h in HOSTILE[1::2]]
    with new_session(engine) as s:
        assert s.scalar(select(AuditEvent.actor).where(AuditEvent.action == "audit.export")) == (
            "cli"
        )
