"""Row validation: every bad cell reported with row and column, duplicates caught."""

from __future__ import annotations

from registry.idnumber import check_char
from registry.reader import read_csv_bytes
from registry.validate import validate_sheet

SECRET = b"test-secret-0123456789"
ID1 = "11010519491231002X"
ID2 = "11010519800101001" + check_char("11010519800101001")


def _validate(text: str):  # type: ignore[no-untyped-def]
    return validate_sheet(read_csv_bytes(text.encode()), SECRET)


def test_every_problem_of_a_row_is_reported() -> None:
    result = _validate(
        f"姓名,证件号码,手机,地址,身份,入住日期\n张三,{ID1[:17]}1,123,3楼1203,房客,2024-02-30\n"
    )
    assert not result.records
    by_column = {i.column: i.reason for i in result.issues}
    assert by_column == {
        "证件号码": "bad_id_number",
        "手机": "bad_phone",
        "地址": "bad_address",
        "身份": "bad_role",
        "入住日期": "bad_date",
    }
    assert {i.row for i in result.issues} == {2}
    assert all(i.name == "张三" for i in result.issues)


def test_missing_values() -> None:
    result = _validate("姓名,证件号码,地址,身份\n,,,\n张三,,3-2-1203,\n")
    reasons = {(i.row, i.column, i.reason) for i in result.issues}
    assert (3, "身份", "missing") in reasons
    assert (3, "证件号码", "missing") in reasons


def test_plain_id_is_not_kept() -> None:
    result = _validate(f"姓名,证件号码,地址,身份\n张三,{ID1},3-2-1203,业主\n")
    (record,) = result.records
    assert record.protected_id is not None
    assert record.protected_id.last4 == "002X"
    assert ID1 not in repr(record)


def test_duplicates_in_one_file() -> None:
    result = _validate(
        "姓名,证件号码,地址,身份,照片,外部编号\n"
        f"张三,{ID1},3-2-1203,业主,a.jpg,P1\n"
        f"张三,{ID1.lower()},3幢2单元1203,业主,b.jpg,P2\n"
        f"李四,{ID2},3-2-1204,租户,A.JPG,P3\n"
    )
    assert not result.records
    dup = sorted((i.row, i.column) for i in result.issues if i.reason == "duplicate")
    assert dup == [(2, "照片"), (2, "证件号码"), (3, "证件号码"), (4, "照片")]


def test_address_columns_must_agree() -> None:
    result = _validate(
        "姓名,外部编号,地址,楼栋,单元,房号,身份\n"
        "张三,P1,3-2-1203,3,2,1203,业主\n"
        "李四,P2,3-2-1203,3,2,1204,业主\n"
        "王五,P3,,3号楼,,1205,业主\n"
    )
    assert [r.unit.key for r in result.records] == ["3-2-1203", "3-1205"]
    (issue,) = result.issues
    assert (issue.row, issue.reason) == (3, "bad_address")
    assert "3-2-1204" in issue.message


def test_identities_of_failed_rows_are_kept() -> None:
    result = _validate(f"姓名,证件号码,地址,身份,外部编号\n张三,{ID1},火星,业主,P1\n")
    assert not result.records
    external_id, id_hash = result.identities[2]
    assert external_id == "P1"
    assert id_hash is not None
