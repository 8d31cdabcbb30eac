"""Property tests: hostile or random input ends in the registry's own errors, nothing else.

A photo, a register file or a cell is the outside world's; whatever its bytes,
the importer must answer with a :class:`~registry.errors.RegistryError` (a row
issue or exit 2), never another exception (a traceback in the office).
"""

from __future__ import annotations

import contextlib
import warnings
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.csvsafe import FORMULA_STARTS, safe_cell, unescape_cell
from registry.errors import InputError, PhotoError
from registry.photos import FolderSource, PhotoLimits, ZipSource, check_photo, image_dimensions
from registry.reader import read_csv_bytes, read_registry
from tests.registry.helpers import XLSX_HEADER, hostile_xlsx, xlsx_row

# No deadline: the machine is shared and timing is not the property.
PROPS = settings(deadline=None, max_examples=300)
SLOW_PROPS = settings(
    deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

MAGICS = st.sampled_from(
    [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b"BM", b"GIF89a"]
)
PHOTO_BYTES = st.one_of(
    st.binary(max_size=256),
    st.builds(lambda magic, rest: magic + rest, MAGICS, st.binary(max_size=256)),
)


@PROPS
@given(PHOTO_BYTES)
def test_random_bytes_as_a_photo_raise_only_photo_error(data: bytes) -> None:
    limits = PhotoLimits(max_pixels=1_000_000)
    try:
        check_photo(data, "x.jpg", limits)
    except PhotoError:
        return
    # Accepted: it has a format we allow and a size within the cap.
    size = image_dimensions(data)
    assert size is not None and 0 < size[0] * size[1] <= limits.max_pixels


@SLOW_PROPS
@given(data=PHOTO_BYTES)
def test_random_bytes_from_a_folder_or_zip_raise_only_photo_error(
    tmp_path: Path, data: bytes
) -> None:
    (tmp_path / "a.jpg").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "p.zip", "w") as archive:
        archive.writestr("a.jpg", data)
    zipped = ZipSource(tmp_path / "p.zip")
    try:
        for source in (FolderSource(tmp_path), zipped):
            with contextlib.suppress(PhotoError):
                assert source.read("a.jpg") == data
    finally:
        zipped.close()


@PROPS
@given(st.text(max_size=40))
def test_escaped_cells_are_never_formulas_and_read_back(text: str) -> None:
    cell = safe_cell(text)
    assert not cell.startswith(FORMULA_STARTS)
    if not text.startswith("'"):
        assert unescape_cell(cell) == text


@PROPS
@given(st.binary(max_size=512))
def test_random_bytes_as_a_csv_raise_only_input_error(data: bytes) -> None:
    with contextlib.suppress(InputError):
        read_csv_bytes(data)


def _read_quietly(path: Path) -> None:
    # openpyxl warns about odd parts; in production a warning is a log line, not a failure.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(InputError):
            read_registry(path)


@SLOW_PROPS
@given(data=st.binary(max_size=512))
def test_random_bytes_as_an_xlsx_raise_only_input_error(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "r.xlsx").write_bytes(data)
    _read_quietly(tmp_path / "r.xlsx")


@SLOW_PROPS
@given(
    sheet_xml=st.one_of(
        st.binary(max_size=400).map(lambda b: b.decode("latin-1")),
        st.text(alphabet='<>/="&;!ABCDrowcvis1 XFD[]', max_size=200),
    )
)
def test_random_sheet_xml_raises_only_input_error(tmp_path: Path, sheet_xml: str) -> None:
    _read_quietly(hostile_xlsx(tmp_path / "r.xlsx", sheet_xml))


CELL_REFS = st.tuples(
    st.sampled_from(["E", "Z", "AA", "XFD"]), st.integers(min_value=1, max_value=3000)
)


@SLOW_PROPS
@given(
    stray=st.lists(CELL_REFS, max_size=6),
    dimension=st.sampled_from([None, "A1:D3", "A1:XFD1048576", "A1:XFD3000", "B2", "garbage"]),
)
def test_stray_cells_and_any_dimension_read_or_refuse_cleanly(
    tmp_path: Path, stray: list[tuple[str, int]], dimension: str | None
) -> None:
    rows = {1: xlsx_row(1, XLSX_HEADER), 2: xlsx_row(2, ["张三", "E1", "3-2-1203", "业主"])}
    for column, number in stray:
        if number > 2:
            rows[number] = f'<row r="{number}"><c r="{column}{number}"><v>1</v></c></row>'
    sheet = "".join(rows[n] for n in sorted(rows))
    path = hostile_xlsx(tmp_path / "r.xlsx", sheet, dimension=dimension)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read = read_registry(path)
        except InputError:
            return
    # Read: the one real row; cells right of the header are not data.
    assert [(r.number, r.text("external_id")) for r in read.rows] == [(2, "E1")]
