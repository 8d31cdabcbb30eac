"""Several photos per row (``a.jpg;b.jpg``): each its own registry template.

Against a real SQLite database (and PostgreSQL when reachable) and the real
face engine; second photos of one person are mirrored or darkened copies of
the packaged test photos (same person, a different file).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.face.engine import FaceEngine
from registry.importer import ImportOptions, ImportResult, run_import
from registry.photos import FolderSource
from registry.reader import Sheet, read_csv_bytes, read_registry
from registry.validate import split_photos
from server.occupants.models import FaceTemplate, Occupant
from server.occupants.service import add_template
from server.registry_api.store import SqlStore
from server.sites.models import Site
from tests.registry.helpers import (
    HEADER,
    ROWS,
    SECRET,
    add_second_photos,
    empty_tables,
    make_id,
)

SITE = "幸福小区"


def _row(photos: str, n: int = 1, name: str = "张三") -> str:
    return f"{name},{make_id(n)},,3-2-{1200 + n},业主,,{photos},E{n}\n"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
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


@pytest.fixture
def photos(photo_dir: Path, photo_bytes: dict[str, bytes]) -> Path:
    return add_second_photos(photo_dir, photo_bytes)


def _sheet(rows: list[str]) -> Sheet:
    return read_csv_bytes((HEADER + "".join(rows)).encode("utf-8"), "reg.csv")


def _import(
    store: SqlStore, engine: FaceEngine, folder: Path, sheet: Sheet, **options: bool
) -> ImportResult:
    return run_import(
        sheet,
        store=store,
        options=ImportOptions(site=SITE, **options),
        secret=SECRET,
        photos=FolderSource(folder),
        enroller=lambda: engine,
    )


def _sha(folder: Path, name: str) -> str:
    return hashlib.sha256((folder / name).read_bytes()).hexdigest()


def _templates(store: SqlStore) -> dict[str, int]:
    """Template source -> id, of every template of every occupant."""
    with store.engine.connect() as conn:
        return {s: i for i, s in conn.execute(select(FaceTemplate.id, FaceTemplate.source))}


def _state(store: SqlStore) -> tuple[int, int, int]:
    """(occupants, templates, gallery version)."""
    with store.engine.connect() as conn:
        return (
            conn.scalar(select(func.count()).select_from(Occupant)) or 0,
            conn.scalar(select(func.count()).select_from(FaceTemplate)) or 0,
            conn.scalar(select(Site.gallery_version)) or 0,
        )


def test_split_photos() -> None:
    assert split_photos(" a.jpg ; b.jpg；c.jpg|") == ("a.jpg", "b.jpg", "c.jpg")
    assert split_photos("one photo.jpg") == ("one photo.jpg",)
    assert split_photos(" ;；| ") == ()


def test_two_photos_make_two_templates_and_a_reimport_writes_nothing(
    store: SqlStore, engine: FaceEngine, photos: Path
) -> None:
    result = _import(store, engine, photos, _sheet([_row("p0.jpg;p0b.jpg"), *ROWS[1:2]]))
    assert result.report.written and not result.report.issues
    assert result.report.enrolled_photos == 3
    assert set(_templates(store)) == {
        f"registry:{_sha(photos, n)}" for n in ("p0.jpg", "p0b.jpg", "p1.jpg")
    }
    with store.engine.connect() as conn:
        owners = conn.execute(
            select(Occupant.name, func.count())
            .join(FaceTemplate, FaceTemplate.occupant_id == Occupant.id)
            .group_by(Occupant.name)
        ).all()
    assert sorted(owners) == [("张三", 2), ("李四", 1)]
    before, state = _templates(store), _state(store)

    # The same photos, written with the full-width separator and spaces: nothing changes.
    again = _import(store, engine, photos, _sheet([_row(" p0b.jpg ； p0.jpg"), *ROWS[1:2]]))
    assert again.report.written and not again.report.issues
    assert again.report.enrolled_photos == 0
    assert again.report.unchanged_photos == 3
    assert again.report.summary.unchanged == 2
    assert _templates(store) == before and _state(store) == state
    assert "photos: enrolled 0, unchanged 3, failed 0" in again.report.render_text()


def test_replacing_one_photo_replaces_exactly_its_template(
    store: SqlStore, engine: FaceEngine, photos: Path
) -> None:
    _import(store, engine, photos, _sheet([_row("p0.jpg|p0b.jpg")]))
    with Session(store.engine) as session:
        occupant = session.scalars(select(Occupant)).one()
        # A template a manager enrolled from a case: never touched by an import.
        add_template(
            session=session,
            occupant_id=occupant.id,
            embedding=engine.enrol((photos / "p0c.jpg").read_bytes()).embedding,
            model_id=engine.model_id,
            source="case:7",
        )
        session.commit()
    before, (_, _, version) = _templates(store), _state(store)

    result = _import(store, engine, photos, _sheet([_row("p0.jpg;p0c.jpg")]))
    assert not result.report.issues
    assert result.report.summary.updated == 1
    assert (result.report.enrolled_photos, result.report.unchanged_photos) == (1, 1)
    after = _templates(store)
    kept, gone, new = (f"registry:{_sha(photos, n)}" for n in ("p0.jpg", "p0b.jpg", "p0c.jpg"))
    assert set(after) == {kept, new, "case:7"}
    assert after[kept] == before[kept] and after["case:7"] == before["case:7"]
    assert gone not in after
    assert _state(store)[2] == version + 1  # one bump for the import

    # Fewer photos: the dropped one's template goes, nothing is enrolled.
    fewer = _import(store, engine, photos, _sheet([_row("p0c.jpg")]))
    assert fewer.report.enrolled_photos == 0
    assert set(_templates(store)) == {new, "case:7"}
    assert _state(store)[2] == version + 2


@pytest.mark.parametrize("bad", ["noface.jpg", "two.jpg", "missing.jpg"])
def test_a_bad_second_photo_fails_the_row(
    store: SqlStore, engine: FaceEngine, photos: Path, bad: str
) -> None:
    rows = [_row(f"p0.jpg;{bad}"), _row("p1.jpg;p1b.jpg", 2, "李四")]
    result = _import(store, engine, photos, _sheet(rows))
    assert [(i.row, i.column) for i in result.report.issues] == [(2, "照片")]
    assert bad in result.report.issues[0].message
    assert result.report.failed_photos == 1
    assert not result.report.written and _state(store) == (0, 0, 0)

    partial = _import(store, engine, photos, _sheet(rows), partial=True)
    assert partial.report.written and partial.report.summary.failed == 1
    with store.engine.connect() as conn:
        assert list(conn.scalars(select(Occupant.name))) == ["李四"]
    assert set(_templates(store)) == {f"registry:{_sha(photos, n)}" for n in ("p1.jpg", "p1b.jpg")}


def test_photos_of_two_people_in_one_row_are_refused(
    store: SqlStore, engine: FaceEngine, photos: Path
) -> None:
    result = _import(store, engine, photos, _sheet([_row("p0.jpg;p0b.jpg;p2.jpg")]))
    (issue,) = result.report.issues
    assert issue.reason == "different_people"
    assert "'p2.jpg'" in issue.message and "look like different people" in issue.message
    assert not result.report.written and _state(store) == (0, 0, 0)

    # Against a kept template too: p0 is stored, a later file adds p2 to the row.
    _import(store, engine, photos, _sheet([_row("p0.jpg")]))
    state = _state(store)
    later = _import(store, engine, photos, _sheet([_row("p0.jpg;p2.jpg")]))
    assert [i.reason for i in later.report.issues] == ["different_people"]
    assert _state(store) == state


def test_photo_cell_limits(store: SqlStore, engine: FaceEngine, photos: Path) -> None:
    rows = [
        _row("p0.jpg;p0b.jpg;p0c.jpg;p1.jpg"),
        _row("p2.jpg;P2.JPG", 2, "李四"),
    ]
    result = _import(store, engine, photos, _sheet(rows), partial=True)
    issues = {(i.row, i.reason): i.message for i in result.report.issues}
    assert set(issues) == {(2, "too_many_photos"), (3, "duplicate")}
    assert "at most 3" in issues[(2, "too_many_photos")]
    assert _state(store)[:2] == (0, 0)

    # One file under two names (same bytes) is the same photo twice, too.
    (photos / "copy.jpg").write_bytes((photos / "p3.jpg").read_bytes())
    same = _import(store, engine, photos, _sheet([_row("p3.jpg;copy.jpg", 3, "王五")]))
    assert [i.reason for i in same.report.issues] == ["duplicate"]
    assert "same file" in same.report.issues[0].message


def test_xlsx_with_a_list_of_photos(
    store: SqlStore, engine: FaceEngine, photos: Path, tmp_path: Path
) -> None:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(HEADER.strip().split(","))
    sheet.append(["张三", make_id(1), "", "3-2-1201", "业主", "", "p0.jpg; p0b.jpg", "E1"])
    path = tmp_path / "reg.xlsx"
    workbook.save(path)
    result = _import(store, engine, photos, read_registry(path))
    assert not result.report.issues and result.report.enrolled_photos == 2
    assert _state(store)[:2] == (1, 2)
