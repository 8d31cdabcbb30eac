"""The import flow against a real SQLite database and the real face engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from edge.face.engine import FaceEngine
from registry.errors import InputError
from registry.importer import ImportOptions, ImportResult, run_import
from registry.photos import FolderSource
from registry.reader import read_csv_bytes
from server.audit.models import AuditEvent
from server.occupants.models import FaceTemplate, Occupant
from server.registry_api.store import SqlStore
from server.sites.models import Site, Unit
from tests.registry.helpers import HEADER, ROWS, SECRET, empty_tables, make_id


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """A migrated, empty database: a fresh SQLite file, or the session's PostgreSQL one."""
    if request.param == "sqlite":
        s = SqlStore(f"sqlite:///{tmp_path / 'lintel.sqlite3'}")
        yield s
        s.close()
        return
    url = request.getfixturevalue("pg_url")
    s = SqlStore(url, migrate=False)
    try:
        yield s
    finally:
        s.close()
        empty_tables(url)


def _import(
    store: SqlStore,
    engine: FaceEngine,
    photo_dir: Path,
    rows: list[str],
    **options: bool,
) -> ImportResult:
    sheet = read_csv_bytes((HEADER + "".join(rows)).encode("gbk"), "reg.csv")
    return run_import(
        sheet,
        store=store,
        options=ImportOptions(site="幸福小区", **options),
        secret=SECRET,
        photos=FolderSource(photo_dir),
        enroller=lambda: engine,
    )


def _counts(store: SqlStore) -> tuple[int, int, int, int]:
    with store.engine.connect() as conn:
        occupants = conn.scalar(select(func.count()).select_from(Occupant)) or 0
        active = (
            conn.scalar(
                select(func.count()).select_from(Occupant).where(Occupant.status == "active")
            )
            or 0
        )
        templates = conn.scalar(select(func.count()).select_from(FaceTemplate)) or 0
        version = conn.scalar(select(Site.gallery_version)) or 0
    return occupants, active, templates, version


def test_first_import_then_idempotent_reimport(
    store: SqlStore, engine: FaceEngine, photo_dir: Path
) -> None:
    first = _import(store, engine, photo_dir, ROWS)
    s = first.report.summary
    assert (s.created, s.updated, s.unchanged, s.failed) == (4, 0, 0, 0)
    assert first.report.written
    occupants, active, templates, version = _counts(store)
    assert (occupants, active, templates) == (4, 4, 4)
    assert version > 1  # edges must re-sync
    assert first.gallery_version == version

    with store.engine.connect() as conn:
        # Two spellings of 3-2-1203 are one unit.
        assert sorted(conn.scalars(select(Unit.address_key))) == [
            "3-2-1203",
            "3-2-1204",
            "3-2-1205",
        ]
        row = conn.execute(select(Occupant.id_hash, Occupant.id_last4, Occupant.phone)).first()
        assert row is not None
        assert len(row.id_hash) == 64 and row.id_last4 == make_id(1)[-4:]
        assert row.phone == "+8613800000001"
        model_ids = set(conn.scalars(select(FaceTemplate.model_id)))
        assert model_ids == {engine.model_id}
        blob = conn.scalar(select(FaceTemplate.embedding))
        assert blob is not None
        vec = np.frombuffer(blob, dtype="<f4")
        assert vec.shape == (512,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-3

    with store.engine.connect() as conn:
        action, detail = conn.execute(select(AuditEvent.action, AuditEvent.detail)).one()
    assert action == "registry.import"
    assert detail["created"] == 4 and detail["templates"] == 4 and detail["source"] == "reg.csv"

    again = _import(store, engine, photo_dir, ROWS)
    s = again.report.summary
    assert (s.created, s.updated, s.unchanged, s.moved_out) == (0, 0, 4, 0)
    assert again.report.enrolled_photos == 0  # unchanged photos are not re-enrolled
    assert _counts(store) == (4, 4, 4, version)


def test_plain_id_numbers_never_reach_the_database(
    engine: FaceEngine, photo_dir: Path, tmp_path: Path
) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'lintel.sqlite3'}")
    _import(store, engine, photo_dir, ROWS)
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("lintel.sqlite3*"))
    for n in (1, 2, 3, 4):
        assert make_id(n).encode() not in raw
        assert make_id(n)[:14].encode() not in raw


def test_changed_rows_update_in_place(store: SqlStore, engine: FaceEngine, photo_dir: Path) -> None:
    _import(store, engine, photo_dir, ROWS)
    with store.engine.connect() as conn:
        ids_before = dict(conn.execute(select(Occupant.name, Occupant.id)).all())
    changed = list(ROWS)
    changed[0] = changed[0].replace("13800000001", "13900000001")  # new phone, matched by E1
    changed[2] = changed[2].replace("p2.jpg", "yao.jpg")  # new photo, matched by ID hash
    version = _counts(store)[3]
    result = _import(store, engine, photo_dir, changed)
    s = result.report.summary
    assert (s.created, s.updated, s.unchanged) == (0, 2, 2)
    assert result.report.enrolled_photos == 1
    with store.engine.connect() as conn:
        assert dict(conn.execute(select(Occupant.name, Occupant.id)).all()) == ids_before
        phone = conn.scalar(select(Occupant.phone).where(Occupant.name == "张三"))
        assert phone == "+8613900000001"
    occupants, _, templates, new_version = _counts(store)
    assert (occupants, templates) == (4, 4)  # the old template was replaced, not added to
    assert new_version > version


def test_sync_moves_out_missing_occupants(
    store: SqlStore, engine: FaceEngine, photo_dir: Path
) -> None:
    _import(store, engine, photo_dir, ROWS)
    version = _counts(store)[3]
    without = ROWS[:3]
    plain = _import(store, engine, photo_dir, without)
    assert plain.report.summary.moved_out == 0  # without --sync nobody moves out
    result = _import(store, engine, photo_dir, without, sync=True)
    assert result.report.summary.moved_out == 1
    occupants, active, templates, new_version = _counts(store)
    assert (occupants, active, templates) == (4, 3, 3)
    assert new_version > version
    with store.engine.connect() as conn:
        status, move_out = conn.execute(
            select(Occupant.status, Occupant.move_out).where(Occupant.name == "赵六")
        ).one()
    assert status == "moved_out" and move_out is not None
    # Back on the file: active again, re-enrolled.
    back = _import(store, engine, photo_dir, ROWS, sync=True)
    assert (back.report.summary.updated, back.report.summary.moved_out) == (1, 0)
    assert _counts(store)[:3] == (4, 4, 4)


def test_sync_keeps_people_whose_row_failed(
    store: SqlStore, engine: FaceEngine, photo_dir: Path
) -> None:
    _import(store, engine, photo_dir, ROWS)
    broken = list(ROWS)
    broken[3] = broken[3].replace("3-2-1205", "火星基地")
    result = _import(store, engine, photo_dir, broken, sync=True, partial=True)
    assert (result.report.summary.failed, result.report.summary.moved_out) == (1, 0)
    assert _counts(store)[1] == 4


def test_all_or_nothing_versus_partial(
    store: SqlStore, engine: FaceEngine, photo_dir: Path
) -> None:
    bad_id = make_id(5)[:17] + ("0" if make_id(5)[17] != "0" else "1")
    rows = [
        *ROWS[:2],
        f"孙七,{bad_id},,3-2-1206,业主,,yao.jpg,E5\n",
        f"周八,{make_id(6)},,3-2-1207,业主,,noface.jpg,E6\n",
        f"吴九,{make_id(7)},,3-2-1208,业主,,two.jpg,E7\n",
        f"郑十,{make_id(8)},,3-2-1209,业主,,missing.jpg,E8\n",
    ]
    result = _import(store, engine, photo_dir, rows)
    issues = {(i.row, i.column, i.reason) for i in result.report.issues}
    assert issues == {
        (4, "证件号码", "bad_id_number"),
        (5, "照片", "no_face"),
        (6, "照片", "several_faces"),
        (7, "照片", "bad_photo"),
    }
    assert not result.report.written
    assert _counts(store) == (0, 0, 0, 0)  # nothing written, not even the site

    partial = _import(store, engine, photo_dir, rows, partial=True)
    assert partial.report.written
    assert (partial.report.summary.created, partial.report.summary.failed) == (2, 4)
    assert _counts(store)[:3] == (2, 2, 2)


def test_dry_run_writes_nothing(store: SqlStore, engine: FaceEngine, photo_dir: Path) -> None:
    result = _import(store, engine, photo_dir, ROWS, dry_run=True)
    assert result.report.summary.created == 4
    assert result.report.enrolled_photos == 4  # enrolment is validated too
    assert not result.report.written
    assert _counts(store) == (0, 0, 0, 0)


def test_same_person_twice_via_different_keys(
    store: SqlStore, engine: FaceEngine, photo_dir: Path
) -> None:
    _import(store, engine, photo_dir, ROWS)
    # Row 2 names 张三 by external id only, row 3 by ID number only: one person twice.
    rows = [
        "张三,,,3-2-1203,业主,,,E1\n",
        f"张三,{make_id(1)},,3-2-1203,业主,,,\n",
    ]
    result = _import(store, engine, photo_dir, rows)
    assert [(i.row, i.reason) for i in result.report.issues] == [(3, "duplicate")]
    assert "row 2" in result.report.issues[0].message


def test_site_with_another_model_is_refused(
    store: SqlStore, engine: FaceEngine, photo_dir: Path
) -> None:
    from server.db import session_scope
    from server.sites.service import create_site

    with session_scope(store._factory) as session:
        create_site(session=session, name="幸福小区", model_id="some-other-model")
    with pytest.raises(InputError, match="some-other-model"):
        _import(store, engine, photo_dir, ROWS)
    assert _counts(store)[:3] == (0, 0, 0)


def test_external_id_and_id_number_of_two_different_people(
    store: SqlStore, engine: FaceEngine, photo_dir: Path
) -> None:
    _import(store, engine, photo_dir, ROWS)
    # E1 is 张三, but the ID number given is 李四's.
    rows = [f"张三,{make_id(2)},,3-2-1203,业主,,,E1\n"]
    result = _import(store, engine, photo_dir, rows, partial=True)
    ((row, column, reason),) = [(i.row, i.column, i.reason) for i in result.report.issues]
    assert (row, column, reason) == (2, "证件号码", "conflict")
    assert "E2" in result.report.issues[0].message
    assert result.report.summary.updated == 0


def test_process_pool_gives_the_same_templates(
    store: SqlStore, engine: FaceEngine, photo_dir: Path, tmp_path: Path
) -> None:
    from registry.enrol import ProcessPoolBackend

    rows = [*ROWS, f"孙七,{make_id(5)},,3-2-1206,业主,,two.jpg,E5\n"]
    sheet = read_csv_bytes((HEADER + "".join(rows)).encode("gbk"), "reg.csv")
    result = run_import(
        sheet,
        store=store,
        options=ImportOptions(site="幸福小区", partial=True),
        secret=SECRET,
        photos=FolderSource(photo_dir),
        enroller=lambda: ProcessPoolBackend(2, threads=1),
    )
    assert (result.report.summary.created, result.report.summary.failed) == (4, 1)
    assert [i.reason for i in result.report.issues] == ["several_faces"]
    # Same photos through the in-process engine: the same embeddings.
    with store.engine.connect() as conn:
        stored = dict(
            conn.execute(
                select(Occupant.external_id, FaceTemplate.embedding).join(
                    FaceTemplate, FaceTemplate.occupant_id == Occupant.id
                )
            ).all()
        )
    direct = engine.enrol((photo_dir / "hanks.jpg").read_bytes()).embedding
    assert np.allclose(np.frombuffer(stored["E4"], dtype="<f4"), direct, atol=1e-5)


def test_one_face_filed_under_two_people(
    store: SqlStore, engine: FaceEngine, photo_dir: Path
) -> None:
    (photo_dir / "copy.jpg").write_bytes((photo_dir / "p0.jpg").read_bytes())
    rows = [*ROWS, f"孙七,{make_id(5)},,3-2-1206,业主,,copy.jpg,E5\n"]
    result = _import(store, engine, photo_dir, rows)
    same = sorted((i.row, i.reason) for i in result.report.issues)
    assert same == [(2, "same_face"), (6, "same_face")]
    assert _counts(store)[:3] == (0, 0, 0)

    # Against the register: 孙七 arrives later with 张三's (registered) photo.
    _import(store, engine, photo_dir, ROWS)
    later = _import(store, engine, photo_dir, [rows[-1]], partial=True)
    ((issue),) = later.report.issues
    assert (issue.row, issue.reason) == (2, "same_face")
    assert "张三" in issue.message
    # ... unless the check is off.
    sheet = read_csv_bytes((HEADER + rows[-1]).encode("gbk"), "reg.csv")
    allowed = run_import(
        sheet,
        store=store,
        options=ImportOptions(site="幸福小区", same_face_similarity=None),
        secret=SECRET,
        photos=FolderSource(photo_dir),
        enroller=lambda: engine,
    )
    assert allowed.report.summary.created == 1 and not allowed.report.issues


def test_a_missing_optional_column_keeps_the_stored_values(
    store: SqlStore, engine: FaceEngine, photo_dir: Path
) -> None:
    _import(store, engine, photo_dir, ROWS)
    # Another export of the same register: no 手机, 入住日期 or 外部编号 columns.
    text = "姓名,证件号码,地址或房号,身份,照片\n" + "".join(
        f"{c[0]},{c[1]},{c[3]},{c[4]},{c[6]}\n" for c in (r.split(",") for r in ROWS)
    )
    result = run_import(
        read_csv_bytes(text.encode(), "other.csv"),
        store=store,
        options=ImportOptions(site="幸福小区"),
        secret=SECRET,
        photos=FolderSource(photo_dir),
        enroller=lambda: engine,
    )
    assert (result.report.summary.unchanged, result.report.summary.updated) == (4, 0)
    with store.engine.connect() as conn:
        kept = conn.execute(
            select(Occupant.phone, Occupant.external_id).where(Occupant.name == "张三")
        ).one()
    assert tuple(kept) == ("+8613800000001", "E1")
    # An empty cell in a present column does clear the value.
    cleared = _import(store, engine, photo_dir, [ROWS[0].replace("13800000001", ""), *ROWS[1:]])
    assert cleared.report.summary.updated == 1


def test_a_photo_that_is_not_jpeg_png_or_webp_fails_its_row(
    store: SqlStore, engine: FaceEngine, photo_dir: Path
) -> None:
    import cv2

    # p1's face, saved as BMP under a .jpg name: OpenCV decodes it (and would as happily
    # decode a 1 KB BMP declaring 144 MP); the registry refuses it by content.
    image = cv2.imdecode(np.frombuffer((photo_dir / "p1.jpg").read_bytes(), np.uint8), 1)
    ok, bmp = cv2.imencode(".bmp", image)
    assert ok
    (photo_dir / "bmp.jpg").write_bytes(bmp.tobytes())
    rows = [ROWS[0], f"孙七,{make_id(5)},,3-2-1206,业主,,bmp.jpg,E5\n"]
    result = _import(store, engine, photo_dir, rows, partial=True)
    (issue,) = result.report.issues
    assert (issue.row, issue.column, issue.reason) == (3, "照片", "bad_photo")
    assert "BMP" in issue.message
    assert (result.report.summary.created, result.report.summary.failed) == (1, 1)
