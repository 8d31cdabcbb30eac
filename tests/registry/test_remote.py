"""``lintel-registry import --server``: the remote import against the app in-process.

The CLI enrols the photos with the real face engine and sends rows and faces
to ``POST /api/v1/sites/{site}/registry/import`` of a real app (SQLite, and
PostgreSQL when reachable) through an in-process transport.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import registry.cli
import registry.importer as importer
from edge.face.models import resolve_pack
from edge.wire import encode_embedding
from registry.cli import main
from server.app import create_app
from server.audit.models import AuditEvent
from server.db import make_engine, make_session_factory
from server.occupants.chips import get_chip
from server.occupants.models import FaceTemplate, Occupant
from server.settings import Settings
from server.sites.models import Site, Unit
from server.sites.service import create_site
from server.users.service import create_api_token, create_user
from tests.registry.helpers import HEADER, ROWS, add_second_photos, empty_tables, make_id
from tests.server.asgi import SyncASGITransport

SECRET = "remote-test-secret-0123456789"
SITE = "幸福小区"
URL = "http://lintel.test"
MODEL_ID = resolve_pack("buffalo_s").model_id

# Rows without photos: refusals and all-or-nothing need no face engine.
PLAIN = [
    f"周一,{make_id(11)},13800000011,1幢1单元101,业主,2024-01-01,,P1\n",
    f"吴二,{make_id(12)},,1-1-102,租户,,,P2\n",
    f"郑三,{make_id(13)},13800000013,1幢1单元103室,家属,2024-02-01,,P3\n",
]
BAD_ID = f"孙七,{make_id(9)[:17]}{'X' if make_id(9)[17] != 'X' else '0'},,1-1-104,业主,,,P9\n"


class Server:
    """The app on a database, with an admin, a viewer and managers of two sites."""

    def __init__(
        self,
        url: str,
        data_dir: Path,
        max_import_body_bytes: int = 64 * 1024 * 1024,
        secret: str = SECRET,
    ) -> None:
        settings = Settings(
            env="test",
            secret_key=secret,  # type: ignore[arg-type]
            data_dir=data_dir,
            database_url=url,
            max_import_body_bytes=max_import_body_bytes,
        )
        self.engine: Engine = make_engine(url)
        self.app = create_app(settings, engine=self.engine)
        self.transport = SyncASGITransport(self.app)
        self.tokens: dict[str, str] = {}
        self.user_ids: dict[str, int] = {}
        with make_session_factory(self.engine)() as s:
            # Existing sites: "东区" (managed by "manager") and "西区" (by "other").
            east = create_site(session=s, name="东区", model_id=MODEL_ID)
            west = create_site(session=s, name="西区", model_id=MODEL_ID)
            for name, role, sites in (
                ("admin", "admin", []),
                ("manager", "manager", [east.id]),
                ("other", "manager", [west.id]),
                ("viewer", "viewer", [east.id]),
            ):
                user = create_user(session=s, username=name, role=role, site_ids=sites)
                _row, token = create_api_token(session=s, user_id=user.id)
                self.tokens[name] = token
                self.user_ids[name] = user.id
            s.commit()

    def close(self) -> None:
        self.transport.close()
        self.engine.dispose()

    def run(self, args: list[str], *, as_user: str = "admin") -> int:
        return main(
            ["import", *args, "--server", URL, "--token", self.tokens[as_user]],
            transport=self.transport,
        )

    def scalar(self, query: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def counts(self) -> tuple[int, int, int]:
        """(sites, occupants, templates)."""
        return (
            self.scalar(select(func.count()).select_from(Site)),
            self.scalar(select(func.count()).select_from(Occupant)),
            self.scalar(select(func.count()).select_from(FaceTemplate)),
        )

    def audit(self, actor: str) -> list[AuditEvent]:
        with make_session_factory(self.engine)() as s:
            return list(
                s.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.action == "registry.import", AuditEvent.actor == actor)
                    .order_by(AuditEvent.id)
                )
            )


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The local import (--db) reads the same secret, so both modes hash ID numbers alike.
    monkeypatch.setenv("LINTEL_SECRET_KEY", SECRET)
    monkeypatch.setenv("LINTEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LINTEL_DATABASE_URL", raising=False)
    monkeypatch.delenv("LINTEL_API_TOKEN", raising=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "sqlite":
        srv = Server(f"sqlite:///{tmp_path / 'server.sqlite3'}", tmp_path)
        yield srv
        srv.close()
        return
    url = request.getfixturevalue("pg_url")
    srv = Server(url, tmp_path)
    try:
        yield srv
    finally:
        srv.close()
        empty_tables(url)


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(f"sqlite:///{tmp_path / 'server.sqlite3'}", tmp_path)
    yield srv
    srv.close()


def _csv(tmp_path: Path, rows: list[str], name: str = "reg.csv") -> Path:
    path = tmp_path / name
    path.write_bytes((HEADER + "".join(rows)).encode("gbk"))
    return path


def _register(engine: Engine, site: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """A site's occupants and templates, without database ids (to compare two databases)."""
    with engine.connect() as conn:
        site_id = conn.execute(select(Site.id).where(Site.name == site)).scalar_one()
        occupants = conn.execute(
            select(
                Occupant.name,
                Unit.address_key,
                Occupant.role,
                Occupant.phone,
                Occupant.external_id,
                Occupant.id_hash,
                Occupant.id_last4,
                Occupant.move_in,
                Occupant.status,
            )
            .outerjoin(Unit, Unit.id == Occupant.unit_id)
            .where(Occupant.site_id == site_id)
            .order_by(Occupant.name)
        ).all()
        templates = conn.execute(
            select(
                Occupant.name,
                FaceTemplate.source,
                FaceTemplate.model_id,
                FaceTemplate.quality,
                FaceTemplate.embedding,
            )
            .join(Occupant, Occupant.id == FaceTemplate.occupant_id)
            .where(FaceTemplate.site_id == site_id)
            .order_by(Occupant.name)
        ).all()
    return [tuple(o) for o in occupants], [tuple(t) for t in templates]


def test_remote_import_writes_what_the_local_one_writes_and_reimport_changes_nothing(
    server: Server, tmp_path: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = _csv(tmp_path, ROWS)
    local_db = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    common = ["--site", SITE, str(reg), "--photos", str(photo_dir)]
    local_report, remote_report = tmp_path / "local.json", tmp_path / "remote.json"

    assert main(["import", *common, "--db", local_db, "--report", str(local_report)]) == 0
    local_out = capsys.readouterr().out
    assert server.run([*common, "--report", str(remote_report)]) == 0
    remote_out = capsys.readouterr().out
    # The same report, printed and written (the report line names its own file).
    assert "created 4, updated 0, unchanged 0, moved out 0, failed 0" in remote_out
    assert remote_out.replace("remote.json", "X") == local_out.replace("local.json", "X")
    assert json.loads(remote_report.read_text("utf-8")) == json.loads(
        local_report.read_text("utf-8")
    )

    local_engine = make_engine(local_db)
    try:
        local_occ, local_tpl = _register(local_engine, SITE)
    finally:
        local_engine.dispose()
    remote_occ, remote_tpl = _register(server.engine, SITE)
    assert len(remote_occ) == 4 and remote_occ == local_occ
    assert all(o[5] is not None and len(o[5]) == 64 for o in remote_occ)  # ID hashed, server key
    assert len(remote_tpl) == 4
    for local, remote in zip(local_tpl, remote_tpl, strict=True):
        assert remote[:3] == local[:3]  # occupant, "registry:<photo sha256>", model id
        assert remote[3] == pytest.approx(local[3])
        np.testing.assert_allclose(
            np.frombuffer(remote[4], "<f4"), np.frombuffer(local[4], "<f4"), atol=1e-5
        )
    # Each photo's aligned face travels as a chip and is kept sealed, in both modes
    # (issue 14: the desk check shows it beside the door crops).
    local_engine = make_engine(local_db)
    try:
        for eng in (local_engine, server.engine):
            with Session(eng) as s:
                ids = list(s.scalars(select(FaceTemplate.id).order_by(FaceTemplate.id)))
                assert len(ids) == 4
                for tid in ids:
                    found = get_chip(session=s, template_id=tid)
                    assert found is not None, f"template {tid} has no chip"
                    face = cv2.imdecode(np.frombuffer(found[1], np.uint8), cv2.IMREAD_COLOR)
                    assert face is not None and face.shape[:2] == (112, 112)
    finally:
        local_engine.dispose()
    version = server.scalar(select(Site.gallery_version).where(Site.name == SITE))

    # Re-import: nothing changes, not even the gallery version; audited again.
    assert server.run(common) == 0
    out = capsys.readouterr().out
    assert "created 0, updated 0, unchanged 4, moved out 0, failed 0 (written)" in out
    assert server.scalar(select(Site.gallery_version).where(Site.name == SITE)) == version
    assert server.counts() == (3, 4, 4)
    events = server.audit(f"user:{server.user_ids['admin']}")
    assert len(events) == 2
    assert events[0].detail is not None and events[0].detail["created"] == 4
    assert events[1].detail is not None
    assert events[1].detail["unchanged"] == 4 and events[1].detail["created"] == 0
    # ID numbers never reach the audit log.
    assert make_id(1) not in json.dumps([e.detail for e in events], ensure_ascii=False)


def test_bad_row_writes_nothing_unless_partial(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = _csv(tmp_path, [*PLAIN, BAD_ID])
    before = server.counts()
    assert server.run(["--site", SITE, str(reg)]) == 1
    out = capsys.readouterr().out
    assert "[bad_id_number]" in out and "All or nothing" in out
    assert "would create 3" in out
    assert server.counts() == before  # not even the site

    assert server.run(["--site", SITE, str(reg), "--partial"]) == 1
    out = capsys.readouterr().out
    assert "created 3, updated 0, unchanged 0, moved out 0, failed 1 (written)" in out
    assert server.counts() == (before[0] + 1, before[1] + 3, before[2])
    # One audit event per import: the refused one and the written one.
    assert len(server.audit(f"user:{server.user_ids['admin']}")) == 2


def test_photo_problems_are_reported_as_in_local_mode(
    sqlite_server: Server, tmp_path: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        ROWS[0],
        f"钱八,{make_id(20)},,3-2-1301,业主,,noface.jpg,E20\n",
        f"孙九,{make_id(21)},,3-2-1302,业主,,two.jpg,E21\n",
        f"陈十,{make_id(22)},,3-2-1303,业主,,missing.jpg,E22\n",
    ]
    # Then the registered occupant's face again, under another name.
    (photo_dir / "p0-copy.jpg").write_bytes((photo_dir / "p0.jpg").read_bytes())
    again = [f"冯一,{make_id(23)},,3-2-1304,业主,,p0-copy.jpg,E23\n"]
    local_db = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    outs: list[str] = []
    for name, file_rows in (("a.csv", rows), ("b.csv", again)):
        args = ["--site", SITE, str(_csv(tmp_path, file_rows, name)), "--photos", str(photo_dir)]
        assert main(["import", *args, "--partial", "--db", local_db]) == 1
        local_out = capsys.readouterr().out
        assert sqlite_server.run([*args, "--partial"]) == 1
        remote_out = capsys.readouterr().out
        assert remote_out == local_out
        outs.append(remote_out)
    for reason in ("[no_face]", "[several_faces]", "[bad_photo]"):
        assert reason in outs[0]
    assert "created 1, updated 0, unchanged 0, moved out 0, failed 3 (written)" in outs[0]
    assert "[same_face]" in outs[1] and "registered occupant '张三'" in outs[1]
    assert sqlite_server.counts()[1:] == (1, 1)


def test_known_photos_are_not_enrolled_again_unless_they_changed_hands(
    sqlite_server: Server,
    tmp_path: Path,
    photo_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = _csv(tmp_path, ROWS[:2], "first.csv")
    # The same two people with their photos swapped: both photos are known to the
    # site, but each now belongs to the other occupant.
    swapped = _csv(
        tmp_path,
        [ROWS[0].replace("p0.jpg", "p1.jpg"), ROWS[1].replace("p1.jpg", "p0.jpg")],
        "swapped.csv",
    )
    local_db = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    photos = ["--photos", str(photo_dir)]
    sent: list[int] = []
    real = importer.enrol_for_upload

    def counting(*args: Any, **kwargs: Any) -> Any:
        faces, model = real(*args, **kwargs)
        sent.append(sum(isinstance(f, importer.NewFace) for fs in faces.values() for f in fs))
        return faces, model

    monkeypatch.setattr(registry.cli, "enrol_for_upload", counting)
    outs = []
    for reg in (first, first, swapped):
        assert main(["import", "--site", SITE, str(reg), *photos, "--db", local_db]) == 0
        local_out = capsys.readouterr().out
        assert sqlite_server.run(["--site", SITE, str(reg), *photos]) == 0
        assert capsys.readouterr().out == local_out
        outs.append(local_out)
    assert "unchanged 2" in outs[1] and "updated 2" in outs[2]
    # First import: 2 faces; re-import: none (known); swap: none, then every photo.
    assert sent == [2, 0, 0, 2]
    _occ, templates = _register(sqlite_server.engine, SITE)
    local_engine = make_engine(local_db)
    try:
        _occ, local_templates = _register(local_engine, SITE)
    finally:
        local_engine.dispose()
    assert [t[:2] for t in templates] == [t[:2] for t in local_templates]

    # The endpoint the client asks: the site's model and its photos' digests, for managers.
    client = httpx.Client(transport=sqlite_server.transport, base_url=URL)
    path = f"/api/v1/sites/{SITE}/registry/photos"
    data = client.get(path, headers={"Authorization": f"Bearer {sqlite_server.tokens['admin']}"})
    assert data.json()["model_id"] == MODEL_ID
    assert sorted(data.json()["photo_sha256"]) == sorted(
        t[1][len("registry:") :] for t in templates
    )
    other = client.get(path, headers={"Authorization": f"Bearer {sqlite_server.tokens['other']}"})
    assert other.status_code == 404  # another tenant's site: as if it did not exist


def test_a_pack_of_another_model_is_refused_before_enrolling(
    sqlite_server: Server,
    tmp_path: Path,
    photo_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("enrolled photos for a site of another model")

    monkeypatch.setattr(registry.cli, "enrol_for_upload", never)
    reg = _csv(tmp_path, ROWS[:1])
    args = ["--site", "东区", str(reg), "--photos", str(photo_dir), "--model", "sface"]
    assert sqlite_server.run(args) == 2
    err = capsys.readouterr().err
    assert "never reach its edges" in err and "Traceback" not in err
    assert sqlite_server.counts()[1] == 0


def test_a_short_server_key_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = Server(f"sqlite:///{tmp_path / 's.sqlite3'}", tmp_path, secret="short")
    try:
        assert srv.run(["--site", SITE, str(_csv(tmp_path, PLAIN))]) == 2
        err = capsys.readouterr().err
        assert "HTTP 503" in err and "LINTEL_SECRET_KEY" in err
        assert srv.counts()[1] == 0
    finally:
        srv.close()


def test_dry_run_writes_nothing(
    sqlite_server: Server, tmp_path: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = _csv(tmp_path, ROWS[:2])
    before = sqlite_server.counts()
    args = ["--site", SITE, str(reg), "--photos", str(photo_dir), "--dry-run"]
    assert sqlite_server.run(args) == 0
    out = capsys.readouterr().out
    assert "would create 2, update 0" in out and "(dry run, nothing written)" in out
    assert sqlite_server.counts() == before
    (event,) = sqlite_server.audit(f"user:{sqlite_server.user_ids['admin']}")
    assert event.detail == {
        "source": str(reg),
        "dry_run": True,
        "written": False,
        "rows": 2,
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "moved_out": 0,
        "failed": 0,
    }


def test_sync_moves_out_who_left_the_file(
    sqlite_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sqlite_server.run(["--site", SITE, str(_csv(tmp_path, PLAIN))]) == 0
    assert sqlite_server.run(["--site", SITE, str(_csv(tmp_path, PLAIN[:2])), "--sync"]) == 0
    assert "unchanged 2, moved out 1, failed 0 (written)" in capsys.readouterr().out
    moved = sqlite_server.scalar(select(Occupant.name).where(Occupant.status == "moved_out"))
    assert moved == "郑三"


def test_who_may_import(
    sqlite_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = _csv(tmp_path, PLAIN)
    before = sqlite_server.counts()
    refusals = [
        ("viewer", "东区", "managers only"),
        # A manager of another site is told what a missing site gets (issue 18, finding 9).
        ("other", "东区", "does not exist"),
        ("manager", "新区", "does not exist"),  # managers do not create sites
    ]
    for user, site, fragment in refusals:
        assert sqlite_server.run(["--site", site, str(reg)], as_user=user) == 2
        err = capsys.readouterr().err
        assert "not allowed to import" in err and fragment in err, (user, err)
        assert "Traceback" not in err
    assert sqlite_server.counts() == before

    # The manager of the site may; the audit names them.
    assert sqlite_server.run(["--site", "东区", str(reg)], as_user="manager") == 0
    assert "created 3" in capsys.readouterr().out
    assert len(sqlite_server.audit(f"user:{sqlite_server.user_ids['manager']}")) == 1
    assert sqlite_server.counts() == (before[0], before[1] + 3, before[2])


def test_connection_and_token_errors_are_clear(
    sqlite_server: Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reg = str(_csv(tmp_path, PLAIN))
    base = ["import", "--site", SITE, reg]
    bad_token = main(
        [*base, "--server", URL, "--token", "ltu_nope"], transport=sqlite_server.transport
    )
    assert bad_token == 2
    assert "refused the API token" in capsys.readouterr().err

    # No token at all: refused before anything is read.
    assert main([*base, "--server", URL]) == 2
    assert "LINTEL_API_TOKEN" in capsys.readouterr().err
    # The token may come from the environment.
    monkeypatch.setenv("LINTEL_API_TOKEN", sqlite_server.tokens["admin"])
    assert main([*base, "--server", URL], transport=sqlite_server.transport) == 0
    capsys.readouterr()

    # Nothing listens on port 9.
    assert main([*base, "--server", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the server" in err and "Traceback" not in err
    assert main([*base, "--server", "ftp://x"]) == 2
    assert "server's URL" in capsys.readouterr().err


def test_too_large_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    srv = Server(f"sqlite:///{tmp_path / 's.sqlite3'}", tmp_path, max_import_body_bytes=2048)
    try:
        rows = [f"人{i},{make_id(100 + i)},,2-1-{100 + i},业主,,,X{i}\n" for i in range(30)]
        assert srv.run(["--site", SITE, str(_csv(tmp_path, rows))]) == 2
        err = capsys.readouterr().err
        assert "larger than" in err and "LINTEL_MAX_IMPORT_BODY_BYTES" in err
        assert srv.counts()[1] == 0
    finally:
        srv.close()


def _body(**changes: Any) -> dict[str, Any]:
    """A valid request body: one row with a photo and the face the client made of it."""
    vec = np.zeros(512, np.float32)
    vec[0] = 1.0
    cells = {"name": "甲", "id_number": make_id(40), "address": "1-1-1", "role": "业主"}
    body: dict[str, Any] = {
        "source": "api.csv",
        "columns": {"name": "姓名", "id_number": "证件号码", "address": "地址", "role": "身份"}
        | {"photo": "照片"},
        "rows": [{"number": 2, "cells": cells | {"photo": "a.jpg"}}],
        "templates": [
            {
                "row": 2,
                "embedding_b64": encode_embedding(vec),
                "model_id": MODEL_ID,
                "quality": 0.9,
                "photo_sha256": "a" * 64,
            }
        ],
        "model_id": MODEL_ID,
    }
    body.update(changes)
    return body


def test_api_refuses_malformed_bodies(sqlite_server: Server) -> None:
    # Not closed: closing the client would close the fixture's transport.
    client = httpx.Client(
        transport=sqlite_server.transport,
        base_url=URL,
        headers={"Authorization": f"Bearer {sqlite_server.tokens['admin']}"},
    )
    path = "/api/v1/sites/api/registry/import"
    template = _body()["templates"][0]
    long = np.full(512, 0.5, np.float32)  # not unit length
    cases = [
        _body(templates=[{**template, "embedding_b64": encode_embedding(long)}]),
        _body(templates=[{**template, "photo_sha256": "not a digest"}]),
        _body(columns={"nickname": "昵称"}),
        _body(rows=[{"number": 2, "cells": {"name": "a\x00b"}}]),
        _body(rows=[{"number": 2, "cells": {}}, {"number": 2, "cells": {}}]),
        _body(extra=1),
        # A face chip that is not base64, or not a JPEG (issue 14's optional chip field).
        _body(templates=[{**template, "chip_b64": "not base64!"}]),
        _body(templates=[{**template, "chip_b64": base64.b64encode(b"\x89PNG").decode()}]),
    ]
    for body in cases:
        response = client.post(path, json=body)
        assert response.status_code == 422, body
    assert sqlite_server.counts()[1] == 0
    # A face of another model than the site's is refused as a whole.
    other = _body(templates=[{**template, "model_id": "sface/other"}])
    response = client.post("/api/v1/sites/东区/registry/import", json=other)
    assert response.status_code == 422 and "model" in response.json()["detail"]
    # A photo the client sent no face for is that row's issue, not a crash.
    response = client.post(path, json=_body(templates=[]))
    assert response.status_code == 200
    assert [i["reason"] for i in response.json()["issues"]] == ["not_enrolled"]
    assert sqlite_server.counts()[1] == 0
    # The valid body: one occupant, one template, a new site named with a slash.
    response = client.post("/api/v1/sites/A%2FB/registry/import", json=_body())
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["site"] == "A/B" and data["new_site"] and data["summary"]["created"] == 1
    assert data["gallery_version"] is not None
    assert sqlite_server.counts()[1:] == (1, 1)
    # No token: 401 before anything is planned.
    anonymous = httpx.Client(transport=sqlite_server.transport, base_url=URL)
    assert anonymous.post(path, json=_body()).status_code == 401


def test_remote_rows_of_several_photos(
    server: Server,
    tmp_path: Path,
    photo_dir: Path,
    photo_bytes: dict[str, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_second_photos(photo_dir, photo_bytes)
    two = [ROWS[0].replace("p0.jpg", "p0.jpg;p0b.jpg"), ROWS[1]]
    common = ["--site", SITE, "--photos", str(photo_dir)]
    local_db = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    assert main(["import", *common, str(_csv(tmp_path, two)), "--db", local_db]) == 0
    local_out = capsys.readouterr().out
    assert server.run([*common, str(_csv(tmp_path, two))]) == 0
    assert capsys.readouterr().out == local_out
    assert "photos: enrolled 3, unchanged 0, failed 0" in local_out
    _occ, templates = _register(server.engine, SITE)
    local_engine = make_engine(local_db)
    try:
        _occ, local_templates = _register(local_engine, SITE)
    finally:
        local_engine.dispose()
    assert sorted(t[:2] for t in templates) == sorted(t[:2] for t in local_templates)
    assert [t[0] for t in templates].count("张三") == 2

    # Unchanged: nothing enrolled (known to the site), nothing written.
    version = server.scalar(select(Site.gallery_version).where(Site.name == SITE))
    assert server.run([*common, str(_csv(tmp_path, two))]) == 0
    assert "photos: enrolled 0, unchanged 3, failed 0" in capsys.readouterr().out
    assert server.scalar(select(Site.gallery_version).where(Site.name == SITE)) == version

    # One photo replaced: exactly its template is replaced.
    with server.engine.connect() as conn:
        before = dict(conn.execute(select(FaceTemplate.source, FaceTemplate.id)).all())
    swapped = [two[0].replace("p0b.jpg", "p0c.jpg"), ROWS[1]]
    assert server.run([*common, str(_csv(tmp_path, swapped))]) == 0
    assert "photos: enrolled 1, unchanged 2, failed 0" in capsys.readouterr().out
    with server.engine.connect() as conn:
        after = dict(conn.execute(select(FaceTemplate.source, FaceTemplate.id)).all())
    assert len(after) == 3 and len(set(after) - set(before)) == 1
    assert {s: i for s, i in before.items() if s in after} == {
        s: i for s, i in after.items() if s in before
    }

    # A bad second photo: the row's issue names it, nothing written.
    bad = [two[0].replace("p0b.jpg", "noface.jpg"), ROWS[1]]
    assert server.run([*common, str(_csv(tmp_path, bad))]) == 1
    out = capsys.readouterr().out
    assert "noface.jpg" in out and "nothing written" in out
    with server.engine.connect() as conn:
        assert dict(conn.execute(select(FaceTemplate.source, FaceTemplate.id)).all()) == after


def _unit(x: float) -> np.ndarray:
    vec = np.zeros(512, np.float32)
    vec[0], vec[1] = 1.0, x
    return vec / np.linalg.norm(vec)


def test_api_takes_one_face_per_photo_and_the_single_face_shape(sqlite_server: Server) -> None:
    client = httpx.Client(
        transport=sqlite_server.transport,
        base_url=URL,
        headers={"Authorization": f"Bearer {sqlite_server.tokens['admin']}"},
    )
    template = _body()["templates"][0]
    rows = [{"number": 2, "cells": _body()["rows"][0]["cells"] | {"photo": "a.jpg; b.jpg"}}]
    faces = [
        {**template, "photo": "a.jpg"},
        {
            **template,
            "embedding_b64": encode_embedding(_unit(0.3)),
            "photo_sha256": "b" * 64,
            "photo": "b.jpg",
        },
    ]
    response = client.post(
        "/api/v1/sites/multi/registry/import", json=_body(rows=rows, templates=faces)
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["summary"]["created"], data["enrolled_photos"]) == (1, 2)
    assert sqlite_server.counts()[1:] == (1, 2)
    # Fewer faces than photos is that row's issue.
    short = _body(rows=rows, templates=faces[:1])
    response = client.post("/api/v1/sites/short/registry/import", json=short)
    assert [i["reason"] for i in response.json()["issues"]] == ["not_enrolled"]
    # Two faces of different people (orthogonal) in one row are refused.
    other = {**faces[1], "embedding_b64": encode_embedding(_unit(0.0)[::-1].copy())}
    response = client.post(
        "/api/v1/sites/mixed/registry/import", json=_body(rows=rows, templates=[faces[0], other])
    )
    assert [i["reason"] for i in response.json()["issues"]] == ["different_people"]
    # An older client's shape: one face, no file name.
    assert "photo" not in template
    response = client.post("/api/v1/sites/old/registry/import", json=_body())
    assert response.status_code == 200 and response.json()["summary"]["created"] == 1
    assert sqlite_server.counts()[1:] == (2, 3)


def test_an_older_server_refusing_several_photos_is_explained() -> None:
    from registry.remote import _explain

    request = httpx.Request("POST", URL)
    detail = [{"loc": ["body", "templates", 0, "photo"], "msg": "Extra inputs are not permitted"}]
    response = httpx.Response(422, json={"detail": detail}, request=request)
    message = _explain(response, URL, SITE)
    assert "several photos per row need a local import or a newer server" in message
