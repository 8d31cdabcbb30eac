"""Standard addresses: variants of one unit collapse; ambiguous text is refused."""

from __future__ import annotations

import pytest

from registry.address import UnitAddress, address_from_parts, chinese_number, parse_address
from registry.errors import FieldError

SAME_UNIT = [
    "3幢2单元1203室",
    "三幢二单元1203室",
    "3号楼2单元1203",
    "3栋2单元1203号",
    "3栋2-1203",
    "３幢２单元１２０３",
    "3-2-1203",
    "3 - 2 - 1203",
    "3—2—1203",
    "3－2－1203室",
    "3#2单元1203",
    "3栋-2单元-1203室",
    "三幢二单元一二零三室",
    "幸福小区3幢2单元1203室",
    "幸福小区 3-2-1203",
    "3幢02单元1203",
]


@pytest.mark.parametrize("text", SAME_UNIT)
def test_variants_collapse_to_one_key(text: str) -> None:
    assert parse_address(text) == UnitAddress("3", "2", "1203")
    assert parse_address(text).key == "3-2-1203"


def test_all_variants_one_key() -> None:
    assert {parse_address(t).key for t in SAME_UNIT} == {"3-2-1203"}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("3幢1203", "3-1203"),
        ("3-1203", "3-1203"),
        ("A座1203", "A-1203"),
        ("a座1203室", "A-1203"),
        ("B2栋1单元101", "B2-1-101"),
        ("十二幢三单元1203", "12-3-1203"),
        ("二十一号楼1单元0301", "21-1-301"),
        ("3幢2单元1203A", "3-2-1203A"),
    ],
)
def test_other_units(text: str, key: str) -> None:
    assert parse_address(text).key == key


def test_entrance_matters() -> None:
    assert parse_address("3幢1203").key != parse_address("3幢1单元1203").key


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("3楼1203", "floor"),
        ("3楼2单元1203", "floor"),
        ("88号3幢2单元1203", "ambiguous"),
        ("二期3幢2单元1203", "ambiguous"),
        ("1203", "not a unit address"),
        ("3-2-12-03", "3-2-12-03"),
        ("3幢2单元", "not a unit address"),
        ("   ", "empty"),
    ],
)
def test_unparseable_or_ambiguous_is_an_error_with_the_text(text: str, fragment: str) -> None:
    with pytest.raises(FieldError, match=fragment) as info:
        parse_address(text)
    if text.strip():
        assert text in str(info.value)


def test_split_columns() -> None:
    assert address_from_parts("3号楼", "二单元", "1203室") == parse_address("3-2-1203")
    assert address_from_parts("３", None, "1203").key == "3-1203"
    with pytest.raises(FieldError):
        address_from_parts("3", "2", None)
    with pytest.raises(FieldError, match="room"):
        address_from_parts("3", "2", "12-03")


@pytest.mark.parametrize(
    ("text", "value"),
    [("十", "10"), ("十二", "12"), ("二十", "20"), ("一百零一", "101"), ("一二零三", "1203")],
)
def test_chinese_numbers(text: str, value: str) -> None:
    assert chinese_number(text) == value


def test_display_is_canonical() -> None:
    assert parse_address("3-2-1203").display == "3幢2单元1203室"
