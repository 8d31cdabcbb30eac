"""Reading registry files: encodings, XLSX, Chinese and English headers, row numbers."""

from __future__ import annotations

import codecs
import csv
from datetime import datetime
from pathlib import Path

import pytest
from openpyxl import Workbook

from registry import reader
from registry.errors import InputError
from registry.reader import read_csv_bytes, read_registry
from registry.template import write_template
from registry.validate import validate_sheet
from tests.registry.helpers import (
    BILLION_LAUGHS,
    XLSX_HEADER,
    XLSX_TWO_ROWS,
    XXE,
    hostile_xlsx,
    xlsx_row,
)

SECRET = b"test-secret-0123456789"
ZH_CSV = (
    "姓名,证件号码,手机,地址或房号,身份,入住日期,照片\n"
    "张三,11010519491231002X,13812345678,三幢二单元1203室,业主,2024-03-01,a.jpg\n"
)
EN_CSV = (
    "Name,ID_Number,Phone,Address,Role,Move_In,Photo,External_ID\n"
    "Zhang San,,138 1234 5678,3-2-1203,owner,2024/3/1,a.jpg,P1\n"
)


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (ZH_CSV.encode("gbk"), "gb18030"),
        (ZH_CSV.encode("gb18030"), "gb18030"),
        (ZH_CSV.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + ZH_CSV.encode("utf-8"), "utf-8-sig"),
        (ZH_CSV.encode("utf-16"), "utf-16"),
    ],
)
def test_csv_encodings(data: bytes, encoding: str) -> None:
    sheet = read_csv_bytes(data)
    assert sheet.encoding == encoding
    assert sheet.columns["name"] == "姓名"
    assert sheet.rows[0].text("name") == "张三"
    assert sheet.rows[0].text("address") == "三幢二单元1203室"


def test_gbk_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "住户.csv"
    path.write_bytes(ZH_CSV.replace(",", "\t").encode("gbk"))  # tab-separated works too
    sheet = read_registry(path)
    validated = validate_sheet(sheet, SECRET)
    assert not validated.issues
    (record,) = validated.records
    assert record.name == "张三"
    assert record.unit.key == "3-2-1203"


def test_english_headers_map_to_the_same_keys() -> None:
    zh = read_csv_bytes(ZH_CSV.encode())
    en = read_csv_bytes(EN_CSV.encode())
    assert set(zh.columns) | {"external_id"} == set(en.columns) | {"id_number"}
    en_record = validate_sheet(en, SECRET).records[0]
    zh_record = validate_sheet(zh, SECRET).records[0]
    assert en_record.unit == zh_record.unit
    assert en_record.role == zh_record.role
    assert en_record.phone == zh_record.phone == "+8613812345678"


def test_row_numbers_are_what_excel_shows() -> None:
    text = (
        "# a comment\n\n姓名,外部编号,地址,身份\n张三,1,3-2-1203,业主\n,,,\n李四,2,3-2-1204,租户\n"
    )
    sheet = read_csv_bytes(text.encode())
    assert [r.number for r in sheet.rows] == [4, 6]


def test_missing_columns_name_what_is_missing() -> None:
    with pytest.raises(InputError, match="身份/role") as info:
        read_csv_bytes("姓名,地址,证件号码\n张三,3-2-1203,x\n".encode())
    assert "'姓名'" in str(info.value)  # the headers found are listed


def test_duplicate_column_is_an_input_error() -> None:
    with pytest.raises(InputError, match="both mean"):
        read_csv_bytes("姓名,name,地址,身份,外部编号\n".encode())


def test_undecodable_bytes() -> None:
    with pytest.raises(InputError, match="UTF-8"):
        read_csv_bytes(b"\x81\x20\xff\xfe\x00" * 10)


def test_unknown_extension_and_xls(tmp_path: Path) -> None:
    for name in ("a.xls", "a.pdf"):
        (tmp_path / name).write_bytes(b"x")
        with pytest.raises(InputError):
            read_registry(tmp_path / name)
    with pytest.raises(InputError, match="no such file"):
        read_registry(tmp_path / "missing.csv")


def test_xlsx_with_typed_cells(tmp_path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["姓名 name", "证件号码", "手机", "楼栋", "单元", "房号", "身份", "入住日期"])
    sheet.append(
        ["张三", "11010519491231002X", 13812345678, "3号楼", 2, 1203, "业主", datetime(2024, 3, 1)]
    )
    # An 18-digit ID typed as a number: Excel keeps 15 significant digits.
    sheet.append(["李四", 110105194912310020, 13912345678.0, 3, 2, 1203, "家属", None])
    path = tmp_path / "reg.xlsx"
    workbook.save(path)
    validated = validate_sheet(read_registry(path), SECRET)
    (record,) = validated.records
    assert record.unit.key == "3-2-1203"
    assert record.phone == "+8613812345678"
    assert str(record.move_in) == "2024-03-01"
    (issue,) = validated.issues
    assert (issue.row, issue.column, issue.reason) == (3, "证件号码", "bad_id_number")


def test_broken_xlsx(tmp_path: Path) -> None:
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match="XLSX"):
        read_registry(path)


@pytest.mark.parametrize("name", ["template.csv", "template.xlsx"])
def test_template_round_trips_every_column(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_template(path)
    sheet = read_registry(path)
    assert len(sheet.columns) == 11
    validated = validate_sheet(sheet, SECRET)
    assert not validated.issues
    # Its two examples are one unit written two ways.
    assert {r.unit.key for r in validated.records} == {"3-2-1203"}
    with pytest.raises(InputError, match="exists"):
        write_template(path)


def test_english_template(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_template(path, lang="en")
    assert set(read_registry(path).columns.values()) >= {"name", "id_number", "photo"}


def test_title_rows_above_the_header_are_skipped(tmp_path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["幸福小区住户登记表"])
    sheet.append(["导出时间 2024-05-01"])
    sheet.append(["姓名", "外部编号", "地址", "身份"])
    sheet.append(["张三", "E1", "3-2-1203", "业主"])
    path = tmp_path / "titled.xlsx"
    workbook.save(path)
    read = read_registry(path)
    assert read.columns["name"] == "姓名"
    assert [r.number for r in read.rows] == [4]


def test_header_without_rows_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no rows"):
        read_csv_bytes("姓名,外部编号,地址,身份\n".encode())
    with pytest.raises(InputError, match="empty"):
        read_csv_bytes(b"\n\n")


def test_damaged_utf8_is_not_misread_as_gbk() -> None:
    data = ("姓名,外部编号,地址,身份\n" + "张三丰,E1,3-2-1203,业主\n" * 5).encode()
    damaged = data.replace("丰".encode(), b"\xe4\xb8", 1)  # one character cut short
    with pytest.raises(InputError, match="line 2"):
        read_csv_bytes(damaged)


def test_excel_text_formula_wrapper_is_unwrapped() -> None:
    text = (
        '姓名,证件号码,手机,地址,身份\n张三,"=""11010519491231002X""",="13812345678",3-2-1,业主\n'
    )
    (record,) = validate_sheet(read_csv_bytes(text.encode()), SECRET).records
    assert record.protected_id is not None and record.protected_id.last4 == "002X"
    assert record.phone == "+8613812345678"


def test_a_dimension_past_the_row_cap_is_refused_before_reading(tmp_path: Path) -> None:
    # 5 KB that declare A1:XFD1048576 with a stray cell in the far corner: before,
    # every one of the million rows was read 16,384 cells wide (minutes).
    stray = '<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>'
    path = hostile_xlsx(tmp_path / "huge.xlsx", XLSX_TWO_ROWS + stray, dimension="A1:XFD1048576")
    assert path.stat().st_size < 8 * 1024
    with pytest.raises(InputError, match="dimension spans 1048576 rows"):
        read_registry(path)


def test_a_sheet_longer_than_its_dimension_says_is_still_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dimension claims 2 rows; a stray cell sits past the cap (lowered to keep
    # the test small). Before, openpyxl stopped at the dimension's last row and the
    # rest of the sheet was silently ignored.
    monkeypatch.setattr(reader, "MAX_SHEET_ROWS", 50)
    stray = '<row r="60"><c r="XFD60"><v>1</v></c></row>'
    path = hostile_xlsx(tmp_path / "long.xlsx", XLSX_TWO_ROWS + stray, dimension="A1:D2")
    with pytest.raises(InputError, match="past row 50"):
        read_registry(path)
    # Without a dimension at all, the same.
    path = hostile_xlsx(tmp_path / "nodim.xlsx", XLSX_TWO_ROWS + stray, dimension=None)
    with pytest.raises(InputError, match="past row 50"):
        read_registry(path)


def test_rows_are_read_only_as_wide_as_the_header(tmp_path: Path) -> None:
    far = '<c r="XFD2"><v>7</v></c>'
    sheet_data = (
        xlsx_row(1, XLSX_HEADER)
        + xlsx_row(2, ["张三", "E1", "3-2-1203", "业主"], far)
        + '<row r="40"><c r="XFD40"><v>1</v></c></row>'
        + xlsx_row(41, ["李四", "E2", "3-2-1204", "租户"])
    )
    path = hostile_xlsx(tmp_path / "wide.xlsx", sheet_data, dimension="A1:XFD41")
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = workbook.worksheets[0]
        sheet.reset_dimensions()
        records = list(reader._xlsx_records(path, sheet))
    finally:
        workbook.close()
    # Not 16,384 cells a row (the dimension's XFD), nor the far cells' values.
    assert {len(cells) for _n, cells in records} == {4}
    assert [n for n, _c in records] == list(range(1, 42))
    read = read_registry(path)
    assert [(r.number, r.text("external_id")) for r in read.rows] == [(2, "E1"), (41, "E2")]


@pytest.mark.parametrize(
    ("prolog", "entity"), [(BILLION_LAUGHS, "&lol9;"), (XXE, "&xxe;")], ids=["laughs", "xxe"]
)
def test_entity_attacks_are_input_errors(tmp_path: Path, prolog: str, entity: str) -> None:
    # Blocked by expat before too, but as a ParseError traceback out of the CLI.
    sheet_data = xlsx_row(1, XLSX_HEADER) + xlsx_row(2, ["张三", "E1", "3-2-1203", entity])
    path = hostile_xlsx(tmp_path / "evil.xlsx", sheet_data, prolog=prolog)
    with pytest.raises(InputError, match="not a readable XLSX") as caught:
        read_registry(path)
    assert "root:" not in str(caught.value)  # /etc/passwd was never read


def test_a_workbook_that_would_inflate_past_the_cap_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "MAX_XLSX_INFLATED_BYTES", 64 * 1024)
    filler = "".join(xlsx_row(n, ["x", f"E{n}", "3-2-1203", "业主"]) for n in range(2, 2000))
    path = hostile_xlsx(tmp_path / "big.xlsx", xlsx_row(1, XLSX_HEADER) + filler, dimension=None)
    with pytest.raises(InputError, match="inflate to"):
        read_registry(path)


def test_csv_template_cells_are_never_formulas(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_template(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert "'+86 139 0000 1234" in cells  # the example phone, a formula to Excel unescaped
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    (second,) = [r for r in read_registry(path).rows if r.text("name") == "李四"]
    assert second.text("phone") == "+86 139 0000 1234"


def test_the_escape_apostrophe_is_dropped_when_read() -> None:
    data = "姓名,外部编号,地址,身份,手机\n'-张三,E1,3-2-1203,业主,'+86 139 0000 1234\n"
    (row,) = read_csv_bytes(data.encode()).rows
    assert (row.text("name"), row.text("phone")) == ("-张三", "+86 139 0000 1234")
    # Not a formula start after it: the apostrophe is the cell's own.
    (row,) = read_csv_bytes(data.replace("'-张三", "'张三").encode()).rows
    assert row.text("name") == "'张三"


def test_row_numbers_survive_gaps_before_and_after_the_header(tmp_path: Path) -> None:
    # The header is looked for in a first pass, the rows below it read in a second:
    # the numbers must still be the ones Excel shows.
    sheet_data = (
        '<row r="1"><c r="A1" t="inlineStr"><is><t>幸福小区住户登记表</t></is></c></row>'
        + xlsx_row(300, XLSX_HEADER)
        + xlsx_row(302, ["张三", "E1", "3-2-1203", "业主"])
        + xlsx_row(900, ["李四", "E2", "3-2-1204", "租户"])
    )
    path = hostile_xlsx(tmp_path / "gaps.xlsx", sheet_data, dimension=None)
    read = read_registry(path)
    assert [(r.number, r.text("external_id")) for r in read.rows] == [(302, "E1"), (900, "E2")]
