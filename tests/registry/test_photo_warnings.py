"""A usable but poor photo is enrolled with a warning in the import report, not refused.

Against a real SQLite database (and PostgreSQL when reachable) and the real face
engine; the poor photo is a packaged test photo blurred into the band between
the sharpness gate and its warning level (edge.face.quality.QualityConfig).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.face.engine import FaceEngine
from registry.importer import ImportOptions, run_import
from registry.photos import FolderSource
from registry.reader import read_csv_bytes
from server.registry_api.store import SqlStore
from tests.registry.helpers import HEADER, SECRET, empty_tables, make_id

SITE = "幸福小区"


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


def test_poor_photo_is_enrolled_with_a_warning(
    store: SqlStore, engine: FaceEngine, photo_dir: Path, tmp_path: Path
) -> None:
    yao = cv2.imread(str(photo_dir / "yao.jpg"))
    poor = cv2.GaussianBlur(yao, (0, 0), 3.5)  # usable, but past the sharpness warning
    ok, buf = cv2.imencode(".jpg", poor, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    (photo_dir / "poor.jpg").write_bytes(buf.tobytes())
    quality = engine.enrol(np.asarray(poor)).quality
    assert quality.usable and quality.warnings  # the premise: enrolled, but poor

    rows = (
        f"张三,{make_id(1)},,3-2-1201,业主,,p0.jpg,E1\n"
        f"李四,{make_id(2)},,3-2-1202,业主,,poor.jpg,E2\n"
    )
    sheet = read_csv_bytes((HEADER + rows).encode("utf-8"), "reg.csv")
    result = run_import(
        sheet,
        store=store,
        options=ImportOptions(site=SITE),
        secret=SECRET,
        photos=FolderSource(photo_dir),
        enroller=lambda: engine,
    )
    report = result.report
    assert report.written and report.issues == ()
    assert report.summary.created == 2 and report.summary.failed == 0
    assert report.enrolled_photos == 2
    assert [(w.row, w.reason, w.name) for w in report.warnings] == [(3, "poor_photo", "李四")]
    assert "poor.jpg" in report.warnings[0].message and "blurred" in report.warnings[0].message

    text = report.render_text()
    assert "warning: row 3 (李四), 照片:" in text
    assert "photos: enrolled 2, unchanged 0, failed 0, warnings 1" in text
    data = report.to_dict()
    assert [w["reason"] for w in data["warnings"]] == ["poor_photo"]  # type: ignore[index]
    out = tmp_path / "report.json"
    report.write(out)
    assert json.loads(out.read_text(encoding="utf-8"))["warnings"][0]["row"] == 3
    csv_out = tmp_path / "report.csv"
    report.write(csv_out)
    assert "poor_photo" in csv_out.read_text(encoding="utf-8-sig")
